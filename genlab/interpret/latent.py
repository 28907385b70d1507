"""Latent tools for every model with a latent space: traversals, interpolation (linear and
spherical) and a 2-D latent map (a decoded grid, or a PCA scatter of the encoded test set).

These return arrays; drawing them is the pages' job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from genlab.errors import ConfigError
from genlab.models.base import GenerativeModel, LatentLevel, LatentModel


def _require_latent(model: GenerativeModel) -> None:
    if not model.has_latent:
        raise ConfigError(f"model {model.name!r} has no latent space to traverse")


def has_encoder(model: GenerativeModel) -> bool:
    """Whether a latent model maps images to codes (it overrides :meth:`LatentModel.encode`)."""
    return bool(model.has_latent) and type(model).encode is not LatentModel.encode


def latent_levels(model: GenerativeModel) -> list[LatentLevel]:
    """The model's latent levels (one for most families, two for the HVAE), checked to cover
    dims 0..latent_dim-1 in order without gaps (each featuring only its own dims); empty for a
    model without a latent.

    Raises:
        ConfigError: the levels a model declares do not tile its code.
    """
    if not model.has_latent:
        return []
    levels = list(model.latent_levels())
    stops = [0, *(level.stop for level in levels)]
    if [level.start for level in levels] != stops[:-1] or stops[-1] != model.latent_dim or any(
        level.stop <= level.start or not set(level.featured) <= set(level.dims)
        for level in levels
    ):
        raise ConfigError(
            f"the {model.name}'s latent levels {[(lv.start, lv.stop) for lv in levels]} do not "
            f"cover its {model.latent_dim} latent dims in order"
        )
    return levels


def dim_labels(model: GenerativeModel, dims: Sequence[int]) -> list[str]:
    """The label of each latent dim, by its level: ``z3`` for a one-level model, ``z1_2`` for
    the HVAE's third bottom dim."""
    levels = latent_levels(model)
    return [next(lv.label(d) for lv in levels if d in lv.dims) for d in dims]


@torch.no_grad()
def encode_all(
    model: GenerativeModel, x: Tensor, *, labels: Tensor | None = None, batch_size: int = 256
) -> np.ndarray:
    """Posterior means of images ``x`` (N, C, H, W), in batches: float64 array (N, latent_dim).

    Args:
        labels: for a class-conditional model, the classes to encode with, q(z | x, y);
            without them it encodes with its own guess of each image's class.

    Raises:
        ConfigError: the model has no encoder (the GAN, the PixelCNN, the mixture).
    """
    if not has_encoder(model):
        raise ConfigError(f"the {model.name} has no encoder, so images have no latent codes")
    given = () if labels is None or not model.conditional else (labels,)
    parts = [
        model.encode(
            x[i : i + batch_size].to(model.device),
            *(y[i : i + batch_size].to(model.device) for y in given),
        )
        .double()
        .cpu()
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(parts).numpy() if parts else np.zeros((0, model.latent_dim))


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


@dataclass(frozen=True)
class LatentMap:
    """A 2-D picture of a latent space.

    ``kind`` is ``"grid"`` (latent_dim == 2: ``images`` decoded at the ``points`` of a
    ``grid`` x ``grid`` lattice, row-major, first coordinate along the rows) or ``"pca"``
    (``points`` are the first two principal components of the encoded test images, with their
    ``labels`` and the share of variance each component explains).
    """

    kind: str
    points: np.ndarray  # (N, 2)
    labels: np.ndarray | None = None  # (N,) class labels, pca only
    images: np.ndarray | None = None  # (grid * grid, C, H, W) in [0, 1], grid only
    grid: int = 0
    explained_variance: np.ndarray | None = None  # (2,), pca only


@torch.no_grad()
def latent_map(
    model: GenerativeModel, data, *, n: int = 1000, grid: int = 12, seed: int = 0
) -> LatentMap:
    """A 2-D latent map: a decoded grid when ``latent_dim`` is 2, else a PCA scatter.

    The grid spans the 5th to 95th percentile of N(0, 1) on each axis, the prior's bulk (as in
    Kingma & Welling's manifold figures). The scatter encodes up to ``n`` test images (a seeded
    choice) to their posterior means.

    Args:
        model: a latent model; the scatter needs an encoder (the VAE, the CVAE).
        data: the run's :class:`~genlab.data.DataSplits`.
        n: at most this many test images in the scatter.
        grid: points per side of the decoded grid.
        seed: which test images the scatter uses.

    Raises:
        ConfigError: no latent space, or a GAN whose latent is not 2-D (it has no encoder).
    """
    from scipy.stats import norm

    _require_latent(model)
    if model.latent_dim == 2:
        axis = norm.ppf(np.linspace(0.05, 0.95, grid))
        rows, cols = np.meshgrid(axis, axis, indexing="ij")
        points = np.stack([rows.ravel(), cols.ravel()], axis=1)
        z = torch.as_tensor(points, dtype=torch.float32, device=model.device)
        images = model.decode(z).float().cpu().numpy()
        return LatentMap("grid", points, images=images, grid=grid)
    if not has_encoder(model):
        raise ConfigError(
            f"the {model.name} has no encoder, so its {model.latent_dim}-D latent cannot be "
            "mapped from data; a decoded map needs latent_dim=2"
        )
    from sklearn.decomposition import PCA

    test = data.test
    rows = np.random.default_rng(seed).permutation(len(test))[:n]
    rows.sort()
    codes = encode_all(model, test.x[rows])
    if codes.shape[1] == 1:  # one dim: the scatter is a line
        return LatentMap(
            "pca",
            np.c_[codes, np.zeros(len(codes))],
            test.y[rows].numpy(),
            explained_variance=np.array([1.0, 0.0]),
        )
    pca = PCA(n_components=2, random_state=seed).fit(codes)
    return LatentMap(
        "pca",
        pca.transform(codes),
        test.y[rows].numpy(),
        explained_variance=pca.explained_variance_ratio_,
    )
