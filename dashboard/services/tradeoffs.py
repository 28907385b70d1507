"""The Trade-offs page's logic: which runs it shows (the store's, else the demo records), their
frames and figures, the view kept in the URL, and the exports.

The page shows finished runs that have a record. When the store has none, it falls back to the
demo records at ``$GENLAB_DEMO_RECORDS`` (default ``assets/demo/records.json``) and says so; a
missing file simply means no demo. Frames are cached per set of runs (ids and update times), so
a run that finishes or is re-evaluated shows up on the next rerun.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import streamlit as st

from genlab.errors import GenlabError
from genlab.export import export_runs, read_records
from genlab.report import build_report
from genlab.runs import RunInfo
from genlab.tradeoff_plots import (  # noqa: F401  (re-exported for the page)
    epsilon_curves_figure,
    parallel_figure,
    pareto_figure,
    scatter_matrix_figure,
)
from genlab.tradeoffs import (  # noqa: F401  (AXES, filter_frame, matrix_keys: re-exported)
    AXES,
    DEFAULT_X,
    DEFAULT_Y,
    epsilon_values,
    filter_frame,
    format_epsilon,
    matrix_keys,
    runs_frame,
    seed_summary,
)

from .core import get_store

DEMO_ENV = "GENLAB_DEMO_RECORDS"
DEMO_RECORDS = Path(__file__).resolve().parents[2] / "assets" / "demo" / "records.json"
TABLE_COLUMNS = {"id": "run", "model": "model", "derived": "made by", "parent": "from",
                 "seed": "seed", "epsilon": "ε",
                 "performance.cas": "CAS", "performance.fd": "FD",
                 "interpretability.score": "interp. score", "privacy.mia_auc": "attack AUC",
                 "privacy.mia_tpr_at_1pct_fpr": "TPR@1%FPR",
                 "privacy.epsilon_lower_bound": "empirical ε ≥",
                 "cost.train_seconds": "train s", "efficiency.size_bytes": "bytes",
                 "efficiency.sample_seconds": "latency s", "created": "created"}


# Three significant figures everywhere; ε stays a number (∞ without DP) so the column sorts.
TABLE_FORMATS = {
    **{name: st.column_config.NumberColumn(name, format="%.3g", help=AXES[key].label)
       for key, name in TABLE_COLUMNS.items() if key in AXES},
    "ε": st.column_config.NumberColumn("ε", format="%.3g",
                                       help="The accountant's ε; Infinity: trained without DP"),
    "bytes": st.column_config.NumberColumn("bytes", format="localized",
                                           help=AXES["efficiency.size_bytes"].label),
    "made by": st.column_config.TextColumn(
        "made by", help="genlab compress or fuse: the method that made this run from others"),
    "from": st.column_config.TextColumn("from", help="the run(s) this one was made from"),
    "created": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm"),
}


@dataclass(frozen=True)
class TradeoffRuns:
    """The runs the page shows and where they come from.

    Attributes:
        runs: Finished runs with a record.
        frame: Their :func:`genlab.tradeoffs.runs_frame`.
        demo: The demo file's ``meta`` (device, date, torch, command) when these are demo runs.
        problem: Why the demo could not be loaded, if it could not.
    """

    runs: list[RunInfo]
    frame: pd.DataFrame
    demo: dict | None = None
    problem: str | None = None
    by_id: dict[str, RunInfo] = field(default_factory=dict)


def demo_path() -> Path:
    """Where the demo records live: ``$GENLAB_DEMO_RECORDS`` or ``assets/demo/records.json``."""
    return Path(os.environ.get(DEMO_ENV) or DEMO_RECORDS)


@st.cache_data(show_spinner=False, max_entries=4)
def _demo_at(path: str, mtime: float) -> tuple[dict, list[RunInfo]]:
    meta, runs = read_records(Path(path).read_text(encoding="utf-8"))
    return meta, [r for r in runs if r.status == "finished" and r.record]


@st.cache_data(show_spinner=False, max_entries=8)
def _frame(key: str, _runs: list[RunInfo]) -> pd.DataFrame:
    return runs_frame(_runs)


def _key(source: str, runs: list[RunInfo]) -> str:
    text = source + "".join(f"|{r.id}:{r.updated}" for r in runs)
    return hashlib.sha256(text.encode()).hexdigest()


def tradeoff_runs() -> TradeoffRuns:
    """The store's finished runs with a record; if there are none, the demo records."""
    store = get_store()
    store.recover()
    runs = [r for r in store.list(status="finished") if r.record]
    demo, problem, source = None, None, str(store.home)
    if not runs:
        path = demo_path()
        if path.is_file():
            try:
                demo, runs = _demo_at(str(path), path.stat().st_mtime)
                source = f"demo:{path}"
            except (GenlabError, OSError, UnicodeDecodeError) as err:
                problem = f"The demo records {path} could not be read: {err}"
    frame = _frame(_key(source, runs), runs)
    return TradeoffRuns(runs, frame, demo, problem, {r.id: r for r in runs})


def tradeoff_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """:func:`genlab.tradeoffs.seed_summary` of the filtered runs (cheap: not cached)."""
    return seed_summary(frame)


