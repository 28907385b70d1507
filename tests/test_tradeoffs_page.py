"""The Trade-offs page under AppTest: a real run store of synthetic but real-shaped runs (several
models, ε and seeds), and the demo-records fallback from a file named by GENLAB_DEMO_RECORDS.

Values are read back from the Plotly specs the page sends: the ringed points must be
pareto_mask's, the error bars the seed summary's standard deviations.
"""

from __future__ import annotations

import json
import math

import pytest
import services
from test_dashboard import no_exception, open_page
from tradeoffs_support import MODELS, fill_store, write_demo

from genlab.runs import RunStore
from genlab.tradeoffs import (
    EPSILON,
    filter_frame,
    pareto_of,
    runs_frame,
    sd_column,
    seed_summary,
)

CHARTS = ("tradeoffs_pareto", "tradeoffs_matrix", "tradeoffs_parallel", "tradeoffs_curves")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    home = tmp_path_factory.mktemp("tradeoffs_page_home")
    return home, fill_store(home)


@pytest.fixture
def page_home(synthetic, monkeypatch, tmp_path):
    """GENLAB_HOME at the synthetic runs; no demo file, so the real asset never interferes."""
    monkeypatch.setenv("GENLAB_HOME", str(synthetic[0]))
    monkeypatch.setenv(services.DEMO_ENV, str(tmp_path / "absent.json"))
    return synthetic


def chart(at, key: str) -> dict:
    found = [json.loads(c.proto.spec) for c in at.get("plotly_chart") if key in c.proto.id]
    assert len(found) == 1, f"{key}: {[c.proto.id for c in at.get('plotly_chart')]}"
    return found[0]


def expected_summary(home, **filters):
    runs = [r for r in RunStore(home).list(status="finished") if r.record]
    return seed_summary(filter_frame(runs_frame(runs), **filters))


def check_pareto(at, summary, x: str, y: str) -> None:
    """The ringed groups are pareto_mask's, and every error bar is the group's sd on x and y."""
    spec = chart(at, "tradeoffs_pareto")
    traces = {t["name"]: t for t in spec["data"]}
    optimal = summary.loc[_mask(summary, x, y), "group"]
    assert sorted(traces["Pareto-optimal"]["customdata"]) == sorted(optimal)
    by_group = summary.set_index("group")
    bars = 0
    for trace in spec["data"]:
        if trace["name"] in ("Pareto front", "Pareto-optimal"):
            continue
        for axis, key in (("error_x", x), ("error_y", y)):
            for group, bar in zip(trace["customdata"], trace[axis]["array"]):
                sd = by_group.loc[group, sd_column(key)]
                assert (bar is None) if math.isnan(sd) else bar == pytest.approx(sd, rel=1e-9)
                bars += bar is not None
    assert bars > 0
    assert spec["layout"]["xaxis"]["title"]["text"] == services.AXES[x].label
    assert spec["layout"]["yaxis"]["title"]["text"] == services.AXES[y].label


def _mask(summary, x, y):
    """pareto_of over the groups that have both metrics (the others are not drawn)."""
    has = summary[[x, y]].notna().all(axis=1)
    mask = has.copy()
    mask[has] = pareto_of(summary[has], [x, y])
    return mask.to_numpy(dtype=bool)


# ----------------------------------------------------------------------------- the store's runs
def test_default_view_epsilon_against_cas(page_home):
    home, ids = page_home
    at = open_page("tradeoffs")
    no_exception(at)
    assert not at.warning and not at.error
    summary = expected_summary(home)
    check_pareto(at, summary, EPSILON, "performance.cas")
    for key in CHARTS:
        chart(at, key)
    table = at.dataframe[0].value
    assert sorted(table["run"]) == sorted(ids.values())  # failed and unevaluated runs are out
    assert table.loc[table["run"] == ids["vae", math.inf, 0], "ε"].item() == math.inf
    assert dict(at.query_params) == {"dataset": "digits", "models": "gan,mixture,vae",
                                     "x": EPSILON, "y": "performance.cas", "nodp": "1",
                                     "eps": "1,8"}
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["CSV of the records", "JSON of the records", "HTML report"]
    assert "Run a sweep" in [h.value for h in at.subheader]
    pareto = chart(at, "tradeoffs_pareto")
    assert pareto["layout"]["xaxis"]["ticktext"][-1] == "∞ (no DP)"
    parallel = chart(at, "tradeoffs_parallel")["data"][0]
    assert [d["label"] for d in parallel["dimensions"]][0] == "model"
    assert len(parallel["dimensions"][1]["values"]) == len(summary) - 1  # one lacks interp.


