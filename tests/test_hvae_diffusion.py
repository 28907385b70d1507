"""The hierarchical VAE and the diffusion model: what the registry-wide contract tests cannot see.

HVAE: its two latent levels tile the code, a traversal at each level changes the image, and
differently; encode/decode go through the prior-standardised code; the importance-weighted bound
tightens with k. Diffusion: deterministic DDIM sampling per seed, in chunks and on progress;
a membership score that does not depend on the batch; a fixed, differentiable target.
"""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_SETTINGS

from genlab.data import load_dataset
from genlab.errors import ConfigError
from genlab.interpret.latent import dim_labels, latent_levels, traverse
from genlab.models import build, model_config
from genlab.models.diffusion import alpha_bars


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


@pytest.fixture(scope="module")
def hvae(digits):
    """A tiny HVAE trained for 60 steps on digits."""
    torch.manual_seed(0)
    model = build("hvae", shape=digits.shape, num_classes=10, **TINY_SETTINGS["hvae"])
    opts = model.configure_optimizers(3e-3)
    x = digits.train.x[:256]
    for step in range(60):
        model.train_step(x[(step % 4) * 64:(step % 4 + 1) * 64], None, opts)
    return model.eval()


@pytest.fixture(scope="module")
def diffusion(digits):
    torch.manual_seed(0)
    return build("diffusion", shape=digits.shape, num_classes=10,
                 **TINY_SETTINGS["diffusion"]).eval()


# ----------------------------------------------------------------------------- hvae
def test_hvae_levels_tile_the_code_top_first(hvae):
    top, bottom = latent_levels(hvae)
    assert (top.key, bottom.key) == ("top", "bottom")
    # the bottom code is one channel on the decoder's coarsest grid: 4x4 on 8x8 digits
    assert hvae.bottom_shape == (1, 4, 4)
    assert list(top.dims) == [0, 1] and list(bottom.dims) == list(range(2, 18))
    assert hvae.latent_dim == 18
    assert dim_labels(hvae, [0, 1, 2, 17]) == ["z2_0", "z2_1", "z1_0", "z1_15"]
    # pages traverse the top level's first dims and the bottom grid's centre 3x3 cells first
    assert top.shown_first == [0, 1]
    assert bottom.shown_first == [2 + r * 4 + c for r in (1, 2, 3) for c in (1, 2, 3)]
    one_level = build("vae", shape=(1, 8, 8), num_classes=10, arch="mlp", latent_dim=3)
    assert dim_labels(one_level, [0, 2]) == ["z0", "z2"]


def test_hvae_traversals_at_both_levels_change_the_image_differently(hvae, digits):
    base = hvae.encode(digits.test.x[:1])[0]

    def sweep(d):  # dim d from 3 below its value in the base code to 3 above
        return traverse(hvae, base=base, dims=[d], values=[base[d] - 3, base[d], base[d] + 3])

    top, bottom = sweep(0), sweep(2 + 5)  # a top dim, and the bottom code at row 1, column 1
    # the middle column decodes the base code itself, at both levels
    assert torch.allclose(top[1], bottom[1], atol=1e-6)
    assert torch.allclose(top[1], hvae.decode(base[None])[0], atol=1e-6)
    # each level moves the image: the top one everywhere, a bottom dim near its grid position
    top_change, bottom_change = (top[0] - top[2]).abs(), (bottom[0] - bottom[2]).abs()
    assert top_change.amax() > 0.05 and bottom_change.amax() > 0.05
    assert top_change.mean() > 2 * bottom_change.mean()  # the top level's change is global
    assert (top[0] - bottom[0]).abs().amax() > 0.05  # and the two levels move it differently


def test_hvae_encode_then_decode_is_the_reconstruction_at_posterior_means(hvae, digits):
    x = digits.test.x[:8]
    code = hvae.encode(x)
    assert code.shape == (8, 18)
    # decode(encode(x)) rebuilds z1 from its standardised form: the same image as decoding
    # the posterior means (z2, z1) directly
    f, mu2, _ = hvae._bottom_up(x)
    t, mu_p, logvar_p = hvae._prior_bottom(mu2)
    mu1, _ = hvae._posterior_bottom(f, t, mu_p, logvar_p)
    direct = torch.sigmoid(hvae._logits(t, mu1))
    assert torch.allclose(hvae.decode(code), direct, atol=1e-5)
    assert torch.allclose(hvae.reconstruct(x), direct, atol=1e-5)


