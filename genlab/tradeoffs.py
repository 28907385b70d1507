"""The trade-off analysis: every run on the three axes, seeds summarised, the Pareto front.

Pure pandas and numpy; the figures live in :mod:`genlab.tradeoff_plots`, the page in the
dashboard. The pieces:

- :data:`AXES`: the plottable metrics, each with a label (units included), the axis it belongs to
  (performance, interpretability, privacy, cost, and efficiency: the fourth axis, on which
  compressed runs differ) and whether higher or lower is better;
- :func:`runs_frame`: one row per run; a metric a record lacks is NaN. ``epsilon`` is the
  accountant's ε, ``inf`` for a run trained without DP (no guarantee), NaN where unknown. A run
  made from others (``genlab compress`` / ``fuse``) names its ``derived`` method and ``parent``
  runs, and groups apart from its parents;
- :func:`seed_summary`: one row per *group* of runs that differ only by their seeds, with the
  mean and standard deviation of every metric;
- :func:`pareto_mask`: the non-dominated points of a set;
- :func:`filter_frame`: the dataset, model, ε and run filters of the Trade-offs page.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from genlab.runs import RunInfo

DIRECTIONS = ("higher", "lower")


@dataclass(frozen=True)
class Metric:
    """One plottable metric of the record.

    Attributes:
        key: ``<block>.<name>`` in the record, e.g. ``"performance.cas"``; also its column name.
        label: What an axis title says, units included.
        short: A few characters for legends, tables and hover text.
        axis: ``performance``, ``interpretability``, ``privacy``, ``cost`` or ``efficiency``.
        direction: ``"higher"`` or ``"lower"``: which values are better.
    """

    key: str
    label: str
    short: str
    axis: str
    direction: str

    @property
    def block(self) -> str:
        return self.key.split(".", 1)[0]

    @property
    def name(self) -> str:
        return self.key.split(".", 1)[1]


def _metric(key: str, short: str, label: str, direction: str) -> tuple[str, Metric]:
    return key, Metric(key, label, short, key.split(".", 1)[0], direction)


AXES: dict[str, Metric] = dict([
    # privacy: smaller ε is more private; the attack's success and the bound it proves too
    _metric("privacy.epsilon", "ε", "ε (DP budget, log scale; ∞ = no DP)", "lower"),
    _metric("privacy.mia_auc", "attack AUC", "membership attack AUC (0.5 = guessing)", "lower"),
    _metric("privacy.mia_tpr_at_1pct_fpr", "TPR@1%FPR", "attack TPR at 1% FPR (members caught)",
            "lower"),
    _metric("privacy.epsilon_lower_bound", "empirical ε", "empirical ε lower bound (attack, 95%)",
            "lower"),
    _metric("privacy.dcr_ratio", "DCR ratio", "DCR ratio (below 1: memorises)", "higher"),
    # performance
    _metric("performance.cas", "CAS", "CAS (accuracy of a classifier trained on samples)",
            "higher"),
    _metric("performance.fd", "FD", "FD (reference-classifier features; not FID)", "lower"),
    _metric("performance.precision", "precision", "precision (PRDC, k=5)", "higher"),
    _metric("performance.recall", "recall", "recall (PRDC, k=5)", "higher"),
    _metric("performance.density", "density", "density (PRDC, k=5)", "higher"),
    _metric("performance.coverage", "coverage", "coverage (PRDC, k=5)", "higher"),
    _metric("performance.nll_bpd", "NLL", "test NLL (bits per dimension)", "lower"),
    # interpretability: the components lie in [0, 1]; Captum's raw values are kept too
    _metric("interpretability.score", "interp. score", "interpretability score (0–1)", "higher"),
    _metric("interpretability.faithfulness", "faithfulness",
            "faithfulness (IG deletion; 0.5 = random)", "higher"),
    _metric("interpretability.stability", "stability", "stability (1 / (1 + sensitivity))",
            "higher"),
    _metric("interpretability.mig", "MIG", "MIG (mutual information gap, 0–1)", "higher"),
    _metric("interpretability.infidelity", "infidelity", "infidelity (Captum, raw)", "lower"),
    _metric("interpretability.sensitivity_max", "sensitivity", "max sensitivity (Captum, raw)",
            "lower"),
    # cost
    _metric("cost.train_seconds", "train time", "training time (seconds)", "lower"),
    _metric("cost.params", "params", "parameters (count)", "lower"),
    _metric("cost.samples_per_second", "sampling speed", "sampling speed (images per second)",
            "higher"),
    # efficiency: what compression buys (genlab.efficiency)
    _metric("efficiency.size_bytes", "size", "weights on disk (bytes)", "lower"),
    _metric("efficiency.sample_seconds", "latency", "sampling latency (s per 64 images, median)",
            "lower"),
    _metric("efficiency.params_nonzero", "nonzero params", "nonzero parameters (count)", "lower"),
])
EPSILON = "privacy.epsilon"
DEFAULT_X, DEFAULT_Y = EPSILON, "performance.cas"
DEFAULT_COLOUR = "interpretability.score"
# One metric per axis, plus ε: the scatter matrix and the parallel coordinates.
THREE_AXES = ("performance.cas", "interpretability.score", "privacy.mia_auc", EPSILON)
EFFICIENCY = "efficiency.size_bytes"  # the fourth axis's default metric (deterministic)

RUN_COLUMNS = ("id", "model", "dataset", "seed", "data_seed", "epsilon", "dp", "group",
               "variant", "derived", "parent", "status", "created")


def metric(key: str) -> Metric:
    """The :class:`Metric` of ``key``; ValueError naming the known keys if there is none."""
    if key not in AXES:
        raise ValueError(f"unknown metric '{key}'; known metrics: {', '.join(AXES)}")
    return AXES[key]


# ----------------------------------------------------------------------------- runs
def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _without_seeds(config: dict) -> dict:
    """The config without ``data.seed`` and ``train.seed``: runs that differ only by seed match."""
    out = copy.deepcopy(config)
    for block in ("data", "train"):
        if isinstance(out.get(block), dict):
            out[block].pop("seed", None)
    return out


def group_key(config: dict) -> str:
    """A 12-hex hash of the run config without its seeds: equal for runs that differ only by
    ``config["data"]["seed"]`` and ``config["train"]["seed"]``."""
    return _hash(_without_seeds(config))


def variant_key(config: dict) -> str:
    """The model setup: the model, its settings and the data (without the seed). A line of the ε
    curves joins one setup's groups at every ε; the training and privacy settings may differ
    along it, since a DP run may train with its own batch size and epochs."""
    out = _without_seeds(config)
    return _hash({key: out.get(key) for key in ("model", "model_config", "data")})


def _number(value: Any) -> float:
    """A record value as a float; NaN for None, text, lists or anything else not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


