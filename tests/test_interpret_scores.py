"""Interpretability scores: MIG's range, the record block, attribution drift, the latent map."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from conftest import TINY_SETTINGS

from genlab.data import load_dataset
from genlab.errors import ConfigError
from genlab.interpret import attribution_drift, interpretability_block, latent_map, mig
from genlab.interpret.disentanglement import mig_per_factor, model_mig
from genlab.interpret.drift import rank_correlations
from genlab.interpret.latent import has_encoder
from genlab.models import MODELS, build, model_entry

SCORES = ("faithfulness", "stability", "mig", "score")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def sprites():
    return load_dataset("sprites")


def tiny(name: str, data, seed: int = 0, **extra):
    fields = {f.name for f in dataclasses.fields(model_entry(name)[1])}
    settings = {k: v for k, v in TINY_SETTINGS.get(name, {}).items() if k in fields}
    torch.manual_seed(seed)
    return build(
        name, shape=data.shape, num_classes=data.num_classes, **{**settings, **extra}
    ).eval()


# ----------------------------------------------------------------------------- MIG
def test_mig_of_the_true_factors_plus_noise_is_near_one(sprites):
    factors = sprites.train.factors.numpy()
    rng = np.random.default_rng(0)
    latents = factors + 0.05 * rng.standard_normal(factors.shape)
    assert mig(latents, factors) >= 0.8
    # shuffling which dim holds which factor changes nothing; extra noise dims neither
    shuffled = np.c_[latents[:, ::-1], rng.standard_normal((len(factors), 3))]
    assert mig(shuffled, factors) >= 0.8
    assert mig_per_factor(latents, factors).shape == (5,)


def test_mig_of_random_latents_is_near_zero(sprites):
    factors = sprites.train.factors.numpy()
    latents = np.random.default_rng(1).standard_normal((len(factors), 10))
    assert mig(latents, factors) <= 0.05


def test_mig_of_entangled_latents_is_low(sprites):
    """Two dims that each hold the same mix of x and y carry both, but neither alone."""
    f = sprites.train.factors.numpy().astype(float)
    latents = np.c_[f[:, 3] + f[:, 4], f[:, 3] + f[:, 4] + 0.01, f[:, :3]]
    per = mig_per_factor(latents, f.astype(int))
    assert per[0] > 0.8 and per[3] < 0.1 and per[4] < 0.1


def test_model_mig_uses_factors_or_labels_and_is_null_without_an_encoder(digits, sprites):
    vae = model_mig(tiny("vae", digits), digits)
    assert vae["mig_factors"] == ["label"] and vae["mig_n"] == len(digits.test)
    assert 0 <= vae["mig"] <= 1
    spr = model_mig(tiny("vae", sprites), sprites)
    assert spr["mig_factors"] == ["shape", "scale", "rotation", "x", "y"]
    for name in ("gan", "pixelcnn", "mixture"):
        assert model_mig(tiny(name, digits), digits)["mig"] is None


# ----------------------------------------------------------------------------- the block
@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_block_lies_in_range_and_repeats(name, digits):
    model = tiny(name, digits)
    first = interpretability_block(model, digits, n=8, steps=16, max_steps=16)
    second = interpretability_block(model, digits, n=8, steps=16, max_steps=16)
    assert first == second
    for key in SCORES:
        if key == "mig" and first["mig"] is None:
            continue
        assert 0 <= first[key] <= 1, key
    assert (first["mig"] is None) == (not has_encoder(model))
    parts = [first[k] for k in ("faithfulness", "stability", "mig") if first[k] is not None]
    assert first["score"] == pytest.approx(np.mean(parts))
    assert first["stability"] == pytest.approx(1 / (1 + first["sensitivity_max"]))
    assert first["infidelity"] >= 0 and first["sensitivity_max"] >= 0
    assert first["method"] == "ig" and first["n_images"] == 8 and first["steps"] == 16
    assert first["target"] == model.explain_target_name
    assert first["faithfulness"] > 0.6  # IG beats random deletion even on untrained nets
    assert 0 < first["deletion_contrast"] <= 1  # its top pixels matter more than random ones


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_block_raises_the_ig_steps_until_ig_is_complete(name, digits):
    model = tiny(name, digits)
    capped = interpretability_block(model, digits, n=8, steps=2, max_steps=2)
    block = interpretability_block(model, digits, n=8, steps=2, max_steps=256)
    assert capped["steps"] == 2
    assert block["ig_relative_delta"] < 0.01, block["ig_relative_delta"]
    assert block["steps"] in (2, 4, 8, 16, 32, 64, 128, 256)
    if capped["ig_relative_delta"] >= 0.01:  # too few steps: the block must have doubled them
        assert block["steps"] > 2


def test_a_different_seed_explains_other_images(digits):
    model = tiny("mixture", digits)
    a = interpretability_block(model, digits, n=8, steps=8, seed=0)
    b = interpretability_block(model, digits, n=8, steps=8, seed=1)
    assert a["sensitivity_max"] != b["sensitivity_max"]


# ----------------------------------------------------------------------------- drift
def test_drift_is_one_for_the_same_model_and_falls_as_models_part(digits):
    x = digits.test.x[:16]
    model = tiny("vae", digits)
    assert attribution_drift(model, model, x) == pytest.approx(1.0)
    nudged = copy.deepcopy(model)
    with torch.no_grad():
        for p in nudged.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
    other = tiny("vae", digits, seed=7)
    near, far = attribution_drift(model, nudged, x), attribution_drift(model, other, x)
    assert near > 0.9 and far < near - 0.1


def test_shared_zeros_do_not_count_as_agreement():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.zeros(4, 100), torch.zeros(4, 100)
    a[:, :30], b[:, :30] = torch.rand(4, 30, generator=gen), torch.rand(4, 30, generator=gen)
    rho = rank_correlations(a, b)
    assert np.all(np.abs(rho) < 0.5)  # with the 70 shared zeros counted it would be near 0.9
    assert rank_correlations(a, a) == pytest.approx(np.ones(4))


def test_drift_refuses_models_of_different_shapes(digits, sprites):
    with pytest.raises(ConfigError, match="different images"):
        attribution_drift(tiny("vae", digits), tiny("vae", sprites), digits.test.x[:2])


# ----------------------------------------------------------------------------- latent map
def test_latent_map_is_a_decoded_grid_in_two_dims_and_a_pca_scatter_otherwise(digits):
    grid = latent_map(tiny("vae", digits, latent_dim=2), digits, grid=5)
    assert grid.kind == "grid" and grid.points.shape == (25, 2)
    assert grid.images.shape == (25, 1, 8, 8)
    assert grid.images.min() >= 0 and grid.images.max() <= 1
    assert grid.points[0, 0] < grid.points[-1, 0]  # rows run from low to high
    pca = latent_map(tiny("cvae", digits), digits, n=100)
    assert pca.kind == "pca" and pca.points.shape == (100, 2) and pca.labels.shape == (100,)
    assert pca.explained_variance[0] >= pca.explained_variance[1] > 0
    assert set(pca.labels) <= set(range(10))
    gan_grid = latent_map(tiny("gan", digits, latent_dim=2), digits, grid=3)
    assert gan_grid.kind == "grid"
    with pytest.raises(ConfigError, match="the gan has no encoder"):
        latent_map(tiny("gan", digits), digits)
    with pytest.raises(ConfigError, match="has no latent space"):
        latent_map(tiny("pixelcnn", digits), digits)
