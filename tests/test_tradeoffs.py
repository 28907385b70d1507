"""The trade-off analysis (genlab.tradeoffs), its figures, the HTML report and ``genlab report``.

The runs are synthetic but real-shaped: records like ``genlab train --evaluate`` writes, put in a
real run store through its own API (tests/tradeoffs_support.py), so nothing trains.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import plotly
import pytest
from tradeoffs_support import EPSILONS, MODELS, SEEDS, add_run, fill_store, record_for

from genlab.cli import main
from genlab.cli_output import run_json
from genlab.errors import StoreError
from genlab.export import export_runs, read_records
from genlab.runs import RunStore
from genlab.tradeoff_plots import EpsilonScale, epsilon_curves_figure, pareto_figure
from genlab.tradeoffs import (
    AXES,
    EPSILON,
    epsilon_values,
    filter_frame,
    group_key,
    pareto_mask,
    pareto_of,
    runs_frame,
    sd_column,
    seed_summary,
)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A store holding the synthetic runs; yields ``(home, {(model, ε, seed): run id})``."""
    home = tmp_path_factory.mktemp("tradeoffs_home")
    return home, fill_store(home)


@pytest.fixture
def synthetic_home(synthetic, monkeypatch):
    monkeypatch.setenv("GENLAB_HOME", str(synthetic[0]))
    return synthetic


def evaluated(home: Path):
    return [r for r in RunStore(home).list(status="finished") if r.record]


# ----------------------------------------------------------------------------- Pareto
def brute_force(values: np.ndarray, directions) -> np.ndarray:
    """Pareto-optimal rows by the definition, one pair at a time."""
    sign = np.array([1.0 if d == "higher" else -1.0 for d in directions])
    out = []
    for i, a in enumerate(values):
        if np.isnan(a).any():
            out.append(False)
            continue
        dominated = False
        for j, b in enumerate(values):
            if j == i or np.isnan(b).any():
                continue
            ge = all(sb >= sa for sa, sb in zip(a * sign, b * sign))
            gt = any(sb > sa for sa, sb in zip(a * sign, b * sign))
            dominated |= ge and gt
        out.append(not dominated)
    return np.array(out)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [2, 3])
def test_pareto_mask_matches_brute_force(seed, k):
    rng = np.random.default_rng(seed)
    n = 40
    values = rng.integers(0, 6, size=(n, k)).astype(float)  # few levels: many ties
    values[rng.random(n) < 0.1, rng.integers(0, k)] = np.nan
    values[rng.random(n) < 0.1, 0] = np.inf
    values[3] = values[4]  # an exact duplicate
    for directions in itertools.product(("higher", "lower"), repeat=k):
        mask = pareto_mask(values, directions)
        assert mask.dtype == bool and mask.shape == (n,)
        np.testing.assert_array_equal(mask, brute_force(values, directions))
        assert not mask[np.isnan(values).any(axis=1)].any()
        assert mask.any()


def test_pareto_mask_ties_and_infinite_epsilon():
    lower_eps = ("lower", "higher")  # ε: lower is better; CAS: higher is better
    same = np.array([[1.0, 0.5], [1.0, 0.5], [2.0, 0.4]])
    assert pareto_mask(same, lower_eps).tolist() == [True, True, False]  # equals don't dominate
    no_dp = np.array([[math.inf, 0.9], [3.0, 0.5], [8.0, 0.5]])
    assert pareto_mask(no_dp, lower_eps).tolist() == [True, True, False]
    no_gain = np.array([[math.inf, 0.5], [3.0, 0.5]])  # ∞ is the least private ε
    assert pareto_mask(no_gain, lower_eps).tolist() == [False, True]
    assert pareto_mask(np.empty((0, 2)), lower_eps).tolist() == []


def test_pareto_mask_rejects_bad_input():
    with pytest.raises(ValueError, match="direction must be 'higher' or 'lower'"):
        pareto_mask(np.zeros((3, 2)), ["higher", "up"])
    with pytest.raises(ValueError, match="2 directions for 3 metrics"):
        pareto_mask(np.zeros((3, 3)), ["higher", "lower"])
    with pytest.raises(ValueError, match="2-D"):
        pareto_mask(np.zeros(3), ["higher"])


# ----------------------------------------------------------------------------- frames
def test_runs_frame_has_every_metric_and_infinite_epsilon_without_dp(synthetic):
    home, ids = synthetic
    frame = runs_frame(evaluated(home)).set_index("id")
    assert len(frame) == len(ids)  # the failed and the unevaluated runs have no record
    assert set(AXES) <= set(frame.columns)
    plain, dp = frame.loc[ids["vae", math.inf, 0]], frame.loc[ids["vae", 3.0, 1]]
    assert plain["epsilon"] == math.inf and not plain["dp"] and plain[EPSILON] == math.inf
    assert dp["epsilon"] == pytest.approx(3.0 * 0.9997) and dp["dp"] and dp["seed"] == 1
    assert dp["performance.cas"] == pytest.approx(record_for("vae", 3.0, 1)["performance"]["cas"])
    assert math.isnan(frame.loc[ids["gan", 1.0, 0], "performance.nll_bpd"])  # null in the record
    assert math.isnan(frame.loc[ids["mixture", 8.0, 0], "interpretability.score"])  # no block


