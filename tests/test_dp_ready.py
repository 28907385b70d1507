"""Every model's private modules pass Opacus's validator, and Opacus's per-sample gradients
match gradients computed one sample at a time (DP arrives later; readiness is checked now)."""

from __future__ import annotations

import pytest
import torch

from genlab.data import load_dataset
from genlab.models import MODELS, build
from genlab.privacy import (
    per_sample_gradients,
    per_sample_gradients_by_loop,
    validate_private_modules,
)
from genlab.train import seed_everything


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_private_modules_pass_the_validator(name, digits):
    model = build(name, shape=digits.shape, num_classes=digits.num_classes)
    assert validate_private_modules(model) == []


def _row_noise(*size, generator=None, dtype=None, device=None, **_):
    """Noise that is the same for every row, so a sample's loss does not depend on its batch."""
    size = tuple(size[0]) if len(size) == 1 and not isinstance(size[0], int) else size
    row = torch.sin(torch.arange(1, int(torch.tensor(size[1:]).prod()) + 1, dtype=torch.float64))
    return row.reshape(1, *size[1:]).expand(*size).clone().to(dtype or torch.get_default_dtype())


def _row_int(low, high=None, size=None, *, dtype=None, device=None, **_):
    """randint that gives every row the same integer (the diffusion model's timestep)."""
    if size is None:  # randint(high, size)
        low, high, size = 0, low, high
    return torch.full(tuple(size), (low + high - 1) // 2, dtype=dtype or torch.int64,
                      device=device)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_per_sample_gradients_match_one_at_a_time(name, digits, monkeypatch):
    seed_everything(0)
    model = build(name, shape=digits.shape, num_classes=digits.num_classes).double()
    x, y = digits.train.x[:6].double(), digits.train.y[:6]
    # Stochastic losses (the VAE's z, the GAN's fakes, the diffusion model's t and noise) draw
    # per batch; fix them per row so the batch and the one-at-a-time loop see the same draws.
    monkeypatch.setattr(torch, "randn", _row_noise)
    monkeypatch.setattr(torch, "randn_like", lambda t, **kw: _row_noise(*t.shape, dtype=t.dtype))
    monkeypatch.setattr(torch, "randint", _row_int)
    batched = per_sample_gradients(model, x, y)
    looped = per_sample_gradients_by_loop(model, x, y)
    assert batched.keys() == looped.keys() and batched
    for key in batched:
        a, b = batched[key], looped[key]
        assert (
            a.shape == b.shape == (6, *dict(model.private_modules().named_parameters())[key].shape)
        )
        rel = (a - b).norm() / b.norm().clamp_min(1e-12)
        assert rel < 1e-5, f"{key}: relative error {rel:.2e}"


def test_validator_names_a_layer_opacus_cannot_handle(digits):
    model = build("vae", shape=digits.shape, num_classes=digits.num_classes)
    model.encoder.net[1] = torch.nn.BatchNorm2d(model.encoder.net[0].out_channels)
    errors = validate_private_modules(model)
    assert errors and "BatchNorm" in " ".join(errors)
