"""The privacy axis in the dashboard under AppTest: the Train page's DP settings and planned ε,
and the Privacy page for a DP run, a run without DP, both side by side, and bad input.

The runs are tiny VAEs on digits, trained and audited (without the reference model) in-process
once per session; each test points GENLAB_HOME at them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import TINY_SETTINGS
from test_dashboard import no_exception, open_page, plotly_traces

from genlab import jobs
from genlab.config import make_run_config
from genlab.data import load_dataset
from genlab.evaluate import audit_run
from genlab.privacy.accounting import plan_budget
from genlab.runs import ACTIVE, RunStore

N_DIGITS = len(load_dataset("digits").train)


def train_run(home: Path, *, epochs: int = 2, privacy: dict | None = None,
              audit: bool | None = False, **settings) -> str:
    """A finished tiny VAE on digits; ``audit``: False none, True with the reference model,
    None without it."""
    store = RunStore(home)
    cfg = make_run_config("vae", "digits", epochs=epochs, seed=0,
                          overrides=settings or TINY_SETTINGS["vae"], privacy=privacy)
    run_id = store.create_run(model="vae", dataset="digits", config=cfg.to_dict(),
                              config_hash=cfg.config_hash())
    jobs.execute_run(store, run_id)
    assert store.get(run_id).status == "finished", store.get(run_id).error
    if audit is not False:
        audit_run(store, run_id, reference=bool(audit))
    return run_id


@dataclass
class PrivacyRuns:
    home: Path
    dp: str  # trained with DP at ε = 3, audited
    plain: str  # trained without DP, audited

    def record(self, run_id: str) -> dict:
        return RunStore(self.home).get(run_id).record["privacy"]


@pytest.fixture(scope="session")
def privacy_runs(tmp_path_factory) -> PrivacyRuns:
    home = tmp_path_factory.mktemp("privacy_home")
    return PrivacyRuns(home, dp=train_run(home, privacy={"epsilon": 3.0}, audit=None),
                       plain=train_run(home, audit=None))


@pytest.fixture
def privacy_home(privacy_runs, monkeypatch) -> PrivacyRuns:
    monkeypatch.setenv("GENLAB_HOME", str(privacy_runs.home))
    return privacy_runs


def chart(at, key: str) -> dict:
    found = [json.loads(c.proto.spec) for c in at.get("plotly_chart") if key in c.proto.id]
    assert len(found) == 1, f"{key}: {[c.proto.id for c in at.get('plotly_chart')]}"
    return found[0]


# ----------------------------------------------------------------------------- Train page
def dp_page(mode: str | None = None, **numbers):
    """The Train page with DP switched on, the budget chosen by ``mode``, and ``numbers`` (number
    inputs by key) set."""
    at = open_page("train")
    at.toggle(key="train_dp").set_value(True).run()
    if mode:
        at.radio(key="train_dp_mode").set_value(mode).run()
    for key, value in numbers.items():
        at.number_input(key=key).set_value(value)
    return at.run()


def test_train_page_plans_epsilon_for_a_noise_multiplier(genlab_home):
    at = dp_page("noise σ", train_dp_sigma=0.8, train_epochs=5)
    no_exception(at)
    assert not at.error
    plan = plan_budget(n=N_DIGITS, batch_size=128, epochs=5, delta=1e-5, sigma=0.8)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Planned ε"] == f"{plan['epsilon']:.3g}"
    assert metrics["Noise σ"] == "0.8"
    curve = chart(at, "train_dp_plan")["data"][0]
    assert curve["y"][-1] == pytest.approx(plan["epsilon"], rel=1e-9)
    assert curve["x"] == [p["epoch"] for p in plan["curve"]][-len(curve["x"]):]
    assert f"{plan['steps']:,} steps" in " ".join(c.value for c in at.caption)


def test_train_page_finds_sigma_for_a_target_epsilon(genlab_home):
    at = dp_page(train_dp_epsilon=2.0, train_epochs=4)
    no_exception(at)
    plan = plan_budget(n=N_DIGITS, batch_size=128, epochs=4, delta=1e-5, epsilon=2.0)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Noise σ"] == f"{plan['noise_multiplier']:.3g}"
    assert float(metrics["Planned ε"]) <= 2.0
    assert metrics["Planned ε"] == f"{plan['epsilon']:.3g}"


@pytest.mark.parametrize("key, value, message", [
    ("train_dp_delta", 0.01, f"delta must be below 1/N = {1 / N_DIGITS:.1e} for N = {N_DIGITS}"),
    ("train_dp_epsilon", 0.0, "epsilon must be > 0"),
    ("train_dp_max_grad_norm", -1.0, "max_grad_norm must be > 0"),
    ("train_batch_size", 5000, f"batch_size must be between 1 and n = {N_DIGITS}"),
])
def test_train_page_rejects_bad_dp_settings(genlab_home, key, value, message):
    at = dp_page(**{key: value})
    no_exception(at)
    assert len(at.error) == 1 and message in at.error[0].value
    assert not at.metric  # no plan for settings genlab refuses, and no runs yet
    at.button(key="train_start").click().run()
    no_exception(at)
    assert "Fix the differential privacy settings" in at.warning[0].value
    assert RunStore(genlab_home).list() == []


def test_train_page_starts_a_dp_run(genlab_home):
    store = RunStore(genlab_home)
    at = dp_page("noise σ", train_dp_sigma=1.5, train_dp_max_grad_norm=2.0,
                 train_epochs=1)
    at.selectbox(key="train_field_vae_arch").set_value("mlp")
    at.button(key="train_start").click().run()
    runs = store.list()
    try:
        no_exception(at)
        assert len(runs) == 1
        assert runs[0].config["privacy"] == {"epsilon": None, "noise_multiplier": 1.5,
                                             "delta": 1e-5, "max_grad_norm": 2.0,
                                             "accountant": "prv"}
    finally:
        for run in runs:
            if jobs.wait(store, run.id, timeout=120) in ACTIVE:  # pragma: no cover
                jobs.cancel(store, run.id)
    assert store.get(runs[0].id).record["privacy"]["noise_multiplier"] == 1.5


# ----------------------------------------------------------------------------- Privacy page
def test_privacy_page_for_a_dp_run(privacy_home):
    run_id, record = privacy_home.dp, privacy_home.record(privacy_home.dp)
    at = open_page("privacy", run=run_id)
    no_exception(at)
    assert not at.error
    assert at.selectbox(key="privacy_run").value == run_id
    metrics = {m.label: m.value for m in at.metric}
    assert metrics[run_id] == f"ε = {record['epsilon']:.3g}"
    history = RunStore(privacy_home.home).history(run_id)
    steps = chart(at, "privacy_epsilon_steps")["data"][0]
    assert steps["x"] == [h["step"] for h in history]
    assert steps["y"] == pytest.approx([h["epsilon"] for h in history])
    roc = chart(at, "privacy_roc")
    assert roc["layout"]["xaxis"]["type"] == "log" and roc["layout"]["yaxis"]["type"] == "log"
    names = [t["name"] for t in roc["data"]]
    assert names[0] == "chance (guessing)" and any("LOSS attack (AUC" in n for n in names)
    pair = chart(at, "privacy_epsilon_pair")["data"]
    assert pair[0]["y"] == pytest.approx([record["epsilon"]])
    assert pair[1]["y"] == pytest.approx([record["epsilon_lower_bound"]])
    assert record["epsilon_lower_bound"] <= record["epsilon"]
    assert len(at.image) == 1  # the exposed images
    assert f"DCR ratio {record['dcr_ratio']:.2f}" in " ".join(m.value for m in at.markdown)


def test_privacy_planner_follows_the_sliders(privacy_home):
    run_id, record = privacy_home.dp, privacy_home.record(privacy_home.dp)
    at = open_page("privacy", run=run_id)
    planned = {m.label: m.value for m in at.metric}
    # σ, batch size and epochs start at the run's own, so the plan gives the run's ε.
    assert planned["ε (PRV accountant)"] == f"{record['epsilon']:.3g}"
    at.slider(key=f"privacy_plan_sigma_{run_id}").set_value(2.0)
    at.number_input(key=f"privacy_plan_epochs_{run_id}").set_value(6).run()
    no_exception(at)
    plan = plan_budget(n=N_DIGITS, batch_size=128, epochs=6, delta=1e-5, sigma=2.0, compare=True)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["ε (PRV accountant)"] == f"{plan['comparison']['prv']:.3g}"
    assert metrics["ε (RDP accountant)"] == f"{plan['comparison']['rdp']:.3g}"


def test_privacy_page_for_a_run_without_dp(privacy_home):
    run_id, record = privacy_home.plain, privacy_home.record(privacy_home.plain)
    at = open_page("privacy", run=run_id)
    no_exception(at)
    assert not at.error
    assert {m.label: m.value for m in at.metric}[run_id] == "ε = ∞"
    assert any("No DP: ε = ∞, no guarantee" in c.value for c in at.caption)
    assert not [c for c in at.get("plotly_chart") if "privacy_epsilon_steps" in c.proto.id]
    roc = chart(at, "privacy_roc")
    assert roc["layout"]["xaxis"]["type"] == "log" and roc["layout"]["yaxis"]["type"] == "log"
    pair = chart(at, "privacy_epsilon_pair")["data"]
    assert pair[0]["text"] == ["∞ (no DP)"] and pair[0]["marker"]["pattern"]["shape"] == ["/"]
    assert pair[1]["y"] == pytest.approx([record["epsilon_lower_bound"]])


def test_privacy_page_compares_two_runs(privacy_home):
    dp, plain = privacy_home.dp, privacy_home.plain
    at = open_page("privacy", run=dp, compare=plain)
    no_exception(at)
    assert at.selectbox(key="privacy_compare").value == plain
    pair = chart(at, "privacy_epsilon_pair")["data"]
    assert len(pair[0]["x"]) == 2 and pair[0]["x"][0].startswith(dp)
    assert pair[0]["text"][1] == "∞ (no DP)"
    assert pair[0]["y"][0] == pytest.approx(privacy_home.record(dp)["epsilon"])
    assert len(at.image) == 2
    traces = plotly_traces(at)
    assert any(name.startswith(plain) for name in traces)
    at.selectbox(key="privacy_compare").set_value("").run()
    assert "compare" not in at.query_params and len(at.image) == 1


def test_privacy_page_reports_an_unknown_run(privacy_home):
    at = open_page("privacy", run="no-such-run")
    no_exception(at)
    assert len(at.error) == 1 and "unknown run 'no-such-run'" in at.error[0].value
    assert at.selectbox(key="privacy_run").value in (privacy_home.dp, privacy_home.plain)


def test_privacy_page_runs_a_missing_audit(genlab_home):
    run_id = train_run(genlab_home)
    at = open_page("privacy", run=run_id)
    no_exception(at)
    assert not [c for c in at.get("plotly_chart") if "privacy_roc" in c.proto.id]
    assert at.button(key=f"privacy_audit_{run_id}")
    at.button(key=f"privacy_quick_{run_id}").click().run()
    no_exception(at)
    assert not at.error
    record = RunStore(genlab_home).get(run_id).record["privacy"]
    assert record["mia_attack"] == "loss" and record["epsilon"] is None
    assert chart(at, "privacy_roc")["layout"]["xaxis"]["type"] == "log"
    assert not [b for b in at.button if b.key == f"privacy_quick_{run_id}"]


def test_privacy_page_starts_the_full_audit_in_the_background(genlab_home):
    run_id = train_run(genlab_home)
    at = open_page("privacy", run=run_id)
    at.button(key=f"privacy_audit_{run_id}").click().run()
    no_exception(at)
    # the page does not train: it shows the background audit running, and no record yet
    assert any("running in the background" in i.value for i in at.info)
    store = RunStore(genlab_home)
    deadline = time.monotonic() + 180
    from genlab import jobs

    while jobs.audit_state(store, run_id)[0] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert store.get(run_id).record["privacy"]["mia_attack"] in ("loss", "reference")
    at.run()
    no_exception(at)
    assert chart(at, "privacy_roc")["layout"]["yaxis"]["type"] == "log"
