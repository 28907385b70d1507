"""The pure metrics of a membership-inference audit: ROC, TPR at low FPR, empirical ε, DCR.

A *score* is membership evidence: higher means "looks more like a training member". Every
function here takes the members' and the non-members' scores (which come in roughly equal
numbers) and knows nothing about models; the audit that computes the scores lives elsewhere.
Scores may be lists, numpy arrays or CPU/GPU tensors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from scipy.stats import beta
from sklearn.metrics import roc_auc_score, roc_curve
from torch import Tensor

MIN_NONMEMBERS_FOR_0_1PCT = 1_000

Scores = ArrayLike | Tensor | Sequence[float]


def _scores(values: Scores, name: str) -> NDArray[np.float64]:
    """Scores as a finite 1-D float64 array, or a ValueError that says what is wrong."""
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError(f"{name} is empty; the audit needs at least one score on each side")
    bad = int((~np.isfinite(arr)).sum())
    if bad:
        raise ValueError(
            f"{name} has {bad} non-finite value(s) (NaN or inf) out of {arr.size}; "
            "a membership score must be a finite number for every sample"
        )
    return arr


def _cp_bounds(k: NDArray, n: NDArray | int, alpha: float) -> tuple[NDArray, NDArray]:
    """Vectorised Clopper-Pearson ends: the alpha/2 and 1-alpha/2 quantiles of Beta laws."""
    k = np.asarray(k, dtype=np.float64)
    n = np.broadcast_to(np.asarray(n, dtype=np.float64), k.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(k > 0, beta.ppf(alpha / 2, k, n - k + 1), 0.0)
        hi = np.where(k < n, beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)
    return lo, hi


def clopper_pearson(k: int, n: int, *, alpha: float = 0.05) -> tuple[float, float]:
    """Exact two-sided (1-alpha) confidence interval for a binomial proportion k/n.

    Args:
        k: Number of successes, 0 <= k <= n.
        n: Number of trials, n >= 1.
        alpha: Total miss probability, split evenly between the two ends.

    Returns:
        ``(lo, hi)``; ``lo`` is 0 when k == 0 and ``hi`` is 1 when k == n.

    Raises:
        ValueError: If n < 1, k is outside [0, n] or alpha is outside (0, 1).
    """
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"clopper_pearson needs 0 <= k <= n and n >= 1 (got k={k}, n={n})")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1) (got {alpha})")
    lo, hi = _cp_bounds(np.array([k]), n, alpha)
    return float(lo[0]), float(hi[0])


def _roc(member_scores: Scores, nonmember_scores: Scores, drop: bool = True):
    """sklearn's ROC (fpr, tpr, thresholds) with members labelled 1."""
    m = _scores(member_scores, "member_scores")
    u = _scores(nonmember_scores, "nonmember_scores")
    labels = np.r_[np.ones(m.size), np.zeros(u.size)]
    return roc_curve(labels, np.r_[m, u], drop_intermediate=drop)


def roc_points(member_scores: Scores, nonmember_scores: Scores, *, max_points: int = 256) -> dict:
    """The attack's ROC curve, thinned for a log-log plot.

    Args:
        member_scores: Membership evidence of the training samples (label 1).
        nonmember_scores: Membership evidence of the held-out samples (label 0).
        max_points: Most points to return (>= 3).

    Returns:
        ``{"fpr": [...], "tpr": [...]}``, both non-decreasing, starting at FPR 0 and ending at
        (1, 1). When thinned, it keeps the first point, the highest TPR at FPR 0, the last point,
        and points spread evenly in log(FPR), each the top of its ROC step.

    Raises:
        ValueError: On empty or non-finite scores, or max_points < 3.
    """
    if max_points < 3:
        raise ValueError(f"max_points must be >= 3 (got {max_points})")
    fpr, tpr = _roc(member_scores, nonmember_scores)[:2]
    if len(fpr) > max_points:
        zero = np.flatnonzero(fpr == 0)
        fixed = {0, int(zero[-1]), len(fpr) - 1}
        positive = fpr[fpr > 0]
        targets = np.geomspace(positive.min(), 1.0, max_points - len(fixed))
        # The last index with fpr <= target is the top of the step at that FPR.
        picked = np.searchsorted(fpr, targets, side="right") - 1
        keep = np.array(sorted(fixed | {int(i) for i in picked}))
        fpr, tpr = fpr[keep], tpr[keep]
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist()}