def lineage_of_record(info: RunInfo) -> tuple[str, str]:
    """``(derived, parent)`` of a run: its method as given (``prune:0.5``, ``average``) and its
    parents' ids joined by commas; both empty for a trained run."""
    block = info.record.get("lineage") or {}
    if not isinstance(block, dict) or not block.get("spec"):
        return "", ""
    return str(block["spec"]), ",".join(map(str, block.get("parents") or []))


def matrix_keys(summary: pd.DataFrame) -> tuple[str, ...]:
    """The scatter matrix's and parallel coordinates' default metrics: :data:`THREE_AXES`, plus
    :data:`EFFICIENCY` as a fourth axis when every group has it (runs evaluated before the
    efficiency block existed lack it, and a figure drops the groups that lack a metric)."""
    has = EFFICIENCY in summary and len(summary) and summary[EFFICIENCY].notna().all()
    return (*THREE_AXES[:-1], EFFICIENCY, THREE_AXES[-1]) if has else THREE_AXES


def axes_title(keys: Sequence[str]) -> str:
    """A figure's title for metrics ``keys``: "The three axes" for :data:`THREE_AXES`, else the
    axes they belong to ("Performance, interpretability, privacy and efficiency")."""
    if tuple(keys) == THREE_AXES:
        return "The three axes"
    axes = list(dict.fromkeys(metric(k).axis for k in keys))
    text = axes[0] if len(axes) == 1 else ", ".join(axes[:-1]) + " and " + axes[-1]
    return text[:1].upper() + text[1:]


def run_epsilon(info: RunInfo) -> float:
    """The accountant's ε of a run: ``inf`` without DP, NaN for a DP run whose ε is unknown."""
    if not info.config.get("privacy"):
        return math.inf
    for source in (info.record.get("privacy") or {}, info.summary.get("privacy") or {}):
        value = _number(source.get("epsilon"))
        if not math.isnan(value):
            return value
    return math.nan


