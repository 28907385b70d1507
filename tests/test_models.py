"""The model contract, parametrized over the registry: every family must pass these."""

from __future__ import annotations

import pytest
import torch

from genlab.checkpoint import load_weights, save_weights
from genlab.data import load_dataset
from genlab.errors import DataError
from genlab.interpret.latent import interpolate, traverse
from genlab.models import MODELS, build, family
from genlab.models.base import GenerativeModel
from genlab.train import seed_everything


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


def _build(name, data, seed=0):
    seed_everything(seed)
    return build(name, shape=data.shape, num_classes=data.num_classes)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_loss_is_per_sample_finite_and_falls(name, digits):
    model = _build(name, digits)
    x, y = digits.train.x[:64], digits.train.y[:64]
    opts = model.configure_optimizers(2e-3)
    with torch.no_grad():
        first = model.loss(x, y)
    assert first.shape == (64,)
    assert torch.isfinite(first).all()
    losses = [float(model.train_step(x, y, opts)["loss"]) for _ in range(25)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5


@pytest.mark.parametrize("name", sorted(MODELS))
def test_sample_shape_range_and_seed(name, digits):
    model = _build(name, digits).eval()
    a = model.sample(10, generator=torch.Generator().manual_seed(1))
    b = model.sample(10, generator=torch.Generator().manual_seed(1))
    c = model.sample(10, generator=torch.Generator().manual_seed(2))
    assert a.shape == (10, *digits.shape)
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_save_and_reload_give_identical_samples(name, digits, tmp_path):
    model = _build(name, digits, seed=3).eval()
    path = save_weights(model, tmp_path / "w.safetensors")
    fresh = _build(name, digits, seed=99).eval()
    gen = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    assert not torch.equal(fresh.sample(8, generator=gen()), model.sample(8, generator=gen()))
    load_weights(fresh, path)
    assert torch.equal(fresh.sample(8, generator=gen()), model.sample(8, generator=gen()))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_score_and_explain_target_are_one_per_sample(name, digits):
    model = _build(name, digits).eval()
    x = digits.test.x[:12].clone().requires_grad_(True)
    score = model.score(x, digits.test.y[:12])
    target = model.explain_target(x)
    assert score.shape == (12,) and target.shape == (12,)
    target.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # differentiable, for Captum


@pytest.mark.parametrize("name", sorted(n for n, (cls, _) in MODELS.items() if cls.has_latent))
def test_latent_tools(name, digits):
    model = _build(name, digits).eval()
    z = torch.zeros(model.latent_dim)
    grid = traverse(model, base=z, dims=[0, 1], values=[-2.0, 0.0, 2.0])
    assert grid.shape == (6, *digits.shape)
    # the middle column decodes the base code itself, in both rows
    assert torch.allclose(grid[1], grid[4])
    assert not torch.allclose(grid[0], grid[2])
    path = interpolate(model, torch.randn(model.latent_dim), torch.randn(model.latent_dim),
                       steps=5, spherical=True)
    assert path.shape == (5, *digits.shape)


def test_weights_that_do_not_fit_are_refused(digits, tmp_path):
    small = build("vae", shape=digits.shape, num_classes=10, latent_dim=4)
    path = save_weights(small, tmp_path / "w.safetensors")
    with pytest.raises(DataError, match="does not fit this model"):
        load_weights(build("vae", shape=digits.shape, num_classes=10, latent_dim=8), path)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00not a tensor file")
    with pytest.raises(DataError, match="not a valid safetensors"):
        load_weights(small, tmp_path / "junk.safetensors")


def test_every_family_says_what_its_loss_measures():
    base = GenerativeModel.loss_meaning
    for name, (cls, _) in MODELS.items():
        assert cls.loss_meaning != base, f"{name} keeps the contract's generic loss text"
        if cls.has_likelihood:  # an ELBO bounds -log p(x); PixelCNN and the mixture give it
            assert "-log p(x)" in cls.loss_meaning and "not a likelihood" not in cls.loss_meaning
        else:
            assert "not a likelihood" in cls.loss_meaning and "ELBO" not in cls.loss_meaning
    assert "ELBO" in MODELS["vae"][0].loss_meaning
    assert "denoising" in MODELS["diffusion"][0].loss_meaning
    units = {name: family(name).loss_unit for name in MODELS}
    assert units.pop("diffusion") == "squared error/image"
    assert set(units.values()) == {"nats/image"}
    assert family("no-such-family") is GenerativeModel
