"""Latent traversals and interpolation for every model with a latent space."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from genlab.errors import ConfigError
from genlab.models.base import GenerativeModel


def _require_latent(model: GenerativeModel) -> None:
    if not model.has_latent:
        raise ConfigError(f"model {model.name!r} has no latent space to traverse")


@torch.no_grad()
def traverse(
    model: GenerativeModel, *, base: Tensor, dims: Sequence[int], values: Sequence[float]
) -> Tensor:
    """Decode ``base`` with one latent dim at a time swept over ``values``.

    Args:
        model: a latent model (``has_latent``).
        base: the latent code to start from, shape (latent_dim,).
        dims: which dims to sweep, one output row each.
        values: the values each swept dim takes, one output column each.

    Returns:
        Images (len(dims) * len(values), C, H, W), row-major: row i sweeps ``dims[i]``.
    """
    _require_latent(model)
    bad = [d for d in dims if not 0 <= d < model.latent_dim]
    if bad:
        raise ConfigError(
            f"latent dim {bad[0]} is out of range; this model has dims 0..{model.latent_dim - 1}"
        )
    vals = torch.as_tensor(list(values), dtype=torch.float32)
    z = base.to(torch.float32).cpu().repeat(len(dims) * len(vals), 1)
    for row, d in enumerate(dims):
        z[row * len(vals) : (row + 1) * len(vals), d] = vals
    return model.decode(z.to(model.device))


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation between rows a and b, which suits Gaussian latents."""
    a_n, b_n = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.arccos((a_n * b_n).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


@torch.no_grad()
def interpolate(
    model: GenerativeModel, z0: Tensor, z1: Tensor, *, steps: int = 8, spherical: bool = False
) -> Tensor:
    """Decode ``steps`` codes on the line (or great circle) from ``z0`` to ``z1``."""
    _require_latent(model)
    if steps < 2:
        raise ConfigError(f"interpolation needs at least 2 steps (got {steps})")
    t = torch.linspace(0, 1, steps).unsqueeze(1)
    z0, z1 = z0.reshape(1, -1).float().cpu(), z1.reshape(1, -1).float().cpu()
    z = slerp(z0, z1, t) if spherical else (1 - t) * z0 + t * z1
    return model.decode(z.to(model.device))
