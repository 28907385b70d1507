"""`genlab evaluate`: the performance and cost blocks, repeatable, with clear errors."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from genlab.config import make_run_config
from genlab.errors import RunNotFound, StoreError
from genlab.evaluate import evaluate_run
from genlab.jobs import execute_run
from genlab.runs import RunStore

PERFORMANCE = {"fd", "precision", "recall", "density", "coverage", "cas", "cas_real", "nll_bpd",
               "n_generated", "n_real", "feature_space", "k"}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    home = tmp_path_factory.mktemp("eval-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENLAB_HOME", str(home))
        store = RunStore(home)
        cfg = make_run_config("vae", "digits", epochs=8, seed=0)
        run_id = store.create_run(model="vae", dataset="digits", config=cfg.to_dict())
        execute_run(store, run_id)
        first = evaluate_run(store, run_id)
        second = evaluate_run(store, run_id)
        yield store, run_id, first, second


def test_every_performance_field_is_filled(evaluated):
    store, run_id, first, _ = evaluated
    perf = first["performance"]
    assert PERFORMANCE <= set(perf)
    assert all(perf[k] is not None for k in PERFORMANCE)
    assert perf["n_generated"] == 1000 and perf["n_real"] == 359 and perf["k"] == 5
    assert 0 <= perf["precision"] <= 1 and 0 <= perf["coverage"] <= 1
    assert 0.1 < perf["cas"] <= perf["cas_real"] + 0.05  # better than chance, near the ceiling
    assert perf["cas_real"] >= 0.97
    # the VAE's bound in bits per dim matches its test loss in nats (k=16 tightens it a little)
    test_nats = store.get(run_id).summary["test_loss"]
    assert 0.9 * test_nats < perf["nll_bpd"] * 64 * math.log(2) <= test_nats * 1.01
    cost = first["cost"]
    assert cost["params"] > 0 and cost["samples_per_second"] > 0 and cost["device"] == "cpu"
    assert cost["train_seconds"] == store.get(run_id).summary["train_seconds"]


def test_evaluating_twice_gives_the_same_numbers(evaluated):
    _, _, first, second = evaluated
    for key, value in first["performance"].items():
        if isinstance(value, float):
            assert second["performance"][key] == pytest.approx(value, abs=1e-6), key
        else:
            assert second["performance"][key] == value


def test_record_is_stored(evaluated):
    store, run_id, first, _ = evaluated
    assert RunStore(store.home).get(run_id).record["performance"] == first["performance"]


def test_unknown_or_unfinished_runs_are_refused(evaluated):
    store, _, _, _ = evaluated
    with pytest.raises(RunNotFound, match="unknown run 'nope'"):
        evaluate_run(store, "nope")
    queued = store.create_run(model="vae", dataset="digits",
                              config=make_run_config("vae", "digits", epochs=1).to_dict())
    with pytest.raises(StoreError, match=f"run {queued} is queued, not finished"):
        evaluate_run(store, queued)
    env = {**os.environ, "GENLAB_HOME": str(store.home)}
    out = subprocess.run([sys.executable, "-m", "genlab.cli", "evaluate", queued, "--json"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        f"genlab: error: run {queued} is queued, not finished; evaluate it once it has finished"]
    store.mark_cancelled(queued)
    store.delete(queued)


def test_cli_evaluate_json(evaluated):
    store, run_id, first, _ = evaluated
    env = {**os.environ, "GENLAB_HOME": str(store.home)}
    out = subprocess.run([sys.executable, "-m", "genlab.cli", "evaluate", run_id, "--json"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    printed = json.loads(out.stdout)
    assert printed["run_id"] == run_id
    assert printed["record"]["performance"]["fd"] == pytest.approx(first["performance"]["fd"],
                                                                   abs=1e-6)


def test_the_shipped_demo_records_have_the_current_record_schema(evaluated):
    """assets/demo/records.json (`make demo`) must keep up with what `genlab evaluate` writes."""
    from pathlib import Path

    from genlab.export import read_records

    _, _, fresh, _ = evaluated
    demo = Path(__file__).resolve().parents[1] / "assets" / "demo" / "records.json"
    meta, runs = read_records(demo.read_text())
    assert meta["demo"] is True and meta["device"] and meta["date"] and meta["torch"]
    assert meta["command"].startswith("genlab sweep ")
    private = [run for run in runs if run.config.get("privacy")]
    plain = [run for run in runs if not run.config.get("privacy")]
    assert private and plain and all(run.status == "finished" for run in runs)
    for run in runs:
        assert set(run.record) == set(fresh), run.id
        for block in ("performance", "interpretability", "cost"):
            assert set(run.record[block]) == set(fresh[block]), (run.id, block)
        # a DP run's privacy block adds the accountant's fields to the audit's
        assert set(fresh["privacy"]) <= set(run.record["privacy"]), run.id
    for run in plain:
        assert set(run.record["privacy"]) == set(fresh["privacy"]), run.id
    for run in private:
        assert 0 < run.record["privacy"]["epsilon"] <= run.config["privacy"]["epsilon"]
