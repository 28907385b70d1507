"""Sample-quality metrics on feature matrices and images: FD, PRDC, CAS and bits per dimension.

FD and PRDC take features from the reference classifier (:mod:`genlab.fidelity.reference`), not
from Inception: their values cannot be compared with published FID / PRDC numbers. Every function
here is deterministic: the same inputs (and seed) always give the same number.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from genlab.fidelity.reference import accuracy, train_classifier


def frechet_distance(real_feats: Tensor, fake_feats: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, d) and (M, d).

    ``||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^{1/2})``, with unbiased covariances, as FID
    computes it, but in the reference classifier's features: it cannot be compared with published
    Inception FID values.

    Why not torchmetrics: its ``FrechetInceptionDistance`` is a stateful metric fed with images
    (here we have features), and its feature-level routine is private. This is the same formula in
    float64, written in the symmetric form ``Tr((S_r^{1/2} S_f S_r^{1/2})^{1/2})``: both square
    roots come from ``eigh`` of symmetric PSD matrices, so there is no complex round-off to
    discard, only tiny negative eigenvalues, which are clamped to 0.

    Raises:
        ValueError: Fewer than 2 rows, different widths, or non-finite values.
    """
    real, fake = _check_pair(real_feats, fake_feats, min_rows=2)
    mu_r, mu_f = real.mean(0), fake.mean(0)
    d = real.shape[1]
    cov_r, cov_f = torch.cov(real.T).reshape(d, d), torch.cov(fake.T).reshape(d, d)  # ddof = 1
    root_r = _sqrt_psd(cov_r)
    middle = root_r @ cov_f @ root_r
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    fd = (mu_r - mu_f).square().sum() + cov_r.trace() + cov_f.trace() - 2 * trace_sqrt
    return max(float(fd), 0.0)


def prdc(real_feats: Tensor, fake_feats: Tensor, k: int = 5) -> dict[str, float]:
    """Precision, recall, density and coverage (Naeem et al. 2020) of fake against real features.

    A point's k-NN ball has the radius of its k-th nearest neighbour within its own set.
    Precision: share of fakes inside some real ball. Recall: share of reals inside some fake ball.
    Density: real balls holding each fake, divided by k, averaged (can exceed 1). Coverage: share
    of real balls holding at least one fake.

    Written here rather than calling the authors' ``prdc.compute_prdc``, which prints to stdout:
    silencing it means swapping ``sys.stdout`` process-wide, which is not safe while other threads
    run (the dashboard). The definitions (strict ``<``, the k-th neighbour excluding the point
    itself) match that package; the tests compare the two.

    Raises:
        ValueError: ``k`` < 1 or not smaller than either set, different widths, non-finite values.
    """
    real, fake = _check_pair(real_feats, fake_feats, min_rows=2)
    if not 1 <= k < min(len(real), len(fake)):
        raise ValueError(f"k must be in [1, {min(len(real), len(fake))}) (got {k})")
    radius_real = _kth_neighbour_distance(real, k)
    radius_fake = _kth_neighbour_distance(fake, k)
    dist = _distances(real, fake)  # (N real, M fake)
    inside_real = dist < radius_real[:, None]  # fake j lies in real i's ball
    return {
        "precision": float(inside_real.any(0).double().mean()),
        "recall": float((dist < radius_fake[None, :]).any(1).double().mean()),
        "density": float(inside_real.sum(0).double().mean() / k),
        "coverage": float((dist.min(1).values < radius_real).double().mean()),
    }


def classification_accuracy_score(
    gen_x: Tensor,
    gen_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    num_classes: int,
    epochs: int,
    seed: int,
) -> float:
    """CAS: train a fresh classifier (the reference recipe) on generated images only, then
    return its accuracy on the real test split.

    Args:
        gen_x: Generated images (N, C, H, W) in [0, 1].
        gen_y: Their labels: from conditional generation or from the reference classifier.
        test_x: Real test images.
        test_y: Real test labels.
        num_classes: Number of classes of the dataset.
        epochs: Training epochs.
        seed: Fixes the classifier's training.
    """
    model = train_classifier(gen_x, gen_y, num_classes=num_classes, epochs=epochs, seed=seed)
    return accuracy(model, test_x, test_y)


def bits_per_dim(nll_nats: Tensor, shape: tuple[int, ...]) -> float:
    """Mean negative log-likelihood in nats per image, as bits per dimension.

    ``mean(nll) / (C·H·W · ln 2)``. For models with a Bernoulli likelihood on grey levels (the VAE)
    this is not the discretised 256-level likelihood of published bits/dim figures.

    Raises:
        ValueError: An empty or non-finite ``nll_nats``.
    """
    nll = torch.as_tensor(nll_nats).detach().to("cpu", torch.float64).flatten()
    if len(nll) == 0 or not bool(torch.isfinite(nll).all()):
        raise ValueError("nll_nats must be a non-empty tensor of finite values")
    return float(nll.mean()) / (math.prod(shape) * math.log(2))


def _check_pair(real: Tensor, fake: Tensor, *, min_rows: int) -> tuple[Tensor, Tensor]:
    real, fake = (torch.as_tensor(a).detach().to("cpu", torch.float64) for a in (real, fake))
    if real.dim() != 2 or fake.dim() != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"need two feature matrices (N, d) of the same width (got "
            f"{tuple(real.shape)} and {tuple(fake.shape)})"
        )
    if min(len(real), len(fake)) < min_rows:
        raise ValueError(
            f"need at least {min_rows} rows in each feature set (got {len(real)} and {len(fake)})"
        )
    if not (bool(torch.isfinite(real).all()) and bool(torch.isfinite(fake).all())):
        raise ValueError("features contain NaN or infinite values")
    return real, fake


def _sqrt_psd(matrix: Tensor) -> Tensor:
    """Symmetric square root of a symmetric positive semi-definite matrix."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def _distances(a: Tensor, b: Tensor) -> Tensor:
    # The direct difference, not the |a|² + |b|² - 2ab trick: exact zeros for equal rows.
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def _kth_neighbour_distance(x: Tensor, k: int) -> Tensor:
    """Distance from each row to its k-th nearest other row (the row itself is the 0th)."""
    return torch.kthvalue(_distances(x, x), k + 1, dim=1).values
