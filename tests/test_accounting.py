"""Privacy accounting and the budget planner, checked against Opacus's own accountants."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.utils import get_noise_multiplier
from opacus.data_loader import DPDataLoader
from torch.utils.data import DataLoader, TensorDataset

from genlab.errors import ConfigError
from genlab.privacy.accounting import (
    ACCOUNTANTS,
    EpsilonResult,
    _epsilon_with_fallback,
    check_privacy_settings,
    compute_epsilon,
    curve_epochs,
    noise_for_epsilon,
    plan_budget,
    sample_rate,
    steps_per_epoch,
    validate_delta,
)

# The planner's running example: 3000 images, B = 256, so ceil(3000/256) = 12 steps per epoch.
N, B, EPOCHS, DELTA = 3000, 256, 20, 1e-5
Q, STEPS = 1 / math.ceil(N / B), EPOCHS * math.ceil(N / B)
# Cheaper setting for the fallback tests: q = 1/63 makes Opacus's RDP maths fast.
SMALL = {"n": 4000, "batch_size": 64, "epochs": 2}


def opacus_epsilon(cls: type, sigma: float, q: float, steps: int, delta: float) -> float:
    """The reference: Opacus's accountant fed one history entry, as genlab should do."""
    accountant = cls()
    accountant.history = [(sigma, q, steps)]
    with warnings.catch_warnings():  # RDP's "optimal order is the largest alpha" is noise here
        warnings.simplefilter("ignore", UserWarning)
        return float(accountant.get_epsilon(delta))


def opacus_noise(**kwargs: object) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return get_noise_multiplier(**kwargs)


@pytest.fixture(scope="module")
def inverse_plan() -> dict:
    return plan_budget(n=N, batch_size=B, epochs=EPOCHS, epsilon=3, delta=DELTA, curve_points=1)


def test_sampling_convention_matches_opacus_data_loader() -> None:
    loader = DataLoader(TensorDataset(torch.zeros(N, 1)), batch_size=B)
    dp_loader = DPDataLoader.from_data_loader(loader)  # what make_private builds
    assert sample_rate(N, B) == dp_loader.sample_rate == 1 / 12
    assert steps_per_epoch(N, B) == len(dp_loader) == 12
    assert steps_per_epoch(3072, 256) == 12 and steps_per_epoch(3073, 256) == 13
    assert sample_rate(100, 100) == 1.0


@pytest.mark.parametrize("accountant", ACCOUNTANTS)
def test_epsilon_equals_opacus_accountant(accountant: str) -> None:
    cls = {"prv": PRVAccountant, "rdp": RDPAccountant}[accountant]
    plan = plan_budget(
        n=N, batch_size=B, epochs=EPOCHS, sigma=1.0, delta=DELTA, accountant=accountant,
        curve_points=1,
    )  # fmt: skip
    expected = opacus_epsilon(cls, 1.0, Q, STEPS, DELTA)
    assert plan["epsilon"] == pytest.approx(expected, abs=1e-9)
    assert (plan["sample_rate"], plan["steps"]) == (Q, STEPS)
    assert plan["accountant"] == accountant and plan["fallback_reason"] is None
    assert plan["noise_multiplier"] == 1.0 and plan["note"] is None
    # Known values, so a change in Opacus's maths shows up here.
    assert plan["epsilon"] == pytest.approx({"prv": 9.006, "rdp": 9.948}[accountant], abs=1e-3)


def test_inverse_matches_get_noise_multiplier(inverse_plan: dict) -> None:
    expected = opacus_noise(
        target_epsilon=3, target_delta=DELTA, sample_rate=Q, steps=STEPS, accountant="prv"
    )
    assert inverse_plan["noise_multiplier"] == expected
    assert inverse_plan["accountant"] == "prv" and inverse_plan["fallback_reason"] is None
    assert 3 * 0.98 <= inverse_plan["epsilon"] <= 3
    at_sigma = opacus_epsilon(PRVAccountant, expected, Q, STEPS, DELTA)
    assert inverse_plan["epsilon"] == pytest.approx(at_sigma, abs=1e-9)
    assert noise_for_epsilon(target_epsilon=3, delta=DELTA, sample_rate=Q, steps=STEPS) == expected


def test_curve_rises_with_epochs_and_ends_at_final_epsilon() -> None:
    plan = plan_budget(
        n=SMALL["n"], batch_size=64, epochs=8, sigma=1.0, delta=DELTA, curve_points=4,
        compare=True,
    )  # fmt: skip
    curve = plan["curve"]
    assert [p["epoch"] for p in curve] == [2, 4, 6, 8]
    values = [p["epsilon"] for p in curve]
    assert all(a < b for a, b in zip(values, values[1:]))
    assert values[-1] == plan["epsilon"]
    assert values[0] == pytest.approx(opacus_epsilon(PRVAccountant, 1.0, 1 / 63, 126, DELTA))
    comparison = plan["comparison"]
    assert set(comparison) == {"prv", "rdp"} and comparison["prv"] == plan["epsilon"]
    rdp = opacus_epsilon(RDPAccountant, 1.0, 1 / 63, 8 * 63, DELTA)
    assert comparison["rdp"] == pytest.approx(rdp, abs=1e-9)
    assert comparison["rdp"] > comparison["prv"]  # RDP is looser: measured 2.51 against 2.18


