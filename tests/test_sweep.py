"""Sweeps: parsing and validation, the plan's states against a real store, requeueing in place,
idempotence, a failing run, and a sweep driver killed with SIGKILL mid-sweep."""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from genlab import fairqueue, jobs
from genlab.config import make_run_config
from genlab.errors import ConfigError, StoreError
from genlab.models import model_names
from genlab.procs import EVALUATE_ERROR, EVALUATE_PID, write_pid_marker
from genlab.runs import RunStore
from genlab.sweep import (
    SweepSpec,
    failures,
    launch_sweep,
    parse_epsilons,
    parse_seeds,
    plan,
    record_complete,
    run_sweep,
    sweep_status,
)

COMPLETE = {
    "performance": {"fd": 12.5},
    "interpretability": {"score": 0.7},
    "privacy": {"epsilon": None, "mia_auc": 0.55},
    "cost": {"train_seconds": 1.0},
    "efficiency": {"size_bytes": 1000},
}
TINY = dict(dataset="digits", models=("mixture",), epochs=1)


@pytest.fixture
def store(tmp_path, monkeypatch) -> RunStore:
    monkeypatch.setenv("GENLAB_HOME", str(tmp_path))
    return RunStore(tmp_path)


def fake_run(store: RunStore, cfg, *, status: str = "finished", record: dict | None = None) -> str:
    """A run row as a worker would leave it, without training anything."""
    run_id = store.create_run(model=cfg.model, dataset=cfg.data.name, config=cfg.to_dict(),
                              config_hash=cfg.config_hash(), status=status)
    for block, values in (COMPLETE if record is None else record).items():
        store.update_record(run_id, block, values)
    return run_id


def rows_per_hash(home: Path) -> dict[str, int]:
    with sqlite3.connect(home / "genlab.db") as conn:
        return dict(conn.execute("SELECT config_hash, COUNT(*) FROM runs GROUP BY config_hash"))


def _evaluate_log(store: RunStore, run_id: str | None) -> str:
    """The tail of a run's evaluation log, for a failure message."""
    log = store.home / "runs" / str(run_id) / "evaluate.log"
    return log.read_text()[-1500:] if log.exists() else "no evaluate.log"


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ----------------------------------------------------------------------------- parsing
def test_parse_epsilons_reads_inf_and_numbers():
    assert parse_epsilons("inf,10,3,1") == (math.inf, 10.0, 3.0, 1.0)
    assert parse_epsilons(" ∞ , none, 0.5") == (math.inf, math.inf, 0.5)
    assert parse_seeds("0, 1,2") == (0, 1, 2)


@pytest.mark.parametrize(
    "text, message",
    [
        ("0", "epsilon must be > 0 (got 0); use inf for a run without DP"),
        ("inf,-1", "epsilon must be > 0 (got -1); use inf for a run without DP"),
        ("3,abc", "epsilon must be a number or inf (got 'abc')"),
        ("", "give at least one epsilon"),
        ("inf,,1", "empty epsilon in 'inf,,1'"),
    ],
)
def test_parse_epsilons_rejects_bad_values_in_one_line(text, message):
    with pytest.raises(ConfigError) as err:
        parse_epsilons(text)
    assert message in str(err.value) and "\n" not in str(err.value)


# ----------------------------------------------------------------------------- validation
GRID = dict(dataset="digits", models=("vae", "mixture"), epsilons=(math.inf, 1.0), seeds=(0,))


KNOWN = "known models: " + ", ".join(model_names())


