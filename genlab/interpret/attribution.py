"""Explaining a model: ``explain(model, x, method=..., target=...)`` and ``attribute``.

The target is parsed for the model (:mod:`genlab.interpret.targets`), then the method runs
(:mod:`genlab.interpret.methods`). Every method explains a fresh copy of the model in eval mode,
never the model it was given: that one may be cached and shared by pages, or carry Opacus's
per-sample-gradient hooks. Randomness (GradientShap's baselines, SmoothGrad's noise) is drawn
from seeded generators, so the same call gives the same attributions.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from genlab.errors import ConfigError
from genlab.interpret.methods import METHODS, Method, method_entry
from genlab.interpret.targets import Target, parse_target
from genlab.models.base import GenerativeModel
from genlab.threads import one_cpu_thread

__all__ = [
    "METHODS",
    "Explanation",
    "TargetModule",
    "attribute",
    "example_inputs",
    "explain",
    "explainable_copy",
    "method_entry",
    "one_cpu_thread",
    "seeded",
]


class TargetModule(nn.Module):
    """A target as an ``nn.Module`` (DeepLift hooks the model's layers, so it needs one)."""

    def __init__(self, model: GenerativeModel, target: Target):
        super().__init__()
        self.model = model
        self.target = target

    def forward(self, inputs: Tensor, *context: Tensor) -> Tensor:
        return self.target.forward(inputs, *context)


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's and numpy's global generators for a while, then restore both.

    Captum draws from both (GradientShap picks its baselines with ``np.random``), so both are
    seeded for the attributions to repeat; restoring them leaves the caller's streams as they were.
    """
    state = np.random.get_state()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            np.random.set_state(state)


def explainable_copy(model: GenerativeModel) -> GenerativeModel:
    """A plain copy of ``model`` in eval mode, with frozen weights and no hooks.

    The copy is rebuilt from the config and the weights, so nothing attached to the original
    (Opacus's hooks and per-sample gradients, a page's cache) comes along. A model not built from
    a config is deep-copied instead and its hooks removed.
    """
    inner = getattr(model, "_module", model)  # Opacus's GradSampleModule wraps it here
    param = next(inner.parameters())
    with torch.random.fork_rng(devices=[]):  # building a model draws its (discarded) init
        try:
            clone = type(inner)(inner.config, shape=inner.shape, num_classes=inner.num_classes)
            clone.load_state_dict(inner.state_dict())
        except (TypeError, AttributeError, RuntimeError):
            clone = copy.deepcopy(inner)
            for m in clone.modules():
                for hooks in (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks):
                    hooks.clear()
    return clone.to(param.device, param.dtype).eval().requires_grad_(False)


@dataclass(frozen=True)
class Explanation:
    """Attributions of a batch, with what is needed to show and check them.

    Attributes:
        method, target: the method name and the canonical target spec.
        description: the target in words.
        space: ``pixels`` or ``latent``.
        inputs: what was attributed: the images, or latent codes (B, latent_dim).
        attributions: shaped like ``inputs``.
        images: what to show: the images, or the codes decoded.
        target_values: f(inputs), shape (B,).
        baseline_values: f(0), the target at the zero baseline, shape (B,).
        delta: Integrated Gradients' convergence delta per sample (None for other methods).
        region: the output region of a decoder target, ``(r0, r1, c0, c1)``.
    """

    method: str
    target: str
    description: str
    space: str
    inputs: Tensor
    attributions: Tensor
    images: Tensor
    target_values: Tensor
    baseline_values: Tensor
    delta: Tensor | None = None
    region: tuple[int, int, int, int] | None = None


def explain(
    model: GenerativeModel,
    x: Tensor,
    *,
    method: str = "ig",
    target: str = "default",
    seed: int = 0,
    **options,
) -> Explanation:
    """Attribute ``target`` of ``model`` on ``x`` with ``method``.

    Args:
        model: any registered model (it is not modified; a copy is explained).
        x: images (B, C, H, W) in [0, 1]; for latent-space targets (``decoder:R``), images are
            encoded first, and models without an encoder (the GAN) take codes (B, latent_dim).
        method: one of :data:`METHODS`.
        target: a target spec (see :mod:`genlab.interpret.targets`).
        seed: seeds the methods that draw noise.
        **options: the method's own settings, e.g. ``n_steps`` for ``ig``.

    Raises:
        ConfigError: an unknown method, option or target, or a target the model lacks.
    """
    algo = method_entry(method)
    bad = sorted(set(options) - set(algo.options()))
    if bad:
        takes = ", ".join(algo.options()) or "no options"
        raise ConfigError(f"{method} has no option {bad[0]!r}; it takes {takes}")
    with one_cpu_thread(next(model.parameters()).device):
        return _explain(model, x, algo, target, seed, options)


def _explain(model, x, algo: Method, target: str, seed: int, options: dict) -> Explanation:
    m = explainable_copy(model)
    t = parse_target(m, target)
    inputs, context = t.prepare(x.detach())
    f = TargetModule(m, t)
    with seeded(seed, inputs.device), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Captum's notes on hooks and requires_grad
        try:
            attr, delta = algo.run(f, inputs, context, **options)
        except (RuntimeError, AssertionError) as err:
            if algo.name != "deeplift":
                raise
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(
                f"deeplift cannot explain the {m.name}: Captum's DeepLift rules fail on its "
                f"layers ({first}); use ig instead"
            ) from None
    with torch.no_grad():
        values = t.forward(inputs, *context)
        base = t.forward(torch.zeros_like(inputs), *context)
        images = inputs if t.space == "pixels" else m.decode(inputs, *context)
    return Explanation(
        method=algo.name,
        target=t.spec,
        description=t.description,
        space=t.space,
        inputs=inputs.detach(),
        attributions=attr.detach(),
        images=images.detach(),
        target_values=values,
        baseline_values=base,
        delta=None if delta is None else delta.detach(),
        region=t.region,
    )


def attribute(
    model: GenerativeModel,
    x: Tensor,
    *,
    method: str = "ig",
    target: str = "default",
    seed: int = 0,
    **options,
) -> Tensor:
    """Attributions of ``target`` on ``x``, shaped like ``x`` (or like z for latent targets).

    The arguments are those of :func:`explain`.
    """
    return explain(model, x, method=method, target=target, seed=seed, **options).attributions


def example_inputs(
    model: GenerativeModel, data, *, target: str = "default", n: int = 16, seed: int = 0
) -> Tensor:
    """What to explain by default: ``n`` test images (a seeded choice), or, for a latent target
    on a model without an encoder (the GAN's ``generator:R``), ``n`` seeded prior codes."""
    from genlab.interpret.latent import has_encoder

    t = parse_target(model, target)
    if t.space == "latent" and not has_encoder(model):
        gen = torch.Generator().manual_seed(seed)
        return torch.randn(n, model.latent_dim, generator=gen)
    test = data.test
    rows = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))[:n]
    return test.x[rows.sort().values]