def tpr_at_fpr(member_scores: Scores, nonmember_scores: Scores, fpr: float) -> float:
    """The largest TPR over thresholds whose FPR is at most ``fpr`` (never interpolated).

    Args:
        member_scores: Membership evidence of the members.
        nonmember_scores: Membership evidence of the non-members.
        fpr: The false-positive rate allowed, in [0, 1].

    Returns:
        A TPR in [0, 1]; the test "score >= threshold" predicts "member".

    Raises:
        ValueError: On empty or non-finite scores, or fpr outside [0, 1].
    """
    if not 0 <= fpr <= 1:
        raise ValueError(f"fpr must be in [0, 1] (got {fpr})")
    fprs, tprs, _ = _roc(member_scores, nonmember_scores, drop=False)
    return float(tprs[fprs <= fpr + 1e-12].max())


def attack_metrics(member_scores: Scores, nonmember_scores: Scores) -> dict:
    """AUC, TPR at 1% and 0.1% FPR and the ROC of a global-threshold attack.

    Args:
        member_scores: Membership evidence of the members.
        nonmember_scores: Membership evidence of the non-members.

    Returns:
        ``auc``, ``tpr_at_1pct_fpr``, ``tpr_at_0_1pct_fpr`` (None below 1,000 non-members, where
        0.1% FPR is less than one false positive), ``tpr_at_0_1pct_fpr_reason`` (a sentence when
        that value is None, else None), ``roc`` (see :func:`roc_points`), ``n_members`` and
        ``n_nonmembers``.

    Raises:
        ValueError: On empty or non-finite scores.
    """
    m = _scores(member_scores, "member_scores")
    u = _scores(nonmember_scores, "nonmember_scores")
    labels = np.r_[np.ones(m.size), np.zeros(u.size)]
    auc = float(roc_auc_score(labels, np.r_[m, u]))
    tpr_0_1, reason = None, None
    if u.size >= MIN_NONMEMBERS_FOR_0_1PCT:
        tpr_0_1 = tpr_at_fpr(m, u, 0.001)
    else:
        reason = (
            f"needs at least {MIN_NONMEMBERS_FOR_0_1PCT:,} non-members; this audit has {u.size:,}"
        )
    return {
        "auc": auc,
        "tpr_at_1pct_fpr": tpr_at_fpr(m, u, 0.01),
        "tpr_at_0_1pct_fpr": tpr_0_1,
        "tpr_at_0_1pct_fpr_reason": reason,
        "roc": roc_points(m, u),
        "n_members": int(m.size),
        "n_nonmembers": int(u.size),
    }


