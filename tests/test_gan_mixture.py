"""The GAN and the Bernoulli mixture: what the registry-wide tests cannot check by themselves."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from genlab.data import load_dataset
from genlab.errors import ConfigError
from genlab.models import build, config_fields, model_config
from genlab.train import seed_everything


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


def _gan(data, **overrides):
    seed_everything(0)
    return build("gan", shape=data.shape, num_classes=data.num_classes, **overrides)


def _mixture(shape=(1, 8, 8), seed=0, **overrides):
    seed_everything(seed)
    return build("mixture", shape=shape, num_classes=10, **overrides)


# ---------------------------------------------------------------------------------- GAN
def test_gan_private_modules_are_the_discriminator_without_batchnorm(digits):
    model = _gan(digits)
    private = model.private_modules()
    assert private is model.discriminator
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in private.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in private.modules())
    private_ids = {id(p) for p in private.parameters()}
    public = [*model.generator.parameters(), *model.generator_ema.parameters()]
    assert private_ids.isdisjoint(id(p) for p in public)
    assert len(private_ids) + len(public) == len(list(model.parameters()))


def test_gan_train_step_updates_both_networks_and_reports_both_losses(digits):
    model = _gan(digits)
    opts = model.configure_optimizers(1e-3)
    assert len(opts) == 2
    d_before = [p.detach().clone() for p in model.discriminator.parameters()]
    g_before = [p.detach().clone() for p in model.generator.parameters()]
    out = model.train_step(digits.train.x[:32], digits.train.y[:32], opts)
    assert set(out) == {"loss", "d_loss", "g_loss"}
    for value in out.values():
        assert value.shape == () and not value.requires_grad and torch.isfinite(value)
    assert torch.equal(out["loss"], out["d_loss"])
    assert 0 < float(out["d_loss"]) < 10 and 0 < float(out["g_loss"]) < 10
    for before, p in zip(d_before, model.discriminator.parameters(), strict=True):
        assert not torch.equal(before, p), "every discriminator tensor moves"
    for before, p in zip(g_before, model.generator.parameters(), strict=True):
        assert not torch.equal(before, p), "every generator tensor moves"
    assert all(p.requires_grad for p in model.discriminator.parameters())  # unfrozen after G


def test_gan_discriminator_step_is_the_mean_private_loss(digits, monkeypatch):
    model = _gan(digits)
    seen = []
    original = model.private_loss

    def spy(x, y=None):
        loss = original(x, y)
        seen.append((x, loss.detach()))
        return loss

    monkeypatch.setattr(model, "private_loss", spy)
    x = digits.train.x[:16]
    out = model.train_step(x, digits.train.y[:16], model.configure_optimizers(1e-3))
    assert len(seen) == 1 and seen[0][0] is x and seen[0][1].shape == (16,)
    assert torch.allclose(out["d_loss"], seen[0][1].mean())


def test_gan_private_loss_is_per_sample_with_no_cross_sample_interaction(digits, monkeypatch):
    model = _gan(digits).double()
    x = digits.train.x[:5].double()
    z = torch.randn(5, model.latent_dim, dtype=torch.float64)
    rows = iter([z] + [z[i : i + 1] for i in range(5)])  # the batch, then one row at a time
    monkeypatch.setattr(torch, "randn", lambda *a, **k: next(rows))
    batched = model.private_loss(x)
    single = torch.cat([model.private_loss(x[i : i + 1]) for i in range(5)])
    assert batched.shape == (5,)
    assert torch.allclose(batched, single, rtol=1e-10, atol=1e-12)
    fake = torch.sigmoid(model.generator(z))  # the live generator makes D's fakes
    expected = F.softplus(-model.discriminator(x)) + F.softplus(model.discriminator(fake))
    assert torch.allclose(batched, expected, rtol=1e-10, atol=1e-12)


def test_gan_hinge_loss_is_the_hinge(digits, monkeypatch):
    model = _gan(digits, loss="hinge")
    x = digits.train.x[:4]
    z = torch.randn(4, model.latent_dim)
    monkeypatch.setattr(torch, "randn", lambda *a, **k: z)
    real, fake = model.discriminator(x), model.discriminator(model.decode(z))
    assert torch.allclose(model.private_loss(x), F.relu(1 - real) + F.relu(1 + fake))


def test_gan_generator_step_leaves_per_sample_hooks_alone(digits):
    """Under Opacus (D wrapped for per-sample gradients) the D step sees per-sample gradients of
    the private loss only, the G step neither crashes nor adds to them, and none outlive the
    step (the issue: clear D's per-sample gradients after the generator step)."""
    from opacus.grad_sample import GradSampleModule

    model = _gan(digits)
    wrapped = GradSampleModule(model.discriminator, batch_first=True, loss_reduction="mean")
    try:
        opts = model.configure_optimizers(1e-3)
        seen = []
        d_step = opts[0].step

        def spy_step(*args, **kwargs):  # what a DP optimizer would clip and noise, at its step
            seen.append([(p.grad_sample.clone(), p.grad.clone())
                         for p in model.discriminator.parameters()])
            return d_step(*args, **kwargs)

        opts[0].step = spy_step
        for i in range(2):
            model.train_step(digits.train.x[16 * i : 16 * (i + 1)], None, opts)
            for (sample, grad), p in zip(seen[-1], model.discriminator.parameters(), strict=True):
                assert sample.shape == (16, *p.shape)
                assert torch.allclose(sample.mean(0), grad, atol=1e-6)
            assert all(getattr(p, "grad_sample", None) is None
                       for p in model.discriminator.parameters())
        assert len(seen) == 2
    finally:
        wrapped._close()


def test_gan_samples_come_from_the_averaged_generator(digits):
    live = _gan(digits, ema=0.0)
    opts = live.configure_optimizers(1e-3)
    for _ in range(3):
        live.train_step(digits.train.x[:16], None, opts)
    for a, b in zip(live.generator.parameters(), live.generator_ema.parameters(), strict=True):
        assert torch.equal(a, b)  # ema = 0: the average is the live generator
    model = _gan(digits)
    start = [p.clone() for p in model.generator_ema.parameters()]
    opts = model.configure_optimizers(1e-3)
    for _ in range(20):
        model.train_step(digits.train.x[:16], None, opts)
    ema, gen = list(model.generator_ema.parameters()), list(model.generator.parameters())
    assert not any(p.requires_grad for p in ema)
    assert all(not torch.equal(e, s) for e, s in zip(ema, start, strict=True))
    assert not torch.equal(ema[0], gen[0])  # lags behind the live generator
    z = torch.randn(4, model.latent_dim)
    assert torch.equal(model.decode(z), torch.sigmoid(model.generator_ema(z)))


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (1, 20, 12), (1, 7, 7)])
def test_gan_fits_every_image_size(shape):
    seed_everything(0)
    model = build("gan", shape=shape, num_classes=10).eval()
    images = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert images.shape == (3, *shape)
    assert model.discriminator(images).shape == (3,)


