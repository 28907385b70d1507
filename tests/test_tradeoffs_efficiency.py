"""Efficiency as a fourth axis on the Trade-offs page, and compressed runs in its runs table.

A real store through its own API: trained runs with records shaped like `genlab evaluate`'s
(efficiency block included) and int8 runs linked to them by genlab.lineage, as `genlab compress`
makes them; nothing trains. Checked under AppTest and in a real headless Chromium.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import services
from browser_support import ARTIFACTS, BROWSER_MARKS, IDLE, dashboard_server
from test_dashboard import no_exception, open_page
from tradeoffs_support import add_run, record_for

from genlab.lineage import create_derived_run, finish_derived_run
from genlab.runs import RunStore
from genlab.tradeoffs import AXES, EFFICIENCY, THREE_AXES, matrix_keys, runs_frame, seed_summary


def efficiency(size: int, seconds: float, nonzero: int) -> dict:
    return {"size_bytes": size, "sample_seconds": seconds, "params_total": 150_000,
            "params_nonzero": nonzero, "sparsity": 1 - nonzero / 150_000,
            "weight_dtypes": {"float32": 150_000}, "sample_n": 64, "repeats": 5,
            "device": "cpu"}


def fill(home) -> dict:
    """vae and gan at seeds 0 and 1 without DP, and an int8 run of each vae; returns the ids."""
    store = RunStore(home)
    ids = {}
    for model in ("vae", "gan"):
        for seed in (0, 1):
            record = {**record_for(model, math.inf, seed),
                      "efficiency": efficiency(600_000 + seed, 0.02, 150_000)}
            ids[model, seed] = add_run(store, model, math.inf, seed, record=record)
    for seed in (0, 1):
        parent = store.get(ids["vae", seed])
        child = create_derived_run(store, parents=[parent], method="int8", spec="int8",
                                   config=parent.config, details={})
        finish_derived_run(store, child, summary=dict(parent.summary),
                           privacy={"epsilon": None, "delta": None, "accountant": None})
        record = copy.deepcopy(parent.record)
        record["performance"]["cas"] -= 0.01
        record["efficiency"] = efficiency(200_000, 0.03, 149_000)
        for block in ("performance", "interpretability", "cost", "efficiency"):
            store.update_record(child, block, record[block])
        privacy = {**record["privacy"], **store.get(child).record["privacy"]}
        store.update_record(child, "privacy", privacy)
        ids["int8", seed] = child
    return ids


@pytest.fixture(scope="module")
def efficiency_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("tradeoffs_efficiency_home")
    return home, fill(home)


@pytest.fixture
def page_home(efficiency_home, monkeypatch, tmp_path):
    monkeypatch.setenv("GENLAB_HOME", str(efficiency_home[0]))
    monkeypatch.setenv(services.DEMO_ENV, str(tmp_path / "absent.json"))
    return efficiency_home


def chart(at, key: str) -> dict:
    (spec,) = [json.loads(c.proto.spec) for c in at.get("plotly_chart") if key in c.proto.id]
    return spec


def test_compressed_runs_group_apart_and_name_their_parent(efficiency_home):
    home, ids = efficiency_home
    summary = seed_summary(runs_frame(RunStore(home).list(status="finished")))
    assert sorted(summary["label"]) == ["gan ε=∞", "vae ε=∞", "vae ε=∞ int8"]
    derived = summary[summary["derived"] == "int8"].iloc[0]
    assert sorted(derived["run_ids"]) == sorted([ids["int8", 0], ids["int8", 1]])
    assert derived[EFFICIENCY] == 200_000
    assert matrix_keys(summary) == (*THREE_AXES[:-1], EFFICIENCY, THREE_AXES[-1])
    assert matrix_keys(summary.assign(**{EFFICIENCY: [math.nan, 1.0, 2.0]})) == THREE_AXES


def test_page_charts_efficiency_and_shows_the_parent(page_home):
    home, ids = page_home
    at = open_page("tradeoffs")
    no_exception(at)
    assert not at.error
    table = at.dataframe[0].value.set_index("run")
    for seed in (0, 1):
        assert table.loc[ids["int8", seed], "made by"] == "int8"
        assert table.loc[ids["int8", seed], "from"] == ids["vae", seed]
        assert table.loc[ids["vae", seed], "from"] == ""
    assert table.loc[ids["int8", 0], "bytes"] == 200_000
    options = at.selectbox(key="tradeoffs_x").options
    assert services.axis_label("efficiency.size_bytes") in options
    assert services.axis_label("efficiency.sample_seconds") in options
    size_title = "size ↓"
    matrix = chart(at, "tradeoffs_matrix")
    labels = [d["label"] for d in matrix["data"][0]["dimensions"]]
    assert size_title in labels and len(labels) == 5
    assert matrix["layout"]["title"]["text"].startswith(
        "Performance, interpretability, privacy and efficiency pairwise")
    parallel = chart(at, "tradeoffs_parallel")["data"][0]
    dims = {d["label"]: d for d in parallel["dimensions"]}
    assert sorted(dims[size_title]["values"]) == [200_000, 600_000.5, 600_000.5]
    assert dims[size_title]["range"][0] > dims[size_title]["range"][1]  # lower is better: up

    at.selectbox(key="tradeoffs_x").set_value("efficiency.size_bytes")
    at.multiselect(key="tradeoffs_matrix_keys").set_value(["performance.cas",
                                                          "efficiency.sample_seconds"])
    at.run()
    no_exception(at)
    assert dict(at.query_params)["x"] == "efficiency.size_bytes"
    pareto = chart(at, "tradeoffs_pareto")
    assert pareto["layout"]["xaxis"]["title"]["text"] == AXES["efficiency.size_bytes"].label
    traces = {t["name"]: t for t in pareto["data"]}
    assert traces["vae int8"]["marker"]["symbol"] == "circle-dot"
    assert traces["vae int8"]["x"] == [200_000] and traces["vae"]["x"] == [600_000.5]
    parallel = chart(at, "tradeoffs_parallel")["data"][0]
    assert [d["label"] for d in parallel["dimensions"]] == ["model", "CAS ↑", "latency ↓"]


def browser_test(fn):
    """The browser marks (and the skip when browser tests are off) on one test."""
    for mark in BROWSER_MARKS:
        fn = mark(fn)
    return fn


@browser_test
def test_efficiency_in_a_real_browser(browser_page, efficiency_home, tmp_path, monkeypatch):
    home, ids = efficiency_home
    monkeypatch.setenv(services.DEMO_ENV, str(tmp_path / "absent.json"))
    page = browser_page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with dashboard_server(home, tmp_path / "streamlit.log") as url:
        page.goto(f"{url}/tradeoffs?x=efficiency.size_bytes&y=performance.cas")
        page.wait_for_selector(IDLE, timeout=90_000)
        charts = page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot')
        charts.nth(3).wait_for(state="visible", timeout=60_000)
        assert page.locator('[data-testid="stException"]').count() == 0
        pareto = charts.nth(0)
        assert pareto.locator(".xtitle").text_content() == AXES["efficiency.size_bytes"].label
        table = page.locator('[data-testid="stDataFrame"]').first
        table.scroll_into_view_if_needed()
        page.wait_for_timeout(500)
        table.screenshot(path=str(ARTIFACTS / "tradeoffs_efficiency_table.png"))
        pareto.screenshot(path=str(ARTIFACTS / "tradeoffs_efficiency_pareto.png"))
        parallel = charts.nth(2)
        parallel.scroll_into_view_if_needed()
        page.wait_for_timeout(500)
        assert "size ↓" in parallel.inner_text()
        parallel.screenshot(path=str(ARTIFACTS / "tradeoffs_efficiency_parallel.png"))
