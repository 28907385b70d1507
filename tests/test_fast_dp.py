"""The fast DP step against Opacus: one step on the same batch with the same noise seed gives
Opacus's DPOptimizer result to 1e-5; padding rows add nothing; an overflowing batch is split, not
cut; an empty batch is a noise-only step; ε is the same with and without the fast path."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from genlab.cli import main
from genlab.config import PrivacyConfig, RunConfig, make_run_config
from genlab.models import build
from genlab.privacy.dp import PrivateTraining
from genlab.privacy.fast_dp import (
    GRAD_SAMPLERS,
    GROUPED_MIN_POSITIONS,
    PoissonSchedule,
    _grad_sample,
    batch_capacity,
)
from genlab.runs import RunStore
from genlab.train import check_run, seed_everything, train_run

N_BATCH = 37  # sampled rows in the compared step
SETTINGS = {  # small networks with every layer type the families use (conv, linear, GroupNorm)
    "vae-conv": ("vae", {"latent_dim": 4, "hidden": 16, "channels": 8}),
    "vae-mlp": ("vae", {"arch": "mlp", "latent_dim": 4, "hidden": 32}),
    "cvae": ("cvae", {"latent_dim": 4, "hidden": 16, "channels": 8}),
    "pixelcnn": ("pixelcnn", {"channels": 8, "layers": 2, "head": 8}),
}
PRIVACY = PrivacyConfig(noise_multiplier=0.5, max_grad_norm=0.5)  # most samples get clipped


@pytest.fixture(scope="module")
def digits():
    return check_run(make_run_config("vae", "digits"))


@pytest.fixture(autouse=True)
def _deterministic_latents(monkeypatch):
    """The VAEs draw z with randn_like; both paths must see the same z, so z = the mean here."""
    monkeypatch.setattr(torch, "randn_like", lambda t, **kw: torch.zeros_like(t))


def _pair(key: str, data, *, capacity="auto", privacy=PRIVACY, shape=None, n=None):
    """The same initial model wrapped for Opacus's own step and for the fast step."""
    name, settings = SETTINGS[key]
    cfg = make_run_config(name, "digits", overrides=settings)
    seed_everything(0)
    model = build(name, shape=shape or data.shape, num_classes=10, config=cfg.model_config)
    out = []
    for fast in (False, True):
        m = copy.deepcopy(model)
        dp = PrivateTraining(
            m, m.configure_optimizers(1e-3), n_train=n or len(data.train), batch_size=64,
            epochs=1, config=privacy, seed=0, fast=fast, capacity=capacity,
        )  # fmt: skip
        out.append((m, dp))
    return out


def _mask(n: int, rows: int, seed: int = 3) -> torch.Tensor:
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:rows]] = True
    return mask


def _opacus_step(model, dp, x, y, mask):
    """Opacus's own step; the noisy, scaled gradients it handed to Adam (for an empty batch,
    which Opacus's zero_grad clears afterwards, the weights after the step)."""
    idx = mask.nonzero().flatten()
    if len(idx) == 0:
        dp.empty_step()
        return [p.detach().clone() for p in dp.optimizer.params]
    model.train_step(x[idx], y[idx], dp.optimizers)
    return [p.grad.detach().clone() for p in dp.optimizer.params]


def _fast_step(dp, x, y, mask, capacity):
    schedule = PoissonSchedule(
        len(x), dp.sample_rate, 1, capacity=capacity, device=x.device, seed=0
    )  # fmt: skip
    chunks = schedule.chunks(mask, int(mask.sum()))
    dp.fast_step(x, y, chunks)
    return [p.grad.detach().clone() for p in dp.optimizer.params], len(chunks)


def _max_diff(a, b) -> float:
    return max(float((u - v).detach().abs().max()) for u, v in zip(a, b))


@pytest.mark.parametrize("key", sorted(SETTINGS))
def test_one_fast_step_matches_opacus_dp_optimizer(key, digits):
    (ref_model, ref), (fast_model, fast) = _pair(key, digits, capacity=None)
    assert ref.dp_step == "opacus-hooks" and fast.dp_step == "book-keeping"
    x, y = digits.train.x, digits.train.y
    mask = _mask(len(x), N_BATCH)
    expected = _opacus_step(ref_model, ref, x, y, mask)
    got, _ = _fast_step(fast, x, y, mask, None)
    assert _max_diff(expected, got) < 1e-5
    # the test has teeth: the clipped signal is far above the tolerance
    noise_only, _ = _fast_step(_pair(key, digits, capacity=None)[1][1], x, y, mask & False, None)
    assert _max_diff(expected, noise_only) > 1e-3
    # the weights after the step agree too, and so does the accountant
    for p, q in zip(ref_model.parameters(), fast_model.parameters()):
        assert float((p - q).detach().abs().max()) < 1e-5
    assert ref.steps == fast.steps == 1


def test_one_fast_step_matches_opacus_on_28_pixel_images(digits):
    """At 28x28 the VAE's larger convolutions take the grouped per-sample rule."""
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(300, 1, 28, 28, generator=gen), torch.randint(0, 10, (300,), generator=gen)
    (ref_model, ref), (_, fast) = _pair("vae-conv", digits, capacity=None, shape=(1, 28, 28),
                                        n=300)  # fmt: skip
    mask = _mask(300, N_BATCH)
    expected = _opacus_step(ref_model, ref, x, y, mask)
    got, _ = _fast_step(fast, x, y, mask, None)
    assert _max_diff(expected, got) < 1e-5


