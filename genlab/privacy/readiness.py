"""Is a model ready for DP-SGD? Opacus's validator, and per-sample gradients checked by hand."""

from __future__ import annotations

import torch
from opacus.grad_sample import GradSampleModule
from opacus.validators import ModuleValidator
from torch import Tensor

from genlab.models.base import GenerativeModel


def validate_private_modules(model: GenerativeModel) -> list[str]:
    """Opacus's objections to the model's private modules, one line each (empty when ready)."""
    errors = ModuleValidator.validate(model.private_modules(), strict=False)
    return [f"{type(err).__name__}: {err}" for err in errors]


def _private_params(model: GenerativeModel) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.private_modules().named_parameters() if p.requires_grad}


def per_sample_gradients(
    model: GenerativeModel, x: Tensor, y: Tensor | None = None, *, mode: str = "hooks"
) -> dict[str, Tensor]:
    """Per-sample gradients of :meth:`private_loss` from Opacus's grad samplers.

    Returns:
        ``{parameter name: tensor (B, *param.shape)}`` over the private modules' parameters.
    """
    private = model.private_modules()
    wrapped = GradSampleModule(
        private, batch_first=True, loss_reduction="sum", force_functorch=(mode == "functorch")
    )
    try:
        model.zero_grad(set_to_none=True)
        model.private_loss(x, y).sum().backward()
        return {n: p.grad_sample.detach().clone() for n, p in _private_params(model).items()}
    finally:
        wrapped._close()
        model.zero_grad(set_to_none=True)
        for p in private.parameters():
            p.grad_sample = None


def per_sample_gradients_by_loop(
    model: GenerativeModel, x: Tensor, y: Tensor | None = None
) -> dict[str, Tensor]:
    """The same gradients computed one sample at a time: the reference to check against."""
    params = _private_params(model)
    rows: dict[str, list[Tensor]] = {n: [] for n in params}
    for i in range(len(x)):
        model.zero_grad(set_to_none=True)
        model.private_loss(x[i : i + 1], None if y is None else y[i : i + 1]).sum().backward()
        for n, p in params.items():
            rows[n].append(torch.zeros_like(p) if p.grad is None else p.grad.detach().clone())
    model.zero_grad(set_to_none=True)
    return {n: torch.stack(r) for n, r in rows.items()}