def test_group_key_ignores_only_the_seeds(synthetic):
    home, ids = synthetic
    frame = runs_frame(evaluated(home)).set_index("id")
    for model, eps in itertools.product(MODELS, EPSILONS):
        groups = {frame.loc[run_id, "group"] for (m, e, _), run_id in ids.items()
                  if (m, e) == (model, eps)}
        assert len(groups) == 1
    assert frame["group"].nunique() == len(MODELS) * len(EPSILONS)
    # one line per model across ε, even where DP runs train with their own batch size
    assert frame.groupby("model")["variant"].nunique().tolist() == [1] * len(MODELS)
    config = RunStore(home).get(ids["vae", 3.0, 0]).config
    changed = json.loads(json.dumps(config))
    changed["train"]["lr"] = 0.5
    assert group_key(changed) != group_key(config)


def test_seed_summary_agrees_with_the_per_seed_records(synthetic):
    home, ids = synthetic
    summary = seed_summary(runs_frame(evaluated(home)))
    assert len(summary) == len(MODELS) * len(EPSILONS)
    for _, row in summary.iterrows():
        eps = math.inf if math.isinf(row["epsilon"]) else float(f"{row['epsilon']:.3g}")
        seeds = [s for s in SEEDS if (row["model"], eps, s) in ids]
        assert sorted(row["seeds"]) == seeds and row["n"] == len(seeds)
        assert sorted(row["run_ids"]) == sorted(ids[row["model"], eps, s] for s in seeds)
        for block, name in (("performance", "cas"), ("privacy", "mia_auc"),
                            ("cost", "train_seconds"), ("interpretability", "score")):
            key = f"{block}.{name}"
            values = [(record_for(row["model"], eps, s,
                                  interpretability=not (row["model"] == "mixture" and eps == 8.0))
                       .get(block) or {}).get(name) for s in seeds]
            values = np.array([v for v in values if v is not None], dtype=float)
            assert row[f"{key} n"] == len(values)
            if not len(values):
                assert math.isnan(row[key]) and math.isnan(row[sd_column(key)])
                continue
            assert row[key] == pytest.approx(values.mean(), rel=1e-12)
            if len(values) == 1:
                assert math.isnan(row[sd_column(key)])  # one seed: no spread, not 0
            else:
                assert row[sd_column(key)] == pytest.approx(values.std(ddof=1), rel=1e-12)
    labels = summary.set_index("label")
    assert labels.loc["vae ε=∞", "epsilon"] == math.inf and labels.loc["gan ε=3", "n"] == 1


def test_filter_frame(synthetic):
    home, ids = synthetic
    frame = runs_frame(evaluated(home))
    assert epsilon_values(frame) == [1.0, 3.0, 8.0]
    kept = filter_frame(frame, dataset="digits", models=["vae", "gan"], epsilon_range=(3.0, 8.0))
    assert set(kept["model"]) == {"vae", "gan"}
    assert set(kept["epsilon"].round(2)) == {3.0, 8.0, math.inf}
    private = filter_frame(frame, epsilon_range=(1.0, 1.0), include_no_dp=False)
    assert set(private["id"]) == {i for (m, e, s), i in ids.items() if e == 1.0}
    chosen = [ids["vae", 1.0, 0], ids["gan", math.inf, 2]]
    assert sorted(filter_frame(frame, run_ids=chosen)["id"]) == sorted(chosen)
    assert filter_frame(frame, dataset="mnist5k").empty


# ----------------------------------------------------------------------------- figures
def test_pareto_figure_rings_the_front_and_draws_sd_error_bars(synthetic):
    summary = seed_summary(runs_frame(evaluated(synthetic[0])))
    x, y = EPSILON, "performance.cas"
    fig = json.loads(pareto_figure(summary, x=x, y=y).to_json())
    traces = {t["name"]: t for t in fig["data"]}
    optimal = set(summary.loc[pareto_of(summary, [x, y]), "group"])
    assert set(traces["Pareto-optimal"]["customdata"]) == optimal
    by_group = summary.set_index("group")
    checked = 0
    for trace in fig["data"]:
        if trace["name"] in MODELS:
            for group, bar in zip(trace["customdata"], trace["error_y"]["array"]):
                sd = by_group.loc[group, sd_column(y)]
                assert (bar is None) if math.isnan(sd) else bar == pytest.approx(sd)
                checked += 1
    assert checked == len(summary) - 1  # one group has no interpretability score: grey trace
    scale = EpsilonScale.of(summary[EPSILON])
    xs = [v for t in fig["data"] if t["name"] in MODELS for v in t["x"]]
    assert max(xs) == pytest.approx(10 ** scale.infinity) and 10 ** scale.infinity > 8.0
    assert fig["layout"]["xaxis"]["type"] == "log"
    assert fig["layout"]["xaxis"]["ticktext"][-1] == "∞ (no DP)"
    hover = " ".join(t.get("text", [""])[0] for t in fig["data"] if t.get("text"))
    assert re.search(r"runs: (gan|mixture|vae)-digits-", hover)