def test_hvae_importance_weighted_bound_tightens_with_k(hvae, digits):
    x = digits.test.x[:64]
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    with torch.no_grad():
        elbo = torch.stack([hvae.eval_loss(x) for _ in range(20)]).mean()
    k1, k32 = hvae.nll(x, k=1, generator=gen()).mean(), hvae.nll(x, k=32, generator=gen()).mean()
    assert abs(float(k1 - elbo)) < 0.05 * float(elbo)  # k = 1 is the ELBO
    assert k32 < k1  # more samples, a tighter bound


def test_hvae_config_is_validated():
    with pytest.raises(ConfigError, match="top_dim must be at least 1"):
        model_config("hvae", top_dim=0)
    with pytest.raises(ConfigError, match="beta must be >= 0"):
        model_config("hvae", beta=-1)


# ----------------------------------------------------------------------------- diffusion
def test_the_noise_schedules_fall_from_one_towards_zero():
    for schedule in ("cosine", "linear"):
        ab = alpha_bars(schedule, 1000)
        assert ab.shape == (1000,) and (ab[1:] < ab[:-1]).all()
        assert 0.99 < ab[0] < 1 and ab[-1] < 0.01


def test_ddim_steps_are_distinct_and_end_at_zero(diffusion):
    times = diffusion.sample_times()
    assert times[0] == 99 and times[-1] == 0 and len(times) == 5
    assert times == sorted(set(times), reverse=True)


def test_diffusion_samples_are_images_and_repeat_per_seed(diffusion, monkeypatch):
    calls = []
    a = diffusion.sample(12, generator=torch.Generator().manual_seed(3),
                         progress=lambda d, t: calls.append((d, t)))
    assert a.shape == (12, 1, 8, 8) and a.min() >= 0 and a.max() <= 1
    assert calls == [(i, 5) for i in range(1, 6)]  # one call per DDIM step
    b = diffusion.sample(12, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert not torch.equal(a, diffusion.sample(12, generator=torch.Generator().manual_seed(4)))
    # sampled in chunks (as on a CPU with many images), the same seed gives the same images
    monkeypatch.setattr("genlab.models.diffusion.SAMPLE_CHUNK", 5)
    calls.clear()
    c = diffusion.sample(12, generator=torch.Generator().manual_seed(3),
                         progress=lambda d, t: calls.append((d, t)))
    assert torch.allclose(a, c, atol=1e-6)
    assert calls[-1] == (15, 15)  # three chunks of five steps


def test_diffusion_score_is_fixed_per_image_whatever_the_batch(diffusion, digits):
    x = digits.test.x[:10]
    score = diffusion.score(x)
    assert score.shape == (10,) and (score < 0).all()  # minus a squared error
    assert torch.equal(score, diffusion.score(x))
    assert torch.allclose(diffusion.score(x[3:7]), score[3:7], atol=1e-5)
    target = diffusion.explain_target(x)
    assert target.shape == (10,) and torch.equal(target, diffusion.explain_target(x))


def test_training_lowers_the_denoising_loss_of_the_members(digits):
    torch.manual_seed(0)
    model = build("diffusion", shape=digits.shape, num_classes=10, **TINY_SETTINGS["diffusion"])
    x = digits.train.x[:128]
    before = model.score(x).mean()
    opts = model.configure_optimizers(3e-3)
    for _ in range(40):
        model.train_step(x, None, opts)
    assert model.score(x).mean() > before  # the score is minus the loss: it rises


def test_diffusion_config_is_validated():
    with pytest.raises(ConfigError, match="sample_steps must be between 1 and timesteps"):
        model_config("diffusion", timesteps=10, sample_steps=20)
    with pytest.raises(ConfigError, match="schedule must be one of cosine, linear"):
        model_config("diffusion", schedule="quadratic")
