"""Privacy accounting and the budget planner, on Opacus's own accountants.

genlab trains with ``PrivacyEngine.make_private`` and Poisson sampling over a DataLoader of N
images with batch size B (``drop_last=False``); Opacus sets ``q = 1 / len(data_loader)``, so here
q = 1 / ceil(N / B) (about B / N), with ceil(N / B) steps per epoch.

ε comes from the PRV accountant (tight) by default. Where PRV cannot answer (it raises, returns a
non-finite value, or would need an enormous grid, which only happens at tiny noise), the RDP
accountant answers instead, looser but still valid, and the result says why. Every check raises
:class:`genlab.errors.ConfigError` with a one-line message for students.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from opacus.accountants import IAccountant, PRVAccountant, RDPAccountant, register_accountant
from opacus.accountants.utils import get_noise_multiplier

from genlab.config import ACCOUNTANTS
from genlab.errors import ConfigError
from genlab.privacy.checks import (  # noqa: F401  (check_privacy_settings is re-exported)
    _fmt,
    _require,
    _validate_accountant,
    _validate_data,
    _validate_one_of,
    _validate_sigma,
    _validate_steps,
    _validate_target,
    check_privacy_settings,
    validate_delta,
)

# PRV discretises the privacy-loss distribution on a grid that grows without bound as the noise
# shrinks (σ = 0.01 over 240 steps at q = 1/12 asks for 1.3e10 points, 98 GiB; σ = 0.1 takes
# minutes). Past this many points (80 MB per array, seconds of work) RDP answers instead.
PRV_MAX_GRID_POINTS = 10_000_000
_NO_NOISE = "noise_multiplier = 0 adds no noise, so there is no privacy guarantee (epsilon = inf)"
# What PRV raises where it cannot answer (a tiny δ, a huge grid, numerical trouble).
_PRV_ERRORS = (ArithmeticError, ValueError, RuntimeError, MemoryError)
# RDP warns when the best order sits at the end of its range (tiny δ inside PRV, huge ε).
_ALPHA_WARNING = "Optimal order is the (largest|smallest) alpha"


@dataclass(frozen=True)
class EpsilonResult:
    """ε for one setting, and which accountant produced it.

    Attributes:
        epsilon: the ε at the requested δ (``inf`` when there is no noise).
        accountant: the accountant actually used (``"prv"`` or ``"rdp"``).
        fallback_reason: ``None``, or a sentence saying why PRV was replaced by RDP.
        note: ``None``, or a remark on the setting itself (σ = 0 means no privacy at all).
    """

    epsilon: float
    accountant: str
    fallback_reason: str | None = None
    note: str | None = None


class _GuardedPRVAccountant(PRVAccountant):
    """Opacus's PRVAccountant, refusing grids that would exhaust memory or take minutes.

    Only the domain is checked before anything is allocated: ``get_epsilon`` is Opacus's own,
    so every value it returns is exactly what a plain ``PRVAccountant`` returns.
    """

    def _get_domain(self, **kwargs):  # Opacus passes prvs, num_self_compositions, eps/delta_error
        domain = super()._get_domain(**kwargs)
        if domain.size > PRV_MAX_GRID_POINTS:
            raise RuntimeError(
                f"it would need a grid of {domain.size:,} points, "
                f"more than the {PRV_MAX_GRID_POINTS:,} allowed"
            )
        return domain


# get_noise_multiplier builds its accountant by name, so the guarded PRV is registered under a
# name of its own (Opacus's "prv" entry is left untouched).
_GUARDED_PRV = "genlab_prv"
register_accountant(_GUARDED_PRV, _GuardedPRVAccountant, force=True)

AccountantFactory = Callable[[], IAccountant]
_FACTORIES: dict[str, AccountantFactory] = {"prv": _GuardedPRVAccountant, "rdp": RDPAccountant}


def sample_rate(n: int, batch_size: int) -> float:
    """Opacus's Poisson sampling rate, ``q = 1 / ceil(n / batch_size)`` (about B / N)."""
    return 1.0 / steps_per_epoch(n, batch_size)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimizer steps per epoch, ``ceil(n / batch_size)`` (the DataLoader's length)."""
    return math.ceil(n / batch_size)


# ---------------------------------------------------------------------------- validation


def _fallback_reason(cause: BaseException | float) -> str:
    """One sentence for students: why RDP answered instead of PRV."""
    if isinstance(cause, BaseException):
        detail = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:120]
    else:
        detail = f"it returned {cause}"
    return (
        f"The PRV accountant could not give epsilon here ({detail}), so it comes from the RDP "
        "accountant instead, a looser but still valid upper bound."
    )