@pytest.mark.parametrize(
    "change, message",
    [
        ({"models": ()}, "a sweep needs at least one model; " + KNOWN),
        ({"epsilons": ()}, "a sweep needs at least one epsilon; use inf for runs without DP"),
        ({"seeds": ()}, "a sweep needs at least one seed"),
        ({"models": ("vae", "gpt")}, "unknown model 'gpt'; " + KNOWN),
        ({"epsilons": (0.0,)}, "epsilon must be > 0 (got 0); use inf for a run without DP"),
        ({"epsilons": (-1.0,)}, "epsilon must be > 0 (got -1); use inf for a run without DP"),
        ({"seeds": (0, 1, 1, 2, 2, 2)}, "duplicate seeds: 1, 2; list each one once"),
        ({"models": ("vae", "vae")}, "duplicate models: vae"),
        ({"epsilons": (math.inf, 3.0, 3)}, "duplicate epsilons: 3"),
        ({"seeds": tuple(range(60))},
         "this sweep has 240 runs, more than the limit of 200; raise --max-runs or shrink the "
         "grid"),
        ({"seeds": (0, 1), "limit": 3}, "this sweep has 8 runs, more than the limit of 3"),
        ({"epochs": 0}, "epochs must be at least 1 (got 0)"),
        ({"overrides": (("latnet_dim", 4),)}, "has no setting 'latnet_dim'"),
    ],
)
def test_spec_validation_messages(change, message):
    with pytest.raises(ConfigError) as err:
        SweepSpec(**{**GRID, **change})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_spec_configs_order_privacy_and_json_round_trip():
    spec = SweepSpec(dataset="digits", models=["vae", "mixture"], epsilons=[math.inf, 4],
                     seeds=[0, 1], epochs=2, overrides={"batch_size": "32"})
    cells = [(c.model, None if c.privacy is None else c.privacy.epsilon, c.train.seed)
             for c in spec.configs()]
    assert cells == [("vae", None, 0), ("vae", None, 1), ("vae", 4.0, 0), ("vae", 4.0, 1),
                     ("mixture", None, 0), ("mixture", None, 1), ("mixture", 4.0, 0),
                     ("mixture", 4.0, 1)]
    assert {c.train.epochs for c in spec.configs()} == {2}
    assert {c.train.batch_size for c in spec.configs()} == {32}
    d = spec.to_dict()
    assert d["epsilons"] == ["inf", 4.0] and d["overrides"] == {"batch_size": "32"}
    again = SweepSpec.from_dict(json.loads(json.dumps(d)))
    assert again == spec and again.sweep_id() == spec.sweep_id()
    assert [c.config_hash() for c in again.configs()] == [c.config_hash() for c in spec.configs()]
    assert SweepSpec(**{**GRID, "limit": 50}).sweep_id() == SweepSpec(**GRID).sweep_id()
    with pytest.raises(ConfigError, match="not a sweep spec"):
        SweepSpec.from_dict({"dataset": "digits", "models": ["vae"]})


# ----------------------------------------------------------------------------- the store
def test_find_by_hash_uses_an_index_added_to_an_existing_store(tmp_path):
    RunStore(tmp_path)
    with sqlite3.connect(tmp_path / "genlab.db") as conn:  # a store from before the index
        conn.execute("DROP INDEX runs_config_hash")
    store = RunStore(tmp_path)
    with sqlite3.connect(tmp_path / "genlab.db") as conn:
        query_plan = conn.execute("EXPLAIN QUERY PLAN SELECT * FROM runs WHERE config_hash = 'x'")
        assert "runs_config_hash" in " ".join(str(row) for row in query_plan)
    cfg = make_run_config("mixture", "digits", epochs=1)
    first, second = fake_run(store, cfg, status="failed"), fake_run(store, cfg)
    fake_run(store, make_run_config("mixture", "digits", epochs=2))
    assert [r.id for r in store.find_by_hash(cfg.config_hash())] == [first, second]
    assert store.find_by_hash("nope") == []