def test_inverse_compare_keeps_rdp_above_prv(inverse_plan: dict) -> None:
    plan = plan_budget(
        n=N, batch_size=B, epochs=EPOCHS, sigma=inverse_plan["noise_multiplier"], delta=DELTA,
        compare=True, curve_points=1,
    )  # fmt: skip
    assert plan["comparison"]["prv"] == inverse_plan["epsilon"] <= 3
    assert plan["comparison"]["rdp"] > 3  # at σ chosen for PRV's ε = 3, RDP says about 3.27


@pytest.mark.parametrize(
    ("epochs", "points", "expected"),
    [(20, 20, list(range(1, 21))), (100, 20, list(range(5, 101, 5))), (3, 20, [1, 2, 3]),
     (10, 1, [10]), (30, 4, [8, 15, 23, 30])],
)  # fmt: skip
def test_curve_epochs_are_even_and_end_at_last(epochs: int, points: int, expected: list) -> None:
    assert curve_epochs(epochs, points) == expected


def test_no_noise_means_infinite_epsilon() -> None:
    plan = plan_budget(n=N, batch_size=B, epochs=3, sigma=0, delta=DELTA, compare=True)
    assert plan["epsilon"] == math.inf and plan["comparison"] == {"prv": math.inf, "rdp": math.inf}
    assert "no privacy guarantee" in plan["note"]
    assert [p["epsilon"] for p in plan["curve"]] == [math.inf] * 3


# ---------------------------------------------------------------------------- PRV -> RDP


def test_prv_fallback_on_a_delta_opacus_prv_rejects() -> None:
    """Opacus 1.6's PRV raises for δ = 1e-16 (floating point error); RDP then answers."""
    q, steps, delta = 1 / 63, 126, 1e-16
    with pytest.raises(ValueError, match="Floating point errors will dominate"):
        opacus_epsilon(PRVAccountant, 1.0, q, steps, delta)
    result = compute_epsilon(noise_multiplier=1.0, sample_rate=q, steps=steps, delta=delta)
    assert result.accountant == "rdp"
    assert result.epsilon == pytest.approx(opacus_epsilon(RDPAccountant, 1.0, q, steps, delta))
    assert result.fallback_reason.startswith("The PRV accountant could not give epsilon here")
    assert "Floating point errors" in result.fallback_reason
    assert result.fallback_reason.endswith("a looser but still valid upper bound.")

    plan = plan_budget(**SMALL, epsilon=3, delta=delta, curve_points=1, compare=True)
    expected = opacus_noise(
        target_epsilon=3, target_delta=delta, sample_rate=q, steps=steps, accountant="rdp"
    )
    assert plan["accountant"] == "rdp" and plan["noise_multiplier"] == expected
    assert plan["epsilon"] <= 3 and "Floating point errors" in plan["fallback_reason"]
    assert plan["comparison"]["prv"] is None


def test_prv_fallback_when_the_grid_would_not_fit_in_memory() -> None:
    # σ = 0.01 asks Opacus's PRV for a 1.3e10-point grid (98 GiB): refused before allocating.
    result = compute_epsilon(noise_multiplier=0.01, sample_rate=Q, steps=STEPS, delta=DELTA)
    assert result.accountant == "rdp"
    assert result.epsilon == pytest.approx(opacus_epsilon(RDPAccountant, 0.01, Q, STEPS, DELTA))
    assert "grid of 13,159,135,694 points" in result.fallback_reason


class _RaisingPRV(PRVAccountant):
    def get_epsilon(self, delta: float, **kwargs) -> float:
        raise RuntimeError("Cannot compute epsilon")


class _NanPRV(PRVAccountant):
    def get_epsilon(self, delta: float, **kwargs) -> float:
        return math.nan


@pytest.mark.parametrize(
    ("prv", "detail"), [(_RaisingPRV, "(Cannot compute epsilon)"), (_NanPRV, "(it returned nan)")]
)
def test_prv_fallback_with_injected_failing_accountant(prv: type, detail: str) -> None:
    factories = {"prv": prv, "rdp": RDPAccountant}
    result = _epsilon_with_fallback(1.0, 1 / 63, 126, DELTA, "prv", factories)
    assert isinstance(result, EpsilonResult) and result.accountant == "rdp"
    assert result.epsilon == pytest.approx(opacus_epsilon(RDPAccountant, 1.0, 1 / 63, 126, DELTA))
    assert detail in result.fallback_reason and "RDP accountant instead" in result.fallback_reason


# ---------------------------------------------------------------------------- validation