def runs_frame(runs: Iterable[RunInfo]) -> pd.DataFrame:
    """One row per run: identity columns, then every :data:`AXES` metric as a column.

    Columns: ``id``, ``model``, ``dataset``, ``seed`` (the training seed), ``data_seed``,
    ``epsilon`` (``inf`` without DP), ``dp``, ``group`` (:func:`group_key`), ``variant``
    (:func:`variant_key`), ``derived`` and ``parent`` (:func:`lineage_of_record`), ``status``,
    ``created`` (a Unix time), then the metric keys. A block or key a record lacks is NaN; the
    ``privacy.epsilon`` column equals ``epsilon``. A derived run's group and variant also hash its
    method, so a compressed run is never averaged with its parent as if it were another seed.
    """
    rows = []
    for info in runs:
        config = info.config or {}
        derived, parent = lineage_of_record(info)
        group, variant = group_key(config), variant_key(config)
        if derived:
            group, variant = _hash([group, derived]), _hash([variant, derived])
        row = {
            "id": info.id, "model": info.model, "dataset": info.dataset,
            "seed": config.get("train", {}).get("seed"),
            "data_seed": config.get("data", {}).get("seed"),
            "epsilon": run_epsilon(info), "dp": bool(config.get("privacy")),
            "group": group, "variant": variant, "derived": derived, "parent": parent,
            "status": info.status, "created": float(info.created),
        }
        for key, m in AXES.items():
            row[key] = _number((info.record.get(m.block) or {}).get(m.name))
        row[EPSILON] = row["epsilon"]
        rows.append(row)
    frame = pd.DataFrame(rows, columns=[*RUN_COLUMNS, *AXES])
    return frame.astype({key: float for key in AXES} | {"epsilon": float})


# ----------------------------------------------------------------------------- seeds
def sd_column(key: str) -> str:
    """The name of a metric's standard-deviation column in :func:`seed_summary`."""
    return f"{key} sd"


def count_column(key: str) -> str:
    """The name of a metric's count column (seeds that have the metric) in :func:`seed_summary`."""
    return f"{key} n"


def format_epsilon(eps: float) -> str:
    """``inf`` -> ``∞``, NaN -> ``?``, else three significant figures."""
    if math.isnan(eps):
        return "?"
    return "∞" if math.isinf(eps) else f"{eps:.3g}"


