"""The mutual information gap (MIG; Chen et al. 2018, "Isolating Sources of Disentanglement").

For each ground-truth factor v_k, MIG takes the latent dim that holds the most information about
it and asks how much more that is than the runner-up holds:

    MIG = mean_k [ I(z_(1); v_k) - I(z_(2); v_k) ] / H(v_k)

where z_(1), z_(2) are the dims with the largest and second largest mutual information with v_k.
1 means each factor lives in exactly one dim; 0 means it is spread evenly (or not there at all).

Mutual information is estimated as in disentanglement_lib: each latent dim (the posterior mean)
is cut into ``bins`` equal-width bins over its range, then scikit-learn's ``mutual_info_score``
compares the bin indices with the factor's levels. The factors are the sprites' known ones
(shape, scale, rotation, x, y), or the class label on datasets without factors. The codes are
the posterior means of the test split; a class-conditional model (the CVAE) encodes q(z | x, y)
with the test labels, as it was trained, so its z holds the style beside the given class.

Models without an encoder get no MIG: the GAN has a latent, but no map from an image to its
code; inverting the generator by optimisation is slow and has no unique answer, so a number
from it would measure the inversion as much as the model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import mutual_info_score

from genlab.interpret.latent import encode_all, has_encoder
from genlab.models.base import GenerativeModel

BINS = 20


def discretise(latents: np.ndarray, *, bins: int = BINS) -> np.ndarray:
    """Each column cut into ``bins`` equal-width bins over its own range: int array (N, D)."""
    out = np.zeros(latents.shape, dtype=np.int64)
    for j in range(latents.shape[1]):
        edges = np.histogram_bin_edges(latents[:, j], bins=bins)
        out[:, j] = np.digitize(latents[:, j], edges[1:-1])
    return out


def mig_per_factor(latents: np.ndarray, factors: np.ndarray, *, bins: int = BINS) -> np.ndarray:
    """The normalised gap of each factor: float array (F,), NaN for a constant factor.

    Args:
        latents: (N, D) latent codes (posterior means).
        factors: (N, F) or (N,) integer factor levels.
        bins: equal-width bins per latent dim.
    """
    z = discretise(np.asarray(latents, dtype=np.float64).reshape(len(latents), -1), bins=bins)
    v = np.asarray(factors).reshape(len(factors), -1)
    gaps = np.full(v.shape[1], np.nan)
    for k in range(v.shape[1]):
        entropy = mutual_info_score(v[:, k], v[:, k])  # H(v_k) in nats
        if entropy <= 0:
            continue
        mi = np.sort([mutual_info_score(v[:, k], z[:, j]) for j in range(z.shape[1])])[::-1]
        runner_up = mi[1] if len(mi) > 1 else 0.0
        gaps[k] = (mi[0] - runner_up) / entropy
    return gaps


def mig(latents: np.ndarray, factors: np.ndarray, *, bins: int = BINS) -> float:
    """MIG in [0, 1]: the mean of :func:`mig_per_factor` over the non-constant factors
    (NaN when every factor is constant)."""
    gaps = mig_per_factor(latents, factors, bins=bins)
    return float(np.nanmean(gaps)) if np.isfinite(gaps).any() else float("nan")


def model_mig(model: GenerativeModel, data, *, bins: int = BINS) -> dict[str, Any]:
    """MIG of a model's encoder on the test split, against the dataset's factors or labels.

    Returns:
        ``{"mig", "mig_factors", "mig_n"}``; ``mig`` is None for a model without an encoder or
        a test split whose factors are all constant.
    """
    test = data.test
    if test.factors is not None and data.factor_names:
        factors, names = test.factors.numpy(), list(data.factor_names)
    else:
        factors, names = test.y.numpy(), ["label"]
    if not has_encoder(model):
        return {"mig": None, "mig_factors": names, "mig_n": 0}
    value = mig(encode_all(model, test.x, labels=test.y), factors, bins=bins)
    return {
        "mig": float(np.clip(value, 0.0, 1.0)) if np.isfinite(value) else None,
        "mig_factors": names,
        "mig_n": len(test),
    }