def _run_accountant(factory: AccountantFactory, sigma: float, q: float, steps: int, delta: float):
    accountant = factory()
    accountant.history = [(sigma, q, steps)]
    with warnings.catch_warnings(), np.errstate(all="ignore"):  # the result is checked instead
        warnings.filterwarnings("ignore", message=_ALPHA_WARNING)
        return float(accountant.get_epsilon(delta))


def _epsilon_with_fallback(
    sigma: float, q: float, steps: int, delta: float, accountant: str,
    factories: Mapping[str, AccountantFactory] = _FACTORIES,
) -> EpsilonResult:  # fmt: skip
    """:func:`compute_epsilon` with injectable accountant classes (tests pass failing ones)."""
    if sigma == 0:
        return EpsilonResult(epsilon=math.inf, accountant=accountant, note=_NO_NOISE)
    if accountant == "rdp":
        return EpsilonResult(_run_accountant(factories["rdp"], sigma, q, steps, delta), "rdp")
    try:
        eps = _run_accountant(factories["prv"], sigma, q, steps, delta)
        if math.isfinite(eps):
            return EpsilonResult(epsilon=eps, accountant="prv")
        reason = _fallback_reason(eps)
    except _PRV_ERRORS as err:
        reason = _fallback_reason(err)
    eps = _run_accountant(factories["rdp"], sigma, q, steps, delta)
    return EpsilonResult(epsilon=eps, accountant="rdp", fallback_reason=reason)


_cached_epsilon = lru_cache(maxsize=4096)(_epsilon_with_fallback)


def compute_epsilon(
    *,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    accountant: str = "prv",
) -> EpsilonResult:
    """ε after ``steps`` DP-SGD steps, from Opacus's accountant fed one history entry.

    Args:
        noise_multiplier: σ, the noise relative to the clipping bound; 0 gives ε = inf.
        sample_rate: Poisson sampling rate q (see :func:`sample_rate`).
        steps: number of optimizer steps.
        delta: the target δ, in (0, 1).
        accountant: ``"prv"`` (tight, the default) or ``"rdp"``.

    Returns:
        The ε, the accountant actually used, and why PRV fell back to RDP when it did.

    Raises:
        ConfigError: for invalid inputs or an unknown accountant.
    """
    _validate_accountant(accountant)
    _validate_sigma(noise_multiplier, "noise_multiplier")
    _validate_steps(sample_rate, steps, delta)
    return _cached_epsilon(float(noise_multiplier), float(sample_rate), steps, delta, accountant)


@lru_cache(maxsize=256)
def _noise_with_fallback(
    target: float, delta: float, q: float, steps: int, accountant: str
) -> tuple[float, str, str | None]:
    """σ for the target, the accountant used, and the fallback reason (or None)."""

    def search(mechanism: str) -> float:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.filterwarnings("ignore", message=_ALPHA_WARNING)
            return get_noise_multiplier(
                target_epsilon=target, target_delta=delta, sample_rate=q, steps=steps,
                accountant=mechanism,
            )  # fmt: skip

    reason = None
    if accountant == "prv":
        try:
            return search(_GUARDED_PRV), "prv", None
        except _PRV_ERRORS as err:
            reason = _fallback_reason(err)
    try:
        return search("rdp"), "rdp", reason
    except ValueError:  # Opacus: "The privacy budget is too low." past σ = 1e6
        raise ConfigError(
            f"epsilon = {_fmt(target)} cannot be reached in {steps} steps even with "
            "noise_multiplier = 1e6; ask for a larger epsilon or fewer epochs"
        ) from None