def test_gan_score_and_explain_target_are_the_logit_and_samples_decode_the_prior(digits):
    model = _gan(digits).eval()
    x = digits.test.x[:6]
    logit = model.discriminator(x)
    assert torch.equal(model.score(x), logit)
    assert torch.equal(model.explain_target(x), model.explain_target(x))  # deterministic
    z = torch.randn(4, model.latent_dim, generator=torch.Generator().manual_seed(5))
    assert torch.equal(model.sample(4, generator=torch.Generator().manual_seed(5)), model.decode(z))
    assert not model.has_likelihood
    with pytest.raises(NotImplementedError, match="no likelihood"):
        model.nll(x)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("latent_dim", 0, "latent_dim must be at least 1 (got 0)"),
        ("channels", 0, "channels must be at least 1 (got 0)"),
        ("loss", "wasserstein", "loss must be one of nonsaturating, hinge"),
        ("d_steps", 0, "d_steps must be at least 1 (got 0)"),
        ("ema", 1.0, "ema must be in [0, 1) (got 1.0)"),
    ],
)
def test_gan_config_errors_speak_plainly(key, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        model_config("gan", {key: value})


# ---------------------------------------------------------------------------------- mixture
def test_mixture_weights_sum_to_one_and_means_are_probabilities():
    model = _mixture(components=7, init_spread=2.0)
    with torch.no_grad():
        model.layer.mix.normal_()  # unequal weights
    weights, means = model.component_weights(), model.component_means()
    assert weights.shape == (7,) and means.shape == (7, 1, 8, 8)
    assert torch.allclose(weights.sum(), torch.tensor(1.0)) and (weights > 0).all()
    assert not torch.allclose(weights, torch.full((7,), 1 / 7))
    assert means.min() >= 0 and means.max() <= 1 and means.std() > 0.05


def test_mixture_components_are_sorted_by_weight_and_match_their_means():
    model = _mixture(components=6, init_spread=2.0)
    with torch.no_grad():
        model.layer.mix.copy_(torch.tensor([0.0, 0.3, -0.2, 0.1, 0.3, -0.1]))
    means, weights = model.components()
    assert means.shape == (6, 1, 8, 8) and weights.shape == (6,)
    assert torch.allclose(weights.sum(), torch.tensor(1.0))
    assert torch.all(weights[:-1] >= weights[1:])
    order = [1, 4, 3, 0, 5, 2]  # heaviest first; the tie (1 and 4) keeps component order
    assert torch.equal(weights, model.component_weights()[order])
    assert torch.equal(means, model.component_means()[order])
    assert not means.requires_grad


def _brute_force_nll(model, x):
    """-log sum_k pi_k prod_d p_kd^x_d (1 - p_kd)^(1 - x_d), one image and component at a time."""
    log_pi = torch.log(model.component_weights())
    p = model.component_means().flatten(1)
    out = []
    for image in x.flatten(1):
        terms = []
        for k in range(len(log_pi)):
            log_px = (image * torch.log(p[k]) + (1 - image) * torch.log1p(-p[k])).sum()
            terms.append(log_pi[k] + log_px)
        out.append(-torch.logsumexp(torch.stack(terms), dim=0))
    return torch.stack(out)


def test_mixture_nll_equals_a_brute_force_sum_over_components(digits):
    model = _mixture(components=5).double()
    with torch.no_grad():
        model.layer.mix.normal_(std=0.1)
    x = digits.test.x[:8].double()  # grey levels, not only 0/1
    nll = model.nll(x)
    assert nll.shape == (8,)
    assert torch.allclose(nll, _brute_force_nll(model, x), rtol=0, atol=1e-5)
    assert torch.allclose(model.loss(x), nll) and torch.allclose(model.eval_loss(x), nll)
    assert torch.allclose(model.score(x), -nll) and torch.allclose(model.explain_target(x), -nll)


def test_mixture_of_one_component_is_a_product_of_bernoullis(digits):
    model = _mixture(components=1)
    x = digits.test.x[:10]
    assert torch.equal(model.component_weights(), torch.ones(1))
    logits = model.layer.pixel_logits().view(1, *digits.shape).expand_as(x)
    expected = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    assert torch.allclose(model.nll(x), expected, rtol=1e-6)
    samples = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(samples, model.component_means().expand(3, -1, -1, -1))


def test_mixture_samples_are_component_means_or_binary_draws():
    mean_model = _mixture(components=4)
    images = mean_model.sample(20, generator=torch.Generator().manual_seed(0))
    means = mean_model.component_means().flatten(1)
    match = (images.flatten(1)[:, None, :] == means[None]).all(2)  # (20, 4)
    assert match.any(1).all() and match.any(0).sum() > 1  # every sample is a prototype
    binary = _mixture(components=4, sample_mode="bernoulli")
    draws = binary.sample(20, generator=torch.Generator().manual_seed(0))
    assert set(draws.unique().tolist()) == {0.0, 1.0}


def test_mixture_training_separates_components_and_raises_likelihood(digits):
    model = _mixture(components=10)
    x = digits.train.x[:256]
    opts = model.configure_optimizers(2e-3)
    with torch.no_grad():
        before = model.loss(x).mean()
    for _ in range(60):
        model.train_step(x, None, opts)
    with torch.no_grad():
        after = model.loss(x).mean()
        resp = model.responsibilities(x)
    assert after < 0.8 * before
    assert torch.allclose(resp.sum(1), torch.ones(256), atol=1e-5)
    assert (resp.argmax(1).bincount(minlength=10) > 0).sum() >= 3  # not one blob


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("components", 0, "components must be at least 1 (got 0)"),
        ("sample_mode", "median", "sample_mode must be one of mean, bernoulli"),
        ("init_spread", -1.0, "init_spread must be >= 0"),
    ],
)
def test_mixture_config_errors_speak_plainly(key, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        model_config("mixture", {key: value})


@pytest.mark.parametrize("name", ["gan", "mixture"])
def test_every_setting_has_help_text_and_choices_where_enumerated(name):
    fields = config_fields(name)
    assert fields and all(f["help"] for f in fields)
    cls = type(model_config(name))
    for f in dataclasses.fields(cls):
        if f.type == "str" or f.type is str:
            assert f.metadata.get("choices"), f"{name}.{f.name} needs its choices"