def test_requeue_resets_a_failed_run_in_place(store):
    cfg = make_run_config("mixture", "digits", epochs=1)
    run_id = fake_run(store, cfg, status="running")
    store.log(run_id, epoch=1, step=3, metrics={"test_loss": 1.0}, progress=0.5)
    store.set_pid(run_id, dead_pid())
    store.fail(run_id, "worker died")
    (store.artifacts_dir(run_id) / "weights.safetensors").write_bytes(b"stale")
    before = store.get(run_id)
    store.requeue(run_id)
    after = store.get(run_id)
    assert (after.id, after.config, after.config_hash) == (run_id, before.config, cfg.config_hash())
    assert (after.status, after.record, after.summary, after.error) == ("queued", {}, {}, None)
    assert (after.pid, after.progress, after.started, after.finished) == (None, 0.0, None, None)
    assert not after.cancel_requested and after.created > before.created
    assert store.history(run_id) == []
    assert not (store.home / "runs" / run_id).exists()
    assert len(store.list()) == 1
    with pytest.raises(StoreError, match="is queued; only a failed or cancelled run"):
        store.requeue(run_id)


# ----------------------------------------------------------------------------- the plan
def test_plan_states_from_the_store(store):
    spec = SweepSpec(dataset="digits", models=("mixture",), epsilons=(math.inf, 2.0),
                     seeds=(0, 1, 2, 3), epochs=1)
    cfgs = spec.configs()
    done = fake_run(store, cfgs[0])
    unevaluated = fake_run(store, cfgs[1], record={"cost": {"train_seconds": 1}})
    evaluating = fake_run(store, cfgs[2], record={})
    write_pid_marker(store.artifacts_dir(evaluating) / EVALUATE_PID, os.getpid())
    queued = fake_run(store, cfgs[3], status="queued", record={})
    store.set_pid(queued, os.getpid())
    died = fake_run(store, cfgs[4], status="running", record={})
    store.set_pid(died, dead_pid())
    failed = fake_run(store, cfgs[5], status="failed", record={})
    fake_run(store, cfgs[6], status="cancelled", record={})
    eval_failed = fake_run(store, cfgs[6], record={"cost": {}})  # the better of two runs
    (store.artifacts_dir(eval_failed) / EVALUATE_ERROR).write_text("DataError: gone")
    items = plan(store, spec)
    assert [(i.state, i.run_id) for i in items] == [
        ("done", done), ("needs_eval", unevaluated), ("active", evaluating), ("active", queued),
        ("todo", died), ("todo", failed), ("needs_eval", eval_failed), ("todo", None)]
    assert [i.config for i in items] == cfgs
    assert store.get(died).status == "failed" and "died" in items[4].error
    assert items[6].error == "DataError: gone"

    status = sweep_status(store, spec)
    counts = {k: status[k] for k in ("total", "done", "active", "needs_eval", "failed", "todo")}
    assert counts == {"total": 8, "done": 1, "active": 2, "needs_eval": 1, "failed": 3, "todo": 1}
    assert status["run_ids"] == [i.run_id for i in items] and not status["running"]
    assert set(status["errors"]) == {died, failed, eval_failed}
    assert failures(store, [done, unevaluated, failed]) == [
        {"run_id": unevaluated, "status": "finished",
         "error": "evaluation failed: the record is incomplete"},
        {"run_id": failed, "status": "failed", "error": "the run is failed"}]
    assert failures(store, [done, unevaluated], evaluate=False) == []
    assert record_complete(COMPLETE)
    assert not record_complete({**COMPLETE, "privacy": {"epsilon": 3.0}})  # formal ε, no audit
    no_efficiency = {k: v for k, v in COMPLETE.items() if k != "efficiency"}
    assert not record_complete(no_efficiency)  # evaluated before the fourth axis existed


