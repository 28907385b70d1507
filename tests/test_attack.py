"""The membership-audit metrics on synthetic scores whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genlab.privacy.attack import (
    attack_metrics,
    clopper_pearson,
    dcr_ratio,
    empirical_epsilon,
    most_exposed,
    nearest_neighbours,
    roc_points,
    tpr_at_fpr,
)


def _separated(n: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(n) + n + 0.5, np.arange(n, dtype=float)


def _randomised_response(eps: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An eps-DP mechanism: a member answers 1 w.p. e^eps/(1+e^eps), a non-member the reverse."""
    rng = np.random.default_rng(seed)
    p = math.exp(eps) / (1 + math.exp(eps))
    members = (rng.random(n) < p) + 1e-6 * rng.random(n)
    nonmembers = (rng.random(n) < 1 - p) + 1e-6 * rng.random(n)
    return members, nonmembers


def test_clopper_pearson_known_values():
    lo, hi = clopper_pearson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 10), abs=1e-9)
    assert hi == pytest.approx(0.3085, abs=1e-4)
    lo, hi = clopper_pearson(20, 20)
    assert hi == 1.0 and lo == pytest.approx(0.025 ** (1 / 20), abs=1e-9)
    assert clopper_pearson(5, 10) == pytest.approx((0.1871, 0.8129), abs=1e-4)
    lo99, hi99 = clopper_pearson(5, 10, alpha=0.01)
    assert lo99 < 0.1871 and hi99 > 0.8129
    with pytest.raises(ValueError, match="0 <= k <= n"):
        clopper_pearson(11, 10)


def test_random_scores_show_no_leak():
    rng = np.random.default_rng(0)
    members, nonmembers = rng.normal(size=1000), rng.normal(size=1000)
    metrics = attack_metrics(members, nonmembers)
    assert 0.45 <= metrics["auc"] <= 0.55
    assert metrics["tpr_at_1pct_fpr"] < 0.05
    bound = empirical_epsilon(members, nonmembers, delta=1e-5)
    assert bound["epsilon_lower_bound"] < 0.3
    assert bound["n_eval"] == 1000 and bound["direction"] in ("tpr", "tnr")


def test_perfect_separation():
    members, nonmembers = _separated()
    metrics = attack_metrics(members, nonmembers)
    assert metrics["auc"] == 1.0
    assert metrics["tpr_at_1pct_fpr"] == 1.0 and metrics["tpr_at_0_1pct_fpr"] == 1.0
    bound = empirical_epsilon(members, nonmembers, delta=1e-5)
    assert bound["epsilon_lower_bound"] > 3
    assert bound["direction"] == "tpr" and 999 < bound["threshold"] < 1001
    # No false positive among 500: the plug-in estimate is capped at log(500); the top is inf.
    assert bound["epsilon_point"] == pytest.approx(math.log(500), abs=1e-3)
    assert bound["epsilon_upper"] is None
    assert bound["epsilon_lower_bound"] < bound["epsilon_point"]


def test_tpr_at_fpr_hand_built():
    # Threshold 0.8 -> TPR 2/4, FPR 0; 0.6 (a tie) -> 3/4, 1/4; 0.3 -> 4/4, 2/4.
    members = [0.9, 0.8, 0.6, 0.3]
    nonmembers = [0.6, 0.5, 0.2, 0.1]
    assert tpr_at_fpr(members, nonmembers, 0.0) == 0.5
    assert tpr_at_fpr(members, nonmembers, 0.25) == 0.75
    assert tpr_at_fpr(members, nonmembers, 0.49) == 0.75
    assert tpr_at_fpr(members, nonmembers, 0.5) == 1.0


def test_tpr_at_0_1pct_needs_1000_nonmembers():
    rng = np.random.default_rng(1)
    few = attack_metrics(rng.normal(1, 1, 360), rng.normal(0, 1, 360))
    assert few["tpr_at_0_1pct_fpr"] is None
    assert "1,000" in few["tpr_at_0_1pct_fpr_reason"] and "360" in few["tpr_at_0_1pct_fpr_reason"]
    assert few["n_members"] == 360 and few["n_nonmembers"] == 360
    enough = attack_metrics(rng.normal(1, 1, 1000), rng.normal(0, 1, 1000))
    assert 0 <= enough["tpr_at_0_1pct_fpr"] <= enough["tpr_at_1pct_fpr"] <= 1
    assert enough["tpr_at_0_1pct_fpr_reason"] is None