def test_epsilon_curves_one_line_per_model(synthetic):
    summary = seed_summary(runs_frame(evaluated(synthetic[0])))
    fig = json.loads(epsilon_curves_figure(summary).to_json())
    legend = [t["name"] for t in fig["data"] if t.get("showlegend")]
    assert sorted(legend) == sorted(MODELS)
    vae_cas = next(t for t in fig["data"] if t["name"] == "vae" and t["mode"] == "lines+markers")
    assert vae_cas["x"] == pytest.approx([e * 0.9997 for e in EPSILONS[:3]])


# ----------------------------------------------------------------------------- report
def report(tmp_path: Path, *args: str) -> tuple[int, str]:
    """``genlab report ARGS --out tmp_path/report.html``: the exit status and the file's text."""
    out = tmp_path / "report.html"
    rc = main(["report", *args, "--out", str(out)])
    return rc, out.read_text() if out.exists() else ""


def test_report_is_self_contained_and_explains_the_measurements(synthetic_home, tmp_path,
                                                                capsys):
    _, ids = synthetic_home
    rc, html = report(tmp_path)
    assert rc == 0
    assert "34 runs on digits (ε: 1, 3, 8, ∞)" in capsys.readouterr().err
    bundle = plotly.offline.get_plotlyjs()
    assert html.count(bundle[:2000]) == 1  # plotly.js inline, once
    assert not re.search(r"<script[^>]+src=", html) and "<link" not in html
    assert html.count('class="plotly-graph-div"') == 4
    for run_id in ids.values():
        assert run_id in html
    for note in ("not Inception", "PRV accountant at δ = 1e-05 (25 runs)",
                 "random subset of the train split, as large as the holdout split",
                 "LOSS attack", "reference-calibrated attack", "Clopper-Pearson",
                 "359 members and 359 non-members", "How each figure was measured",
                 "torch "):
        assert note in html, note


def test_report_of_chosen_runs_on_a_dataset(synthetic_home, tmp_path, capsys):
    _, ids = synthetic_home
    chosen = [ids["vae", 1.0, 0], ids["gan", math.inf, 1][:14]]  # a unique prefix works too
    rc, html = report(tmp_path, "--runs", *chosen, "--dataset", "digits", "--json")
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["runs"] == [ids["vae", 1.0, 0], ids["gan", math.inf, 1]]
    assert ids["vae", 1.0, 0] in html and ids["vae", 3.0, 0] not in html


@pytest.mark.parametrize("case", ["unknown run", "unfinished run", "no runs", "other dataset",
                                  "folder", "missing folder"])
def test_report_errors_are_one_line(case, genlab_home, tmp_path, capsys):
    args, out = [], tmp_path / "report.html"
    if case == "unknown run":
        args = ["--runs", "vae-digits-nope"]
    elif case == "unfinished run":
        args = ["--runs", add_run(RunStore(genlab_home), "vae", 1.0, 0, status="failed")]
    elif case == "other dataset":
        add_run(RunStore(genlab_home), "vae", 1.0, 0, record=record_for("vae", 1.0, 0))
        args = ["--dataset", "mnist5k"]
    elif case in ("folder", "missing folder"):
        add_run(RunStore(genlab_home), "vae", 1.0, 0, record=record_for("vae", 1.0, 0))
        out = tmp_path if case == "folder" else tmp_path / "nowhere" / "report.html"
    rc = main(["report", *args, "--out", str(out)])
    captured = capsys.readouterr()
    expected = {"unknown run": "unknown run 'vae-digits-nope'",
                "unfinished run": "is failed; a report shows finished runs only",
                "no runs": "no finished runs with a record to report",
                "other dataset": "no finished runs with a record on dataset 'mnist5k'",
                "folder": "cannot write the report to", "missing folder": "No such file"}[case]
    assert rc == 2 and captured.out == ""
    assert captured.err.count("\n") == 1 and expected in captured.err
    assert captured.err.startswith("genlab: error: ")
    assert not (tmp_path / "nowhere").exists()


def test_records_read_back_from_both_json_shapes(synthetic):
    runs = evaluated(synthetic[0])
    _, exported = read_records(export_runs(runs, "json"))
    meta, printed = read_records(json.dumps({"meta": {"device": "x"},
                                             "runs": [run_json(r) for r in runs]}))
    assert meta == {"device": "x"}
    for back in (exported, printed):
        assert [r.id for r in back] == [r.id for r in runs]
        assert [r.record for r in back] == [r.record for r in runs]
        assert runs_frame(back)["group"].tolist() == runs_frame(runs)["group"].tolist()
    with pytest.raises(StoreError, match="not valid JSON"):
        read_records("{")
    with pytest.raises(StoreError, match="lacks id"):
        read_records('{"runs": [{"model": "vae", "dataset": "digits"}]}')