def test_axis_pickers_and_query_params_round_trip(page_home):
    home, ids = page_home
    at = open_page("tradeoffs")
    at.selectbox(key="tradeoffs_x").set_value("privacy.mia_auc")
    at.selectbox(key="tradeoffs_y").set_value("interpretability.score")
    at.multiselect(key="tradeoffs_models").set_value(["gan", "vae"])
    at.toggle(key="tradeoffs_nodp").set_value(False)
    at.select_slider(key="tradeoffs_eps").set_value((3.0, 8.0))
    chosen = sorted(ids[m, e, s] for m in ("gan", "vae") for e in (3.0, 8.0) for s in (0, 1)
                    if (m, e, s) in ids)
    at.multiselect(key="tradeoffs_runs").set_value(chosen)
    at.run()
    no_exception(at)
    params = dict(at.query_params)
    assert params == {"dataset": "digits", "models": "gan,vae", "x": "privacy.mia_auc",
                      "y": "interpretability.score", "nodp": "0", "eps": "3,8",
                      "runs": ",".join(chosen)}
    summary = expected_summary(home, models=["gan", "vae"], epsilon_range=(3.0, 8.0),
                               include_no_dp=False, run_ids=chosen)
    assert sorted(summary["model"].unique()) == ["gan", "vae"] and len(summary) == 4
    check_pareto(at, summary, "privacy.mia_auc", "interpretability.score")

    again = open_page("tradeoffs", **params)  # a fresh session from the copied link
    no_exception(again)
    assert not again.warning
    assert again.selectbox(key="tradeoffs_x").value == "privacy.mia_auc"
    assert again.selectbox(key="tradeoffs_y").value == "interpretability.score"
    assert again.multiselect(key="tradeoffs_models").value == ["gan", "vae"]
    assert again.toggle(key="tradeoffs_nodp").value is False
    assert again.select_slider(key="tradeoffs_eps").value == (3.0, 8.0)
    assert again.multiselect(key="tradeoffs_runs").value == chosen
    assert chart(again, "tradeoffs_pareto") == chart(at, "tradeoffs_pareto")
    assert dict(again.query_params) == params


def test_bad_link_values_are_named_and_fall_back(page_home):
    at = open_page("tradeoffs", dataset="faces", models="vae,unicorn", x="privacy.nope",
                   y="performance.cas", eps="2,99", nodp="maybe", runs="ghost-run")
    no_exception(at)
    warnings = " ".join(w.value for w in at.warning)
    for bad in ("'faces'", "'unicorn'", "'privacy.nope'", "'2,99'", "'maybe'", "ghost-run"):
        assert bad in warnings, bad
    assert at.selectbox(key="tradeoffs_dataset").value == "digits"
    assert at.multiselect(key="tradeoffs_models").value == ["vae"]  # the valid part is kept
    assert at.selectbox(key="tradeoffs_x").value == EPSILON
    for key in CHARTS:
        chart(at, key)
    assert dict(at.query_params)["x"] == EPSILON  # the URL now names what is shown
    at.run()  # the warnings were for the link, not for every rerun
    assert not at.warning


def test_a_filter_that_leaves_nothing_says_so(page_home):
    at = open_page("tradeoffs", models="gan", eps="1,1", nodp="0")
    at.multiselect(key="tradeoffs_models").set_value([]).run()
    no_exception(at)
    assert "No run passes these filters" in at.info[0].value
    assert not at.get("plotly_chart")


def test_report_of_the_shown_runs(page_home):
    home, ids = page_home
    data = services.tradeoff_runs()
    runs = [data.by_id[ids["vae", 1.0, s]] for s in (0, 1)]
    html = services.report_html(runs, None)
    assert all(r.id in html for r in runs) and ids["gan", 1.0, 0] not in html
    assert "How each figure was measured" in html


# ----------------------------------------------------------------------------- demo records
def test_demo_records_when_the_store_has_no_evaluated_runs(synthetic, genlab_home, tmp_path,
                                                           monkeypatch):
    demo = write_demo(tmp_path / "records.json", synthetic[0])
    monkeypatch.setenv(services.DEMO_ENV, str(demo))
    at = open_page("tradeoffs")
    no_exception(at)
    assert "Demo data computed on Test GPU 9000 on 2031-02-03" in at.info[0].value
    assert sorted(at.dataframe[0].value["run"]) == sorted(synthetic[1].values())
    summary = expected_summary(synthetic[0])
    check_pareto(at, summary, EPSILON, "performance.cas")
    assert "Demo data computed on Test GPU 9000" in services.report_html(
        services.tradeoff_runs().runs, services.tradeoff_runs().demo)


def test_no_runs_and_no_demo(genlab_home, tmp_path, monkeypatch):
    monkeypatch.setenv(services.DEMO_ENV, str(tmp_path / "absent.json"))
    at = open_page("tradeoffs")
    no_exception(at)
    assert "No evaluated runs yet" in at.info[0].value
    assert [h.value for h in at.subheader] == ["Run a sweep"]
    assert not at.warning and not at.get("plotly_chart")


def test_a_corrupt_demo_file_is_named(genlab_home, tmp_path, monkeypatch):
    bad = tmp_path / "records.json"
    bad.write_text('{"meta": {}, "runs": [{"model": "vae"}]}')
    monkeypatch.setenv(services.DEMO_ENV, str(bad))
    at = open_page("tradeoffs")
    no_exception(at)
    assert str(bad) in at.warning[0].value and "lacks id" in at.warning[0].value
    assert "No evaluated runs yet" in at.info[0].value


def test_every_model_has_a_symbol_in_the_pareto_legend(page_home):
    at = open_page("tradeoffs")
    names = [t["name"] for t in chart(at, "tradeoffs_pareto")["data"]]
    assert set(MODELS) <= set(names)


def test_the_shipped_demo_records_fill_the_page_on_a_first_visit(genlab_home, monkeypatch):
    """assets/demo/records.json (`make demo`), as a first-time user sees it."""
    from genlab.demo import ASSET
    from genlab.export import read_records

    monkeypatch.delenv(services.DEMO_ENV, raising=False)
    meta, runs = read_records(ASSET.read_text())
    at = open_page("tradeoffs")
    no_exception(at)
    assert f"Demo data computed on {meta['device']} on {meta['date']}" in at.info[0].value
    assert sorted(at.dataframe[0].value["run"]) == sorted(r.id for r in runs)
    summary = seed_summary(runs_frame(runs))
    assert (summary["n"] == len(meta["sweep"]["seeds"])).all()  # every group has every seed
    check_pareto(at, summary, EPSILON, "performance.cas")