PLAN = {"n": N, "batch_size": B, "epochs": EPOCHS, "delta": DELTA}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"epsilon": -1}, r"^epsilon must be > 0 \(got -1\); leave DP off for no privacy$"),
        ({"epsilon": 0.0}, r"epsilon must be > 0 \(got 0\)"),
        ({"epsilon": math.inf}, r"epsilon must be a finite number \(got inf\)"),
        ({"sigma": 1.0, "epsilon": 3}, r"either sigma or epsilon, not both \(got sigma = 1 and"),
        ({}, r"give either sigma \(the noise\) or epsilon .*; got neither"),
        ({"sigma": -0.5}, r"sigma must be finite and >= 0 \(got -0.5\)"),
        ({"sigma": math.nan}, r"sigma must be a number \(got nan\)"),
        ({"sigma": 1.0, "delta": 0}, r"delta must be between 0 and 1, exclusive \(got 0\)"),
        ({"sigma": 1.0, "delta": 1.5}, r"delta must be between 0 and 1, exclusive \(got 1.5\)"),
        (
            {"sigma": 1.0, "delta": 1e-3},
            r"^delta must be below 1/N = 3\.3e-04 for N = 3000 training images \(got 0\.001\); "
            r"1e-05 or smaller is typical$",
        ),
        ({"sigma": 1.0, "batch_size": 0}, r"batch_size must be between 1 and n = 3000 .*got 0\)"),
        ({"sigma": 1.0, "batch_size": 3001}, r"batch_size must be between 1 and n = 3000"),
        ({"sigma": 1.0, "epochs": 0}, r"epochs must be at least 1 \(got 0\)"),
        ({"sigma": 1.0, "n": 0}, r"n, the number of training images, must be at least 1 \(got 0"),
        ({"sigma": 1.0, "accountant": "gdp"}, r"unknown accountant 'gdp'; choose one of: prv, rdp"),
        ({"sigma": 1.0, "curve_points": 0}, r"curve_points must be at least 1 \(got 0\)"),
    ],
)
def test_plan_budget_rejects_bad_settings(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        plan_budget(**{**PLAN, **changes})
    assert "\n" not in str(caught.value)


def test_validate_delta_uses_one_over_n() -> None:
    validate_delta(1e-5, 3000)
    with pytest.raises(ConfigError, match=r"below 1/N = 1\.0e-04 for N = 10000 .*1e-05 or smaller"):
        validate_delta(1e-4, 10_000)  # δ = 1/N exactly is not enough


SETTINGS = {
    "epsilon": 3.0, "noise_multiplier": None, "delta": DELTA, "max_grad_norm": 1.0, "n": N,
    "batch_size": B,
}  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"epsilon": -1}, r"epsilon must be > 0 \(got -1\); leave DP off"),
        ({"noise_multiplier": 1.0}, r"either noise_multiplier or epsilon, not both"),
        ({"epsilon": None}, r"give either noise_multiplier \(the noise\) or epsilon"),
        ({"epsilon": None, "noise_multiplier": -1.0}, r"noise_multiplier must be finite and >= 0"),
        ({"delta": 2.0}, r"delta must be between 0 and 1"),
        ({"delta": 1e-3}, r"delta must be below 1/N = 3\.3e-04 for N = 3000 training images"),
        ({"max_grad_norm": 0}, r"max_grad_norm must be > 0 \(got 0\); it is the per-sample"),
        ({"max_grad_norm": -1.5}, r"max_grad_norm must be > 0 \(got -1.5\)"),
        ({"batch_size": 5000}, r"batch_size must be between 1 and n = 3000 .*\(got 5000\)"),
        ({"n": 0}, r"n, the number of training images, must be at least 1"),
    ],
)
def test_check_privacy_settings_rejects_bad_settings(changes: dict, message: str) -> None:
    check_privacy_settings(**SETTINGS)  # the unchanged settings are fine
    with pytest.raises(ConfigError, match=message):
        check_privacy_settings(**{**SETTINGS, **changes})


def test_lower_level_calls_validate_too() -> None:
    with pytest.raises(ConfigError, match=r"unknown accountant 'gdp'; choose one of: prv, rdp"):
        compute_epsilon(
            noise_multiplier=1.0, sample_rate=Q, steps=10, delta=DELTA, accountant="gdp"
        )
    with pytest.raises(ConfigError, match=r"sample_rate must be in \(0, 1\] \(got 1.5\)"):
        compute_epsilon(noise_multiplier=1.0, sample_rate=1.5, steps=10, delta=DELTA)
    with pytest.raises(ConfigError, match=r"steps must be at least 1 \(got 0\)"):
        noise_for_epsilon(target_epsilon=3, delta=DELTA, sample_rate=Q, steps=0)
    # PRV cannot resolve ε below its 0.01 error, nor RDP below about 0.1, at any σ up to 1e6.
    with pytest.raises(ConfigError, match=r"epsilon = 0\.005 cannot be reached in 10 steps"):
        noise_for_epsilon(target_epsilon=0.005, delta=DELTA, sample_rate=1 / 63, steps=10)
