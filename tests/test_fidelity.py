"""The performance axis on real data: the reference classifier, FD, PRDC, CAS and the record block.

Every test shares one temporary GENLAB_HOME, so each reference classifier trains once per module
and its cache never lands in the repo. Tests that need the mnist5k or sprites reference are slow.
"""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from genlab.data import load_dataset
from genlab.fidelity import (
    CODE_VERSION,
    bits_per_dim,
    classification_accuracy_score,
    extract_features,
    frechet_distance,
    performance_block,
    prdc,
    reference_accuracy,
    reference_classifier,
    reference_info,
    train_classifier,
)
from genlab.fidelity import reference as reference_module
from genlab.models.base import GenerativeModel

PERFORMANCE_FIELDS = set(
    "fd precision recall density coverage cas cas_real cas_labels nll_bpd n_generated n_real "
    "feature_space k".split()
)


@pytest.fixture(scope="module", autouse=True)
def fidelity_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("fidelity_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENLAB_HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def mnist():
    data = load_dataset("mnist5k")
    reference = reference_classifier(data)
    return (
        data,
        reference,
        {
            "test": extract_features(reference, data.test.x),
            "holdout": extract_features(reference, data.holdout.x),
        },
    )


def uniform_noise(n: int, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (radius 3·sigma) with replicated borders, as two torch convs."""
    r = max(1, math.ceil(3 * sigma))
    kernel = torch.exp(-(torch.arange(-r, r + 1, dtype=torch.float32) ** 2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), kernel.view(1, 1, -1, 1))


class HoldoutSampler(GenerativeModel):
    """A deterministic stand-in generator: 'samples' are holdout images picked by the generator."""

    def __init__(self, data, *, conditional=False, nll_nats=None):
        super().__init__(None, shape=data.shape, num_classes=data.num_classes)
        self.register_buffer("images", data.holdout.x.clone())
        self.register_buffer("labels", data.holdout.y.clone())
        self.conditional = conditional
        self.nll_nats = nll_nats
        self.has_likelihood = nll_nats is not None
        self.nll_calls = []

    def _rows(self, n, generator):
        return torch.randint(0, len(self.images), (n,), generator=generator)

    def sample(self, n, *, generator=None):
        return self.images[self._rows(n, generator)]

    def sample_with_labels(self, n, *, generator=None):
        rows = self._rows(n, generator)
        return self.images[rows], self.labels[rows]

    def nll(self, x, *, k=1, generator=None):
        self.nll_calls.append(k)
        return torch.full((len(x),), float(self.nll_nats))


# ---------------------------------------------------------------- metrics on known inputs
def test_frechet_distance_matches_the_scipy_formula_and_the_closed_form():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    g = torch.Generator().manual_seed(0)
    a = torch.randn(600, 16, generator=g, dtype=torch.float64) @ torch.randn(
        16, 16, generator=g, dtype=torch.float64
    )
    b = 1.5 * torch.randn(500, 16, generator=g, dtype=torch.float64) + 0.3
    mu_a, mu_b = a.mean(0).numpy(), b.mean(0).numpy()
    cov_a, cov_b = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
    expected = (
        ((mu_a - mu_b) ** 2).sum()
        + np.trace(cov_a + cov_b)
        - 2 * np.trace(scipy_linalg.sqrtm(cov_a @ cov_b).real)
    )
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-9)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    # Shifting every feature by 2 adds |shift|^2 = 16 * 4 and leaves the covariance alone.
    assert frechet_distance(a, a + 2.0) == pytest.approx(64.0, rel=1e-9)
    with pytest.raises(ValueError, match="same width"):
        frechet_distance(a, b[:, :8])


def test_prdc_matches_the_authors_package():
    prdc_package = pytest.importorskip("prdc")
    g = torch.Generator().manual_seed(1)
    real = torch.randn(400, 8, generator=g)
    fake = 1.3 * torch.randn(300, 8, generator=g) + 0.4
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints its sizes
        expected = prdc_package.compute_prdc(real.numpy(), fake.numpy(), nearest_k=5)
    ours = prdc(real, fake, k=5)
    assert set(ours) == {"precision", "recall", "density", "coverage"}
    for name, value in expected.items():
        assert ours[name] == pytest.approx(float(value), abs=1e-9), name
    assert 0.0 < ours["recall"] < 1.0 and ours["density"] > 0


def test_prdc_of_far_apart_sets_is_zero_and_rejects_a_large_k():
    g = torch.Generator().manual_seed(2)
    real = torch.randn(50, 4, generator=g)
    zeros = dict.fromkeys(("precision", "recall", "density", "coverage"), 0.0)
    assert prdc(real, real + 100.0) == zeros
    with pytest.raises(ValueError, match="k must be"):
        prdc(real, real[:5], k=5)


def test_bits_per_dim_converts_nats_per_image():
    nats = torch.tensor([784 * math.log(2), 3 * 784 * math.log(2)])
    assert bits_per_dim(nats, (1, 28, 28)) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="finite"):
        bits_per_dim(torch.tensor([1.0, float("nan")]), (1, 8, 8))


# ---------------------------------------------------------------- the reference classifier
def test_train_classifier_is_deterministic_and_leaves_the_global_rng_alone():
    data = load_dataset("digits")
    x, y = data.train.x[:256], data.train.y[:256]
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    first = train_classifier(x, y, num_classes=10, epochs=2, seed=7)
    assert torch.equal(torch.rand(3), before)
    second = train_classifier(x, y, num_classes=10, epochs=2, seed=7)
    other = train_classifier(x, y, num_classes=10, epochs=2, seed=8)
    assert not first.training
    assert torch.equal(extract_features(first, x), extract_features(second, x))
    assert not torch.equal(extract_features(first, x), extract_features(other, x))
    assert extract_features(first, x).shape == (256, first.feature_dim)
    with pytest.raises(ValueError, match="labels must lie"):
        train_classifier(x, y + 5, num_classes=10, epochs=1, seed=0)


def test_digits_reference_is_accurate_and_cached_on_disk(fidelity_home, monkeypatch):
    data = load_dataset("digits")
    first = reference_classifier(data)
    assert reference_accuracy(data) >= 0.97
    features = extract_features(first, data.test.x)
    files = sorted(p.suffix for p in (fidelity_home / "cache" / "reference").glob("digits-*"))
    assert files == [".json", ".safetensors"]
    assert reference_info(data)["code_version"] == CODE_VERSION

    def no_training(*args, **kwargs):
        raise AssertionError("the cached reference classifier was trained again")

    reference_module.clear_memo()  # forget the in-process copy; the files stay
    monkeypatch.setattr(reference_module, "train_classifier", no_training)
    second = reference_classifier(data)
    assert second is not first
    assert reference_classifier(data) is second  # memoised again
    assert torch.equal(extract_features(second, data.test.x), features)


def test_a_damaged_cache_is_retrained_to_the_same_weights(fidelity_home):
    data = load_dataset("digits")
    features = extract_features(reference_classifier(data), data.test.x)
    (weights,) = (fidelity_home / "cache" / "reference").glob("digits-*.safetensors")
    weights.write_bytes(b"not a safetensors file")
    reference_module.clear_memo()
    assert torch.equal(extract_features(reference_classifier(data), data.test.x), features)


@pytest.mark.slow
@pytest.mark.parametrize("name, floor", [("mnist5k", 0.97), ("sprites", 0.99)])
def test_reference_accuracy_on_the_larger_datasets(name, floor):
    data = load_dataset(name)
    assert reference_accuracy(data) >= floor


# ---------------------------------------------------------------- known answers on mnist5k
@pytest.mark.slow
def test_fd_is_small_for_real_data_and_grows_with_damage(mnist):
    data, reference, feats = mnist
    real = frechet_distance(feats["test"], feats["holdout"])
    noise = frechet_distance(
        feats["test"], extract_features(reference, uniform_noise(1000, data.shape))
    )
    assert real < 5.0
    assert noise > 20 * real
    blurred = [
        frechet_distance(
            feats["test"], extract_features(reference, gaussian_blur(data.holdout.x, sigma))
        )
        for sigma in (0.5, 1.0, 2.0)
    ]
    assert real < blurred[0] < blurred[1] < blurred[2]


@pytest.mark.slow
def test_prdc_separates_fidelity_from_diversity(mnist):
    data, reference, feats = mnist
    real = prdc(feats["test"], feats["holdout"])
    assert real["precision"] >= 0.8 and real["recall"] >= 0.8
    low_digits = extract_features(reference, data.holdout.x[data.holdout.y < 5])
    half = prdc(feats["test"], low_digits)  # faithful images, but half the classes are missing
    assert half["precision"] >= 0.8
    assert half["recall"] < real["recall"] - 0.2
    assert half["coverage"] < real["coverage"] - 0.2
    noise = prdc(feats["test"], extract_features(reference, uniform_noise(1000, data.shape)))
    assert noise["precision"] <= 0.1


@pytest.mark.slow
def test_cas_of_real_images_is_high_and_of_noise_is_chance(mnist):
    data, _, _ = mnist
    test_x, test_y = data.test.x, data.test.y
    real = classification_accuracy_score(
        data.train.x, data.train.y, test_x, test_y, num_classes=10, epochs=8, seed=0
    )
    assert real >= 0.95
    labels = torch.randint(0, 10, (1000,), generator=torch.Generator().manual_seed(1))
    noise = classification_accuracy_score(
        uniform_noise(1000, data.shape), labels, test_x, test_y, num_classes=10, epochs=3, seed=0
    )
    assert 0.03 <= noise <= 0.2


# ---------------------------------------------------------------- the record block
def test_performance_block_is_complete_and_deterministic():
    data = load_dataset("digits")
    model = HoldoutSampler(data)
    first = performance_block(model, data, n_generated=300, seed=3, cas_epochs=20)
    second = performance_block(model, data, n_generated=300, seed=3, cas_epochs=20)
    assert set(first) == PERFORMANCE_FIELDS
    for name in PERFORMANCE_FIELDS:
        if isinstance(first[name], float):
            assert first[name] == pytest.approx(second[name], abs=1e-6), name
        else:
            assert first[name] == second[name], name
    assert first["nll_bpd"] is None
    assert first["cas_labels"] == "reference-classifier"
    assert first["feature_space"] == f"reference-cnn-v{CODE_VERSION}" and first["k"] == 5
    assert (first["n_generated"], first["n_real"]) == (300, len(data.test))
    assert first["cas_real"] == reference_accuracy(data)
    # Real holdout images as "samples": close to the test split, and labelled well.
    assert first["fd"] < 30 and first["precision"] >= 0.8 and first["cas"] >= 0.8


def test_performance_block_uses_model_labels_and_likelihood():
    data = load_dataset("digits")
    model = HoldoutSampler(data, conditional=True, nll_nats=64 * math.log(2) * 1.25)
    model.train()
    block = performance_block(model, data, n_generated=200, seed=0, cas_epochs=4, nll_k=7)
    assert block["cas_labels"] == "model"
    assert block["nll_bpd"] == pytest.approx(1.25)
    assert model.nll_calls == [7]  # the 359 test images in one batch, with the k asked for
    assert model.training  # the caller's mode is restored
    with pytest.raises(ValueError, match="n_generated"):
        performance_block(model, data, n_generated=5)