def test_a_done_sweep_starts_nothing_and_imports_no_training_code(store):
    spec = SweepSpec(dataset="digits", models=("mixture", "vae"), epsilons=(math.inf, 3.0),
                     seeds=(0, 1), epochs=1)
    ids = [fake_run(store, cfg) for cfg in spec.configs()]
    before = {r.id: r.updated for r in store.list()}
    code = (
        "import json, sys\n"
        "from genlab.runs import RunStore\n"
        "from genlab.sweep import SweepSpec, run_sweep\n"
        f"spec = SweepSpec.from_dict(json.loads({json.dumps(json.dumps(spec.to_dict()))}))\n"
        "ids = run_sweep(RunStore(), spec)\n"
        "print(json.dumps([ids,"
        " sorted(m for m in ('genlab.jobs', 'genlab.train', 'genlab.data', 'sklearn')"
        " if m in sys.modules)]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "GENLAB_HOME": str(store.home)})
    assert out.returncode == 0, out.stderr
    returned, heavy = json.loads(out.stdout)
    assert returned == ids and heavy == []
    assert {r.id: r.updated for r in store.list()} == before  # nothing was touched
    assert not list((store.home / "sweeps").glob("*.pid"))  # the driver's marker is gone


def test_run_sweep_reports_progress_of_runs_already_done(store):
    spec = SweepSpec(dataset="digits", models=("mixture",), epsilons=(math.inf, 3.0), seeds=(0,),
                     epochs=1)
    ids = [fake_run(store, cfg) for cfg in spec.configs()]
    seen = []
    assert run_sweep(store, spec, on_progress=lambda *a: seen.append(a)) == ids
    assert [(done, total, item.run_id, item.state) for done, total, item in seen] == [
        (1, 2, ids[0], "done"), (2, 2, ids[1], "done")]
    with pytest.raises(ConfigError, match="--jobs must be at least 1"):
        run_sweep(store, spec, jobs=0)


def test_bad_data_fails_before_any_run_is_created(store, tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    spec = SweepSpec(dataset=str(bad), models=("mixture",), epsilons=(math.inf,), seeds=(0,))
    with pytest.raises(Exception) as err:
        run_sweep(store, spec)
    assert "bad.npz" in str(err.value)
    assert store.list() == []


def test_launch_sweep_runs_a_detached_driver_and_status_follows_it(store):
    spec = SweepSpec(dataset="digits", models=("mixture",), epsilons=(math.inf,), seeds=(0, 1),
                     epochs=1)
    ids = [fake_run(store, cfg) for cfg in spec.configs()]
    pid = launch_sweep(store, spec)
    assert sweep_status(store, spec)["running"]
    assert launch_sweep(store, spec) == pid  # the same grid is not driven twice
    deadline = time.monotonic() + 120
    while sweep_status(store, spec)["running"] and time.monotonic() < deadline:
        time.sleep(0.2)
    status = sweep_status(store, spec)
    assert not status["running"] and (status["done"], status["total"]) == (2, 2)
    assert status["run_ids"] == ids
    folder = store.home / "sweeps"
    assert json.loads((folder / f"{spec.sweep_id()}.json").read_text()) == spec.to_dict()
    assert "2 of 2 runs done" in (folder / f"{spec.sweep_id()}.log").read_text()


# ----------------------------------------------------------------------------- real runs
@pytest.mark.slow
def test_sweep_trains_then_evaluates_in_place_then_does_nothing(store, monkeypatch):
    spec = SweepSpec(**TINY, epsilons=(math.inf, 4.0), seeds=(0,))
    ids = run_sweep(store, spec, evaluate=False, poll=0.2)
    assert [store.get(i).status for i in ids] == ["finished", "finished"]
    assert [i.state for i in plan(store, spec)] == ["needs_eval", "needs_eval"]

    seen = []
    assert run_sweep(store, spec, poll=0.2, on_progress=lambda *a: seen.append(a)) == ids
    assert [(done, total, item.state) for done, total, item in seen] == [(1, 2, "done"),
                                                                         (2, 2, "done")], [
        (item.run_id, item.error, _evaluate_log(store, item.run_id)) for *_, item in seen]
    for run_id in ids:
        info = store.get(run_id)
        assert record_complete(info.record), info.record
        assert 0 <= info.record["privacy"]["mia_auc"] <= 1
        assert set(info.record["privacy"]["attacks"]) == {"loss", "reference"}  # the full audit
        assert not (store.home / "runs" / run_id / EVALUATE_PID).exists()
    assert store.get(ids[1]).record["privacy"]["epsilon"] <= 4.0
    assert rows_per_hash(store.home) == {c.config_hash(): 1 for c in spec.configs()}

    before = {r.id: (r.updated, r.record) for r in store.list()}

    def refuse(*args, **kwargs):
        raise AssertionError(f"a complete sweep submitted work: {args[1:]} {kwargs}")

    monkeypatch.setattr(jobs, "submit", refuse)
    monkeypatch.setattr(jobs, "submit_evaluation", refuse)
    assert run_sweep(store, spec) == ids
    assert {r.id: (r.updated, r.record) for r in store.list()} == before


@pytest.mark.slow
def test_a_failed_run_does_not_stop_the_sweep_and_is_retried_in_its_row(store):
    spec = SweepSpec(**TINY, epsilons=(math.inf,), seeds=(0, 1))
    device = jobs.resolve_device("auto").type
    result: dict = {}
    # This test holds the device, so the first worker waits for it, queued.
    with fairqueue.turn(store, "device-holder", device, owner="test"):
        driver = threading.Thread(target=lambda: result.update(
            ids=run_sweep(store, spec, evaluate=False, jobs=1, poll=0.2)))
        driver.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            runs = store.list()
            if runs and runs[0].pid:
                break
            time.sleep(0.1)
        (victim,) = store.list()
        time.sleep(1.0)  # past the worker's start-up, into its wait for the device
        os.kill(victim.pid, signal.SIGKILL)
    driver.join(timeout=120)
    assert not driver.is_alive()
    ids = result["ids"]
    assert ids[0] == victim.id
    assert [store.get(i).status for i in ids] == ["failed", "finished"]
    (failed,) = failures(store, ids, evaluate=False)
    assert failed["run_id"] == victim.id and str(victim.pid) in failed["error"]

    assert run_sweep(store, spec, evaluate=False, poll=0.2) == ids  # the same two rows
    assert [store.get(i).status for i in ids] == ["finished", "finished"]
    assert len(store.list()) == 2 and store.history(ids[0])[-1]["epoch"] == 1


@pytest.mark.slow
def test_a_killed_sweep_driver_loses_nothing_and_duplicates_nothing(store):
    args = [sys.executable, "-m", "genlab.cli", "sweep", "--dataset", "digits", "--models",
            "mixture", "--epsilons", "inf,4", "--seeds", "0,1", "--epochs", "1", "--quiet"]
    env = {**os.environ, "GENLAB_HOME": str(store.home)}
    driver = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and driver.poll() is None:
        if any(record_complete(r.record) for r in store.list()):
            break
        time.sleep(0.2)
    assert driver.poll() is None, driver.stderr.read().decode()
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    assert len(store.list()) in (1, 2)  # one done, maybe one in flight; its worker lives on

    again = subprocess.run(args + ["--json"], env=env, capture_output=True, text=True,
                           timeout=400)
    assert again.returncode == 0, again.stderr
    out = json.loads(again.stdout)
    hashes = [c.config_hash() for c in SweepSpec.from_dict(out["sweep"]).configs()]
    assert rows_per_hash(store.home) == dict.fromkeys(hashes, 1)
    runs = store.list()
    assert len(runs) == 4 and {r.status for r in runs} == {"finished"}
    assert all(record_complete(r.record) for r in runs)
    assert [r["run_id"] for r in out["runs"]] == [store.find_by_hash(h)[0].id for h in hashes]
    assert out["failed"] == [] and out["sweep"]["epsilons"] == ["inf", 4.0]
    assert [r["record"]["privacy"]["epsilon"] is None for r in out["runs"]] == [
        True, True, False, False]
