"""Attribution drift: does training with differential privacy change what a model looks at?

Two runs of the same model family and seed, one with DP and one without, explain the same images;
their attribution maps are compared image by image with Spearman's rank correlation.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr
from torch import Tensor

from genlab.errors import ConfigError
from genlab.interpret.attribution import attribute
from genlab.models.base import GenerativeModel


def rank_correlations(a: Tensor, b: Tensor) -> np.ndarray:
    """Spearman's rho between maps ``a[i]`` and ``b[i]``, per image: float array (B,).

    Only positions where at least one map is non-zero count: a black pixel gets exactly zero
    from Integrated Gradients (its value equals the baseline) in both models, and thousands of
    such shared ties would say the models agree when they merely see the same image. An image
    with fewer than three such positions, or a constant map, gives NaN.
    """
    if a.shape != b.shape:
        raise ConfigError(
            f"attribution maps differ in shape: {tuple(a.shape)} and {tuple(b.shape)}"
        )
    fa, fb = (
        a.detach().flatten(1).double().cpu().numpy(),
        b.detach().flatten(1).double().cpu().numpy(),
    )
    out = np.full(len(fa), np.nan)
    for i, (u, v) in enumerate(zip(fa, fb)):
        keep = (u != 0) | (v != 0)
        if keep.sum() >= 3 and np.ptp(u[keep]) > 0 and np.ptp(v[keep]) > 0:
            out[i] = spearmanr(u[keep], v[keep]).statistic
    return out


def attribution_drift(
    model_a: GenerativeModel,
    model_b: GenerativeModel,
    x: Tensor,
    *,
    method: str = "ig",
    target: str = "default",
    seed: int = 0,
    **options,
) -> float:
    """Mean Spearman rank correlation between the two models' attributions on images ``x``.

    1 means both models rank the pixels (or latent dims) the same way, 0 that the rankings are
    unrelated, and -1 that they are reversed. Images whose correlation is undefined are
    skipped; NaN if none is left.

    Args:
        model_a, model_b: two models of the same input shape (e.g. without and with DP).
        x: the images both explain.
        method, target, seed, **options: as for :func:`genlab.interpret.explain`.

    Raises:
        ConfigError: the models take different inputs, or a bad method or target.
    """
    if tuple(model_a.shape) != tuple(model_b.shape):
        raise ConfigError(
            f"the two models take different images ({model_a.shape} and {model_b.shape}); "
            "compare runs on the same dataset"
        )
    a = attribute(model_a, x, method=method, target=target, seed=seed, **options)
    b = attribute(model_b, x, method=method, target=target, seed=seed, **options)
    rho = rank_correlations(a, b)
    return float(np.nanmean(rho)) if np.isfinite(rho).any() else float("nan")