def _log_ratio(num: NDArray | float, den: NDArray | float) -> NDArray:
    """log(num/den) with -inf where num <= 0 (no evidence) and +inf where only den is 0."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log(np.maximum(num, 0.0)) - np.log(den)
    return np.where(num <= 0, -np.inf, out)


def _bounded_epsilon(k_pos, n_pos, k_neg, n_neg, delta, alpha, *, lower: bool = True):
    """ε from a test with k_pos/n_pos "hits" and k_neg/n_neg "false alarms", CP-bounded.

    ``lower`` uses the hit rate's lower end and the false-alarm rate's upper end (so the result
    holds with probability >= 1-alpha by a union bound over the two one-sided ends); otherwise
    the ends swap, giving the top of the interval.
    """
    hit_lo, hit_hi = _cp_bounds(k_pos, n_pos, alpha)
    fa_lo, fa_hi = _cp_bounds(k_neg, n_neg, alpha)
    if lower:
        return _log_ratio(hit_lo - delta, fa_hi)
    return _log_ratio(hit_hi - delta, fa_lo)


def empirical_epsilon(
    member_scores: Scores,
    nonmember_scores: Scores,
    *,
    delta: float,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict:
    """A statistically valid lower bound on ε from the attack (Jagielski et al. 2020; Nasr 2021).

    Under (ε, δ)-DP every test "member iff score >= t" obeys TPR <= e^ε·FPR + δ and
    TNR <= e^ε·FNR + δ, so ε >= log((TPR-δ)/FPR) ("tpr" direction) and
    ε >= log((TNR-δ)/FNR) ("tnr" direction). The rates are estimates, so each side is replaced
    by its Clopper-Pearson end: the numerator's lower end and the denominator's upper end.

    Why the threshold is chosen on held-apart data: each threshold's bound holds with
    probability 1-alpha, but the *maximum* over hundreds of thresholds does not, since one of
    them is likely to be lucky. So members and non-members are each split at random (seeded)
    into a selection half and an evaluation half; the threshold and direction that maximise the
    CP-bounded ε on the selection half are then evaluated once on the evaluation half, where the
    (1-alpha) guarantee holds.

    The scores come from one trained model, so the samples are not independent runs of the
    mechanism as in the original audits; treat the bound as that audit's estimate, which for
    DP-SGD usually sits far below the accountant's ε.

    Args:
        member_scores: Membership evidence of the members (>= 2).
        nonmember_scores: Membership evidence of the non-members (>= 2).
        delta: The δ of the guarantee being audited, in [0, 1).
        alpha: The bound holds with probability >= 1-alpha (each CP end misses alpha/2).
        seed: Seed of the selection/evaluation split.

    Returns:
        ``epsilon_lower_bound`` (>= 0; 0.0 when no threshold shows evidence),
        ``epsilon_point`` (plug-in rates on the evaluation half, >= 0, capped at log(n) when no
        false alarm is seen, n the denominator's sample size), ``epsilon_upper`` (the CP ends the
        other way: the top of this threshold's interval, not an upper bound on the model's ε;
        None when infinite), ``threshold``, ``direction`` ("tpr" or "tnr"), ``alpha``,
        ``delta`` and ``n_eval`` (members plus non-members in the evaluation half).

    Raises:
        ValueError: On empty or non-finite scores, fewer than 2 per side, or a bad delta/alpha.
    """
    m = _scores(member_scores, "member_scores")
    u = _scores(nonmember_scores, "nonmember_scores")
    if m.size < 2 or u.size < 2:
        raise ValueError(
            f"empirical_epsilon needs at least 2 members and 2 non-members to split "
            f"(got {m.size} and {u.size})"
        )
    if not 0 <= delta < 1:
        raise ValueError(f"delta must be in [0, 1) (got {delta})")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1) (got {alpha})")
    rng = np.random.default_rng(seed)
    m, u = rng.permutation(m), rng.permutation(u)
    m_sel, m_eval = np.sort(m[: m.size // 2]), m[m.size // 2 :]
    u_sel, u_eval = np.sort(u[: u.size // 2]), u[u.size // 2 :]

    # Selection half: counts at or above every candidate threshold, both directions at once.
    # Candidates sit midway between consecutive distinct scores (same counts as the scores
    # themselves here, but less tied to this half's exact values).
    distinct = np.unique(np.r_[m_sel, u_sel])
    thresholds = np.r_[distinct[0], (distinct[1:] + distinct[:-1]) / 2]
    tp = m_sel.size - np.searchsorted(m_sel, thresholds, side="left")
    fp = u_sel.size - np.searchsorted(u_sel, thresholds, side="left")
    by_tpr = _bounded_epsilon(tp, m_sel.size, fp, u_sel.size, delta, alpha)
    by_tnr = _bounded_epsilon(
        u_sel.size - fp, u_sel.size, m_sel.size - tp, m_sel.size, delta, alpha
    )
    use_tnr = by_tnr.max() > by_tpr.max()
    threshold = float(thresholds[np.argmax(by_tnr if use_tnr else by_tpr)])

    # Evaluation half: one threshold, one direction, so the CP guarantee applies.
    tp_e, fp_e = int((m_eval >= threshold).sum()), int((u_eval >= threshold).sum())
    if use_tnr:  # hits are non-members below t, false alarms are members below t
        counts = (u_eval.size - fp_e, u_eval.size, m_eval.size - tp_e, m_eval.size)
    else:
        counts = (tp_e, m_eval.size, fp_e, u_eval.size)
    k_pos, n_pos, k_neg, n_neg = counts
    lower = float(_bounded_epsilon(*counts, delta, alpha))
    upper = float(_bounded_epsilon(*counts, delta, alpha, lower=False))
    # Plug-in: a false-alarm rate of 0 is shown as 1/n, the smallest the sample can resolve.
    point = float(_log_ratio(k_pos / n_pos - delta, max(k_neg, 1) / n_neg))
    return {
        "epsilon_lower_bound": max(0.0, lower),
        "epsilon_point": max(0.0, point),
        "epsilon_upper": None if math.isinf(upper) and upper > 0 else max(0.0, upper),
        "threshold": threshold,
        "direction": "tnr" if use_tnr else "tpr",
        "alpha": alpha,
        "delta": delta,
        "n_eval": int(m_eval.size + u_eval.size),
    }


def nearest_neighbours(
    queries: Tensor, references: Tensor, *, chunk: int = 1024
) -> tuple[Tensor, Tensor]:
    """L2 distance in flattened pixel space from each query to its closest reference.

    The distance matrix is built ``chunk`` queries at a time (5,000 x 5,000 at 784 dims needs
    about 20 MB per chunk), and the winning distance is recomputed exactly, because cdist's
    matrix-product shortcut loses precision near 0 (an exact copy must read 0).

    Args:
        queries: Tensor (N, ...), flattened per row.
        references: Tensor (M, ...) with the same number of values per row; M >= 1.
        chunk: Queries per block.

    Returns:
        ``(distances (N,), indices (N,))`` on the queries' device.

    Raises:
        ValueError: If the references are empty or the row sizes differ.
    """
    q = queries.detach().reshape(len(queries), -1).float()
    r = references.detach().reshape(len(references), -1).float().to(q.device)
    if r.shape[0] == 0:
        raise ValueError("nearest_neighbours needs at least one reference")
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"queries have {q.shape[1]} values per row, references {r.shape[1]}")
    idx = torch.cat(
        [torch.cdist(q[i : i + chunk], r).argmin(dim=1) for i in range(0, len(q), chunk)]
        or [torch.empty(0, dtype=torch.long, device=q.device)]
    )
    return (q - r[idx]).norm(dim=1), idx


def dcr_ratio(generated: Tensor, members: Tensor, nonmembers: Tensor) -> float:
    """Median distance to the closest member over the median distance to the closest non-member.

    Below 1 means generated samples sit closer to the training data than to unseen data of the
    same distribution: the model memorises. ``members`` and ``nonmembers`` must be equal-sized
    (the caller subsamples), because the nearest-neighbour distance shrinks as a set grows.

    Args:
        generated: Samples (G, ...) from the model.
        members: Training samples (N, ...).
        nonmembers: Held-out samples (N, ...).

    Returns:
        The ratio; inf when only the non-member median is 0, and 1.0 when both are 0.

    Raises:
        ValueError: If any set is empty.
    """
    for name, x in (("generated", generated), ("members", members), ("nonmembers", nonmembers)):
        if len(x) == 0:
            raise ValueError(f"dcr_ratio: {name} is empty")
    to_members = nearest_neighbours(generated, members)[0].median().item()
    to_nonmembers = nearest_neighbours(generated, nonmembers)[0].median().item()
    if to_nonmembers == 0:
        return 1.0 if to_members == 0 else math.inf
    return to_members / to_nonmembers


def most_exposed(member_scores: Scores, *, k: int = 16) -> list[int]:
    """Indices of the k members with the highest membership evidence, highest first.

    Args:
        member_scores: Membership evidence of the members.
        k: How many to return (fewer when there are fewer members); ties keep index order.

    Raises:
        ValueError: On empty or non-finite scores, or k < 1.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1 (got {k})")
    m = _scores(member_scores, "member_scores")
    return np.argsort(-m, kind="stable")[:k].tolist()