@pytest.mark.parametrize(
    "layer", [
        torch.nn.Conv2d(8, 4, 3, padding=1),
        torch.nn.Conv2d(4, 6, 4, stride=2, padding=1),
        torch.nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=4),
        torch.nn.Conv2d(3, 5, (2, 3), padding=(0, 1), bias=False),
    ],
)
def test_grouped_conv_per_sample_gradients_equal_opacus(layer):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(5, layer.in_channels, 24, 24, generator=gen)
    g = torch.randn(layer(a).shape, generator=gen)  # (randn_like is patched to zeros here)
    assert g.shape[2] * g.shape[3] >= GROUPED_MIN_POSITIONS  # the grouped rule is the one used
    ours, opacus = _grad_sample(layer, a, g), GRAD_SAMPLERS[torch.nn.Conv2d](layer, [a], g)
    assert ours.keys() == opacus.keys()
    for p in ours:
        assert ours[p].shape == opacus[p].shape == (5, *p.shape)
        scale = float(opacus[p].abs().max())
        assert scale > 1
        # Float32 sums of 24 x 24 products, taken in another order: they may differ by about
        # sqrt(576) * 1.2e-7 of the largest value (3e-5 of 76 on an AMD EPYC; under 1e-5 on Xeon).
        assert torch.allclose(ours[p], opacus[p], rtol=1e-5, atol=4e-6 * scale)


@pytest.mark.parametrize("capacity", [64, 16])  # padded (64 > 37) and overflowing (3 chunks)
def test_padding_adds_nothing_and_an_overflowing_batch_is_split_not_cut(capacity, digits):
    (ref_model, ref), (_, fast) = _pair("vae-conv", digits, capacity=capacity)
    x, y = digits.train.x, digits.train.y
    mask = _mask(len(x), N_BATCH)
    expected = _opacus_step(ref_model, ref, x, y, mask)
    got, n_chunks = _fast_step(fast, x, y, mask, capacity)
    assert n_chunks == math.ceil(N_BATCH / capacity)
    assert _max_diff(expected, got) < 1e-5
    assert fast.steps == 1  # several chunks, one noisy step for the accountant


@pytest.mark.parametrize("capacity", [None, 8])
def test_an_empty_batch_is_a_noise_only_step(capacity, digits):
    (ref_model, ref), (_, fast) = _pair("vae-conv", digits, capacity=capacity)
    x, y = digits.train.x, digits.train.y
    empty = torch.zeros(len(x), dtype=torch.bool)
    before = [p.detach().clone() for p in fast.optimizer.params]
    expected = _opacus_step(ref_model, ref, x, y, empty)
    grads, _ = _fast_step(fast, x, y, empty, capacity)
    assert float(grads[0].abs().max()) > 0  # noise, not nothing
    assert _max_diff(expected, list(fast.optimizer.params)) < 1e-6
    assert _max_diff(before, expected) > 1e-5  # the step moved the weights


def test_poisson_schedule_samples_at_rate_q_and_never_drops_a_row():
    n, q, steps = 3000, 1 / 12, 400
    assert batch_capacity(n, q) == 325  # P(Binomial(3000, 1/12) > 325) <= 1e-6
    schedule = PoissonSchedule(n, q, steps, capacity=240, device=torch.device("cpu"), seed=1)
    counts, overflowed = [], 0
    for chunks in schedule.epoch():
        counts.append(sum(c.count for c in chunks))
        overflowed += len(chunks) > 1
        for c in chunks:
            assert len(c.index) == 240 and float(c.weight.sum()) == c.count
        rows = torch.cat([c.index[: c.count] for c in chunks])
        assert len(rows.unique()) == len(rows)  # each sampled image once
    assert len(counts) == steps
    mean, sd = n * q, math.sqrt(n * q * (1 - q))
    assert abs(sum(counts) / steps - mean) < 4 * sd / math.sqrt(steps)
    assert overflowed > 0.5 * steps  # capacity 240 < the mean 250: most batches need 2 chunks


@pytest.mark.parametrize(
    "privacy", [{"noise_multiplier": 1.0}, {"epsilon": 4.0, "accountant": "rdp"}]
)
def test_epsilon_is_identical_with_and_without_the_fast_path(privacy):
    results = {}
    for fast in (True, False):
        cfg = make_run_config(
            "vae", "digits", epochs=2, seed=0, device="cpu", privacy=privacy, fast_path=fast,
            overrides={"latent_dim": 4, "hidden": 16, "channels": 8},
        )  # fmt: skip
        results[fast] = train_run(cfg)[1]
    on, off = results[True].privacy, results[False].privacy
    assert (on["dp_step"], off["dp_step"]) == ("book-keeping", "opacus-hooks")
    for key in ("epsilon", "noise_multiplier", "sample_rate", "steps", "delta", "accountant"):
        assert on[key] == off[key], key
    assert math.isfinite(results[True].test_loss)


def test_fast_path_is_a_train_setting_that_keeps_old_config_hashes(genlab_home, capsys):
    on = make_run_config("vae", "digits")
    assert "fast_path" not in on.to_dict()["train"]
    assert on.config_hash() == "33b7e3ad6e125176"  # the hash main gave before the field existed
    off = make_run_config("vae", "digits", fast_path=False)
    assert off.to_dict()["train"]["fast_path"] is False
    assert RunConfig.from_dict(off.to_dict()).train.fast_path is False
    assert off.config_hash() != on.config_hash()
    assert main(["train", "--epochs", "1", "--no-fast-path", "--quiet", "--json"]) == 0
    (run,) = RunStore(genlab_home).list()
    assert run.config["train"]["fast_path"] is False