def seed_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per group of runs that differ only by seed (see :func:`group_key`).

    For every metric ``K`` the row holds the mean over the group's runs that have it (``K``), the
    sample standard deviation with ddof=1 (``K sd``) and how many runs have it (``K n``). With one
    run the sd is **NaN** (not 0): one seed says nothing about the spread, and the figures draw no
    error bar for it. ε is the same for every seed of a group (it depends on the noise, the
    sampling rate and the steps, not the seed), so its mean is the group's ε and ``inf`` stays
    ``inf``.

    Columns: ``group``, ``model``, ``dataset``, ``variant``, ``derived``, ``epsilon``, ``dp``,
    ``n`` (runs), ``seeds``, ``run_ids`` (lists), ``label`` (e.g. ``vae ε=4``, or
    ``vae ε=4 int8`` for a derived group; made unique with the group hash where two groups would
    share it), then each metric's three columns. Groups are sorted by
    model, then ε.
    """
    columns = ["group", "model", "dataset", "variant", "derived", "epsilon", "dp", "n", "seeds",
               "run_ids", "label"]
    columns += [c for key in AXES for c in (key, sd_column(key), count_column(key))]
    rows = []
    for group, runs in frame.groupby("group", sort=False):
        first = runs.iloc[0]
        row = {"group": group, "model": first["model"], "dataset": first["dataset"],
               "variant": first["variant"], "derived": first.get("derived", ""),
               "dp": bool(first["dp"]), "n": len(runs),
               "seeds": runs["seed"].tolist(), "run_ids": runs["id"].tolist()}
        for key in AXES:
            values = runs[key].dropna()
            row[count_column(key)] = len(values)
            if key == EPSILON or not len(values):
                row[key] = values.mean() if len(values) else math.nan
                row[sd_column(key)] = math.nan
                continue
            row[key] = float(values.mean())
            row[sd_column(key)] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        row["epsilon"] = row[EPSILON]
        row["label"] = f"{row['model']} ε={format_epsilon(row['epsilon'])}"
        if row["derived"]:
            row["label"] += f" {row['derived']}"
        rows.append(row)
    summary = pd.DataFrame(rows, columns=columns)
    clash = summary["label"].duplicated(keep=False)
    summary.loc[clash, "label"] += " [" + summary.loc[clash, "group"].str[:6] + "]"
    order = summary.assign(_eps=summary["epsilon"].fillna(-1.0)).sort_values(["model", "_eps"])
    return summary.loc[order.index].reset_index(drop=True)


# ----------------------------------------------------------------------------- Pareto
def pareto_mask(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Which rows are Pareto-optimal (non-dominated).

    Row ``j`` dominates row ``i`` when it is at least as good in every column and strictly
    better in one; equal rows do not dominate each other, so ties are all optimal. A row with a
    NaN is never optimal and dominates nothing. Infinities compare as numbers: ε = ``inf`` (no
    DP) with direction ``"lower"`` is the least private value. O(n²) in the number of rows.

    Args:
        values: ``(n, k)`` array, one row per point.
        directions: ``k`` entries, ``"higher"`` or ``"lower"``: which values are better.

    Returns:
        A boolean array of length ``n``.

    Raises:
        ValueError: a direction that is neither, or a count that does not match the columns.
    """
    v = np.asarray(values, dtype=float)
    if v.ndim != 2:
        raise ValueError(f"values must be a 2-D array (n points, k metrics); got shape {v.shape}")
    if len(directions) != v.shape[1]:
        raise ValueError(f"{len(directions)} directions for {v.shape[1]} metrics")
    bad = [d for d in directions if d not in DIRECTIONS]
    if bad:
        raise ValueError(f"direction must be 'higher' or 'lower' (got {bad[0]!r})")
    better = np.where(np.array(directions) == "higher", v, -v)  # larger is better in every column
    valid = ~np.isnan(better).any(axis=1)
    mask = valid.copy()
    candidates = better[valid]
    for i in np.flatnonzero(valid):
        at_least = (candidates >= better[i]).all(axis=1)
        strictly = (candidates > better[i]).any(axis=1)
        mask[i] = not (at_least & strictly).any()
    return mask


def pareto_of(summary: pd.DataFrame, keys: Sequence[str]) -> np.ndarray:
    """:func:`pareto_mask` of a frame's metric columns ``keys``, with each metric's direction."""
    return pareto_mask(summary[list(keys)].to_numpy(dtype=float),
                       [metric(key).direction for key in keys])


# ----------------------------------------------------------------------------- filters
def epsilon_values(frame: pd.DataFrame) -> list[float]:
    """The distinct finite ε of a frame, rounded to 3 significant figures, ascending: the stops
    of the page's ε range slider."""
    finite = frame["epsilon"][np.isfinite(frame["epsilon"])]
    return sorted({float(f"{e:.3g}") for e in finite})


def filter_frame(
    frame: pd.DataFrame,
    *,
    dataset: str | None = None,
    models: Iterable[str] | None = None,
    epsilon_range: tuple[float, float] | None = None,
    include_no_dp: bool = True,
    run_ids: Iterable[str] | None = None,
) -> pd.DataFrame:
    """The rows of a :func:`runs_frame` that pass every given filter.

    Args:
        dataset: Keep this dataset only.
        models: Keep these models (None: all).
        epsilon_range: Keep DP runs with ``lo <= ε <= hi`` (compared at 3 significant figures,
            like :func:`epsilon_values`); runs with an unknown ε are dropped by a range.
        include_no_dp: Keep the runs without DP (ε = ∞).
        run_ids: Keep these runs only (None or empty: all).
    """
    keep = pd.Series(True, index=frame.index)
    if dataset is not None:
        keep &= frame["dataset"] == dataset
    if models is not None:
        keep &= frame["model"].isin(list(models))
    eps = frame["epsilon"]
    no_dp = np.isinf(eps)
    if epsilon_range is not None:
        lo, hi = epsilon_range
        rounded = eps.map(lambda e: float(f"{e:.3g}") if math.isfinite(e) else e)
        keep &= no_dp | ((rounded >= lo) & (rounded <= hi))
    if not include_no_dp:
        keep &= ~no_dp
    ids = list(run_ids or [])
    if ids:
        keep &= frame["id"].isin(ids)
    return frame[keep]