def test_empirical_epsilon_is_valid_for_randomised_response():
    # eps = 1: a valid 95% bound overshoots the truth rarely (at most 10% of 40 seeds).
    over = [
        empirical_epsilon(*_randomised_response(1.0, 500, s), delta=1e-5, seed=s)[
            "epsilon_lower_bound"
        ]
        > 1.0
        for s in range(40)
    ]
    assert sum(over) <= 4
    # eps = 4: the audit finds clear evidence, and never more than the truth on average.
    bounds = [
        empirical_epsilon(*_randomised_response(4.0, 500, s), delta=1e-5, seed=s)[
            "epsilon_lower_bound"
        ]
        for s in range(40)
    ]
    assert 1.0 < np.mean(bounds) < 4.0
    assert min(bounds) >= 0.0


def test_empirical_epsilon_is_seeded_and_never_negative():
    members, nonmembers = _randomised_response(2.0, 200, 0)
    first = empirical_epsilon(members, nonmembers, delta=1e-5, seed=3)
    assert first == empirical_epsilon(members, nonmembers, delta=1e-5, seed=3)
    # Members scored *lower* than non-members: no evidence in the convention, bound 0.
    flipped = empirical_epsilon(-members, -nonmembers + 10, delta=1e-5)
    assert flipped["epsilon_lower_bound"] == 0.0 and flipped["epsilon_point"] >= 0.0


def test_roc_points_thinned_for_log_log():
    rng = np.random.default_rng(2)
    members, nonmembers = rng.normal(1, 1, 3000), rng.normal(0, 1, 3000)
    full = roc_points(members, nonmembers, max_points=10_000)
    roc = roc_points(members, nonmembers, max_points=64)
    assert len(full["fpr"]) > 64 and len(roc["fpr"]) <= 64 and len(roc["fpr"]) == len(roc["tpr"])
    fpr, tpr = np.array(roc["fpr"]), np.array(roc["tpr"])
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert fpr[0] == 0.0 and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    # The low-FPR region keeps its share: about a third of the points lie below FPR 1%.
    assert (fpr[fpr > 0] < 0.01).sum() >= 15
    # Every kept point lies on the full curve.
    pairs = set(zip(full["fpr"], full["tpr"]))
    assert all(p in pairs for p in zip(roc["fpr"], roc["tpr"]))


def test_nearest_neighbours_matches_brute_force():
    gen = torch.Generator().manual_seed(0)
    queries, refs = torch.rand(37, 1, 4, 4, generator=gen), torch.rand(23, 1, 4, 4, generator=gen)
    dist, idx = nearest_neighbours(queries, refs, chunk=8)
    for i, q in enumerate(queries):
        d = torch.stack([torch.linalg.norm(q - r) for r in refs])
        assert idx[i].item() == d.argmin().item()
        assert dist[i].item() == pytest.approx(d.min().item(), abs=1e-5)
    assert dist.shape == idx.shape == (37,)


def test_dcr_ratio_copies_and_iid():
    gen = torch.Generator().manual_seed(0)
    members = torch.rand(300, 1, 8, 8, generator=gen)
    nonmembers = torch.rand(300, 1, 8, 8, generator=gen)
    assert dcr_ratio(members[:100].clone(), members, nonmembers) < 0.05
    generated = torch.rand(300, 1, 8, 8, generator=gen)
    assert 0.9 <= dcr_ratio(generated, members, nonmembers) <= 1.1


def test_most_exposed_orders_by_evidence():
    scores = np.array([0.1, 0.9, 0.5, 0.9, 0.3])
    assert most_exposed(scores, k=3) == [1, 3, 2]
    assert most_exposed(torch.tensor(scores), k=10) == [1, 3, 2, 4, 0]


@pytest.mark.parametrize(
    "members, nonmembers, message",
    [
        ([], [0.1, 0.2], "member_scores is empty"),
        ([0.1, 0.2], np.array([]), "nonmember_scores is empty"),
        ([0.1, float("nan")], [0.1, 0.2], "member_scores has 1 non-finite"),
        ([0.1, 0.2], [0.3, float("inf")], "nonmember_scores has 1 non-finite"),
    ],
)
def test_bad_input_raises(members, nonmembers, message):
    with pytest.raises(ValueError, match=message):
        attack_metrics(members, nonmembers)
    with pytest.raises(ValueError, match=message):
        empirical_epsilon(members, nonmembers, delta=1e-5)
    with pytest.raises(ValueError, match=message):
        roc_points(members, nonmembers)