def tradeoff_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The filtered runs as a display table: headline metrics, ε as a number (∞ without DP)."""
    table = frame[list(TABLE_COLUMNS)].rename(columns=TABLE_COLUMNS)
    # records read from a file may carry no time (0): shown blank, not as 1970
    created = table["created"].where(table["created"] > 0)
    table["created"] = pd.to_datetime(created, unit="s").dt.floor("s")
    return table.sort_values(["model", "made by", "ε", "seed"]).reset_index(drop=True)


def axis_label(key: str) -> str:
    """The picker's label of a metric: ``CAS — CAS (accuracy ...)``, with its axis."""
    m = AXES[key]
    return f"{m.axis}: {m.label}"


# ----------------------------------------------------------------------------- the URL
@dataclass
class TradeoffView:
    """What the page shows; every field round-trips through the URL (:func:`view_params`)."""

    dataset: str
    models: list[str]
    x: str = DEFAULT_X
    y: str = DEFAULT_Y
    epsilon_range: tuple[float, float] | None = None
    include_no_dp: bool = True
    runs: list[str] = field(default_factory=list)


def default_view(frame: pd.DataFrame, dataset: str | None = None) -> TradeoffView:
    """All models of the dataset with most runs (or ``dataset``), ε vs CAS, every ε."""
    if dataset is None:
        dataset = frame["dataset"].value_counts().index[0]
    rows = frame[frame["dataset"] == dataset]
    stops = epsilon_values(rows)
    return TradeoffView(dataset=dataset, models=sorted(rows["model"].unique()),
                epsilon_range=(stops[0], stops[-1]) if stops else None)


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_view(params: Mapping[str, str], frame: pd.DataFrame) -> tuple[TradeoffView, list[str]]:
    """The view a URL's query params name, and a message for each bad value (which falls back to
    its default). Params: ``dataset``, ``models`` and ``runs`` (comma-separated), ``x``, ``y``
    (metric keys), ``eps`` (``lo,hi``) and ``nodp`` (``1`` or ``0``)."""
    problems = []
    datasets = sorted(frame["dataset"].unique())
    dataset = params.get("dataset")
    if dataset is not None and dataset not in datasets:
        problems.append(f"Unknown dataset '{dataset}' in the link; showing "
                        f"'{default_view(frame).dataset}' (known: {', '.join(datasets)}).")
        dataset = None
    view = default_view(frame, dataset)
    rows = frame[frame["dataset"] == view.dataset]
    if "models" in params:
        wanted, known = _split(params["models"]), set(rows["model"])
        bad = [m for m in wanted if m not in known]
        if bad:
            problems.append(f"Unknown model(s) {', '.join(repr(m) for m in bad)} in the link for "
                            f"{view.dataset} (known: {', '.join(sorted(known))}).")
        view.models = sorted({m for m in wanted if m in known}) or view.models
    for name in ("x", "y"):
        key = params.get(name)
        if key is not None and key not in AXES:
            problems.append(f"Unknown metric '{key}' for {name} in the link; using "
                            f"'{getattr(view, name)}'.")
        elif key is not None:
            setattr(view, name, key)
    if "eps" in params:
        stops = epsilon_values(rows)
        try:
            lo, hi = (float(v) for v in params["eps"].split(","))
            if lo not in stops or hi not in stops or lo > hi:
                raise ValueError
            view.epsilon_range = (lo, hi)
        except ValueError:
            shown = ", ".join(format_epsilon(s) for s in stops) or "none"
            problems.append(f"Bad ε range '{params['eps']}' in the link; it must be two of the "
                            f"runs' ε values ({shown}), low first.")
    if "nodp" in params:
        if params["nodp"] in ("0", "1"):
            view.include_no_dp = params["nodp"] == "1"
        else:
            problems.append(f"Bad nodp '{params['nodp']}' in the link; use 1 or 0.")
    if "runs" in params:
        wanted, known = _split(params["runs"]), set(rows["id"])
        bad = [r for r in wanted if r not in known]
        if bad:
            problems.append(f"Unknown run(s) {', '.join(bad)} in the link for {view.dataset}; "
                            "they are left out.")
        view.runs = [r for r in wanted if r in known]
    return view, problems


def view_params(view: TradeoffView) -> dict[str, str]:
    """The query params that reproduce ``view`` (the inverse of :func:`parse_view`)."""
    params = {"dataset": view.dataset, "models": ",".join(view.models), "x": view.x,
              "y": view.y, "nodp": "1" if view.include_no_dp else "0"}
    if view.epsilon_range is not None:
        params["eps"] = ",".join(f"{v:g}" for v in view.epsilon_range)
    if view.runs:
        params["runs"] = ",".join(view.runs)
    return params


# ----------------------------------------------------------------------------- exports
def export_text(runs: list[RunInfo], fmt: str) -> str:
    """The runs as CSV or JSON (:func:`genlab.export.export_runs`)."""
    return export_runs(runs, fmt)


def report_html(runs: list[RunInfo], demo: dict | None) -> str:
    """The self-contained HTML report of these runs (:func:`genlab.report.build_report`)."""
    return build_report(runs, meta=demo, title="genlab trade-offs report")
