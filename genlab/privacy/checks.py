"""Checks of DP settings, with one-line messages for students (all raise ConfigError).

The trainer, the planner and the dashboard call :func:`check_privacy_settings` and
:func:`validate_delta` before anything trains, so bad settings never cost a run.
"""

from __future__ import annotations

import math
import numbers

from genlab.config import ACCOUNTANTS
from genlab.errors import ConfigError


def _fmt(x: object) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _check_number(value: object, name: str) -> None:
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    _require(real and not math.isnan(value), f"{name} must be a number (got {value!r})")


def _check_delta_range(delta: float) -> None:
    _check_number(delta, "delta")
    _require(0 < delta < 1, f"delta must be between 0 and 1, exclusive (got {_fmt(delta)})")


def validate_delta(delta: float, n: int) -> None:
    """Check that δ lies in (0, 1) and below 1/N, the chance of leaking one whole record.

    Raises:
        ConfigError: naming the bound 1/N and a typical δ.
    """
    _check_delta_range(delta)
    typical = 10.0 ** (math.floor(math.log10(1 / n)) - 1)
    _require(
        delta < 1 / n,
        f"delta must be below 1/N = {1 / n:.1e} for N = {n} training images "
        f"(got {_fmt(delta)}); {typical:.0e} or smaller is typical",
    )


def _validate_data(n: int, batch_size: int) -> None:
    _require(n >= 1, f"n, the number of training images, must be at least 1 (got {n})")
    _require(
        1 <= batch_size <= n,
        f"batch_size must be between 1 and n = {n} training images (got {batch_size})",
    )


def _validate_sigma(sigma: float, name: str) -> None:
    _check_number(sigma, name)
    hint = "around 1.0 is typical, 0 means no noise"
    _require(0 <= sigma < math.inf, f"{name} must be finite and >= 0 (got {_fmt(sigma)}); {hint}")


def _validate_target(epsilon: float) -> None:
    _check_number(epsilon, "epsilon")
    no_dp = "leave DP off for no privacy"
    _require(epsilon > 0, f"epsilon must be > 0 (got {_fmt(epsilon)}); {no_dp}")
    _require(math.isfinite(epsilon), f"epsilon must be a finite number (got inf); {no_dp}")


def _validate_one_of(sigma: float | None, epsilon: float | None, sigma_name: str) -> None:
    _require(
        sigma is None or epsilon is None,
        f"give either {sigma_name} or epsilon, not both "
        f"(got {sigma_name} = {_fmt(sigma)} and epsilon = {_fmt(epsilon)})",
    )
    _require(
        sigma is not None or epsilon is not None,
        f"give either {sigma_name} (the noise) or epsilon (the privacy target); got neither",
    )
    _validate_target(epsilon) if sigma is None else _validate_sigma(sigma, sigma_name)


def _validate_accountant(accountant: str) -> None:
    known = ", ".join(ACCOUNTANTS)
    _require(
        accountant in ACCOUNTANTS, f"unknown accountant {accountant!r}; choose one of: {known}"
    )


def _validate_steps(sample_rate: float, steps: int, delta: float) -> None:
    _require(0 < sample_rate <= 1, f"sample_rate must be in (0, 1] (got {_fmt(sample_rate)})")
    _require(steps >= 1, f"steps must be at least 1 (got {steps})")
    _check_delta_range(delta)


def check_privacy_settings(
    *,
    epsilon: float | None,
    noise_multiplier: float | None,
    delta: float,
    max_grad_norm: float,
    n: int,
    batch_size: int,
) -> None:
    """Check DP training settings before any training starts.

    Args:
        epsilon: the target ε, or ``None`` when ``noise_multiplier`` is given.
        noise_multiplier: σ, or ``None`` when ``epsilon`` is given.
        delta: the target δ; must be in (0, 1) and below 1/n.
        max_grad_norm: the per-sample clipping bound C; must be > 0.
        n: the number of training images.
        batch_size: the expected batch size B, between 1 and n.

    Raises:
        ConfigError: on the first invalid setting, with a one-line message.
    """
    _validate_one_of(noise_multiplier, epsilon, "noise_multiplier")
    _validate_data(n, batch_size)
    validate_delta(delta, n)
    _check_number(max_grad_norm, "max_grad_norm")
    _require(
        max_grad_norm > 0,
        f"max_grad_norm must be > 0 (got {_fmt(max_grad_norm)}); "
        "it is the per-sample clipping bound C, e.g. 1.0",
    )


# ---------------------------------------------------------------------------- accounting
