"""Composing the formal guarantees of several trained models (for ``genlab fuse``).

A fused model (averaged weights, or an ensemble) is computed from the outputs of several training
runs. Each run is a mechanism on the same training data, so the fused model costs what their
*joint* release costs: by basic sequential composition (Dwork & Roth 2014, "The Algorithmic
Foundations of Differential Privacy", Theorem 3.16), mechanisms that are (ε_i, δ_i)-DP are
together (Σ ε_i, Σ δ_i)-DP, and averaging or mixing their outputs is post-processing, which costs
nothing more (Proposition 2.1). A run trained without DP has no guarantee (ε = ∞), so neither has
any fusion that includes it. Basic composition is not tight (the advanced composition theorem or
accounting the runs jointly would give less for many runs), but it is the usual rule and it is
never optimistic.
"""

from __future__ import annotations

from typing import Any

RULE = "basic sequential composition"
REFERENCE = "Dwork & Roth 2014, The Algorithmic Foundations of Differential Privacy, Theorem 3.16"


def compose_basic(roots: list[dict[str, Any]]) -> dict[str, Any]:
    """The fused privacy block of the trained runs ``roots`` (each counted once).

    Args:
        roots: ``{"run_id", "epsilon", "delta", "accountant"}`` per trained run; ``epsilon``
            ``None`` means the run was trained without DP.

    Returns:
        ``epsilon`` and ``delta`` (their sums; ``None`` if any run has no DP), ``accountant``
        (``"composition"``) and ``composition``: the rule, its reference, the parts and a note
        that says in words how the ε was computed.
    """
    if not roots:
        raise ValueError("composition needs at least one trained run")
    no_dp = [r["run_id"] for r in roots if r.get("epsilon") is None]
    parts = [{k: r.get(k) for k in ("run_id", "epsilon", "delta", "accountant")} for r in roots]
    if no_dp:
        epsilon = delta = None
        note = (f"{', '.join(no_dp)} trained without DP, so the fused run has no guarantee "
                "(ε = ∞)")
    else:
        epsilon = float(sum(r["epsilon"] for r in roots))
        delta = float(sum(r.get("delta") or 0.0 for r in roots))
        terms = " + ".join(f"{r['epsilon']:.4g}" for r in roots)
        note = (f"ε = {terms} = {epsilon:.4g} and δ = {delta:.3g}: the sum over the "
                f"{len(roots)} trained run(s), which saw the same training data")
    return {"epsilon": epsilon, "delta": delta, "accountant": "composition",
            "composition": {"rule": RULE, "reference": REFERENCE, "parts": parts,
                            "note": note}}