def noise_for_epsilon(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "prv",
) -> float:
    """The σ that ``make_private_with_epsilon`` would choose for this target.

    Uses ``opacus.accountants.utils.get_noise_multiplier`` (its tolerance 0.01), so ε at the
    returned σ is at most ``target_epsilon``. PRV falls back to RDP as in
    :func:`compute_epsilon`; :func:`plan_budget` reports when that happened.

    Args:
        target_epsilon: the ε to reach, > 0.
        delta: the target δ, in (0, 1).
        sample_rate: Poisson sampling rate q.
        steps: number of optimizer steps.
        accountant: ``"prv"`` or ``"rdp"``.

    Returns:
        The noise multiplier σ.

    Raises:
        ConfigError: for invalid inputs, or a target too small to reach.
    """
    _validate_accountant(accountant)
    _validate_target(target_epsilon)
    _validate_steps(sample_rate, steps, delta)
    q = float(sample_rate)
    return _noise_with_fallback(float(target_epsilon), delta, q, steps, accountant)[0]


# ---------------------------------------------------------------------------- planner


def curve_epochs(epochs: int, points: int) -> list[int]:
    """At most ``points`` epochs spread evenly over 1..epochs, always ending with ``epochs``."""
    m = min(points, epochs)
    return sorted({math.ceil(k * epochs / m) for k in range(1, m + 1)})


def plan_budget(
    *,
    n: int,
    batch_size: int,
    epochs: int,
    delta: float,
    sigma: float | None = None,
    epsilon: float | None = None,
    accountant: str = "prv",
    compare: bool = False,
    curve_points: int = 20,
) -> dict:
    """Plan a DP training budget: ε from σ, or σ from a target ε, and ε against epochs.

    Each curve point is one accountant call (0.1 to 0.5 s for PRV at usual settings); every
    result is cached, so asking again is free.

    Args:
        n: number of training images N.
        batch_size: batch size B; q = 1 / ceil(N / B).
        epochs: number of epochs; steps = epochs * ceil(N / B).
        delta: target δ, below 1/N.
        sigma: the noise multiplier; give this or ``epsilon``.
        epsilon: the target ε; σ is then chosen as ``make_private_with_epsilon`` would.
        accountant: ``"prv"`` (default) or ``"rdp"``.
        compare: also give ε from both accountants at the final step.
        curve_points: at most this many epochs on the curve (the last epoch is always one).

    Returns:
        ``{"n", "batch_size", "epochs", "delta", "sample_rate", "steps", "accountant",
        "noise_multiplier", "epsilon", "fallback_reason", "note", "curve"}``; ``accountant``
        is the one actually used and ``curve`` is ``[{"epoch": e, "epsilon": ε}, ...]``. With
        ``compare``, also ``"comparison": {"prv": ε, "rdp": ε}`` (``None`` where PRV could
        not answer). ε is ``inf`` when σ = 0, and ``note`` says so.

    Raises:
        ConfigError: for any invalid setting, with a one-line message.
    """
    _validate_one_of(sigma, epsilon, "sigma")
    _validate_data(n, batch_size)
    _require(epochs >= 1, f"epochs must be at least 1 (got {epochs})")
    validate_delta(delta, n)
    _validate_accountant(accountant)
    _require(curve_points >= 1, f"curve_points must be at least 1 (got {curve_points})")

    q, per_epoch = sample_rate(n, batch_size), steps_per_epoch(n, batch_size)
    steps = epochs * per_epoch
    reason = None
    if sigma is None:
        sigma, accountant, reason = _noise_with_fallback(
            float(epsilon), delta, q, steps, accountant
        )

    def at(steps: int, accountant: str) -> EpsilonResult:
        return compute_epsilon(
            noise_multiplier=sigma, sample_rate=q, steps=steps, delta=delta, accountant=accountant
        )

    final = at(steps, accountant)
    plan = {
        "n": n,
        "batch_size": batch_size,
        "epochs": epochs,
        "delta": delta,
        "sample_rate": q,
        "steps": steps,
        "accountant": final.accountant,
        "noise_multiplier": float(sigma),
        "epsilon": final.epsilon,
        "fallback_reason": reason or final.fallback_reason,
        "note": final.note,
        "curve": [
            {"epoch": e, "epsilon": at(e * per_epoch, final.accountant).epsilon}
            for e in curve_epochs(epochs, curve_points)
        ],
    }
    if compare:
        both = {name: at(steps, name) for name in ACCOUNTANTS}
        plan["comparison"] = {k: r.epsilon if r.accountant == k else None for k, r in both.items()}
    return plan
