"""Tests for the run store (genlab.runs) against a real SQLite file in a temporary home."""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import pandas as pd
import pytest

from genlab import runs
from genlab.errors import RunNotFound, StoreError
from genlab.runs import RunInfo, RunStore

REPO = Path(__file__).resolve().parents[1]
CONFIG = {"model": "vae", "epochs": 3, "optim": {"lr": 0.001, "betas": [0.9, 0.99]}}


def run_python(code: str, *args: str, wait: bool = True):
    """Run ``code`` in a fresh Python process that can import genlab."""
    cmd = [sys.executable, "-c", code, *args]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=True)


def raw_sql(home: Path, sql: str, params: tuple = ()) -> None:
    """Change the database behind the store's back (to age a run or fake a reused pid)."""
    with sqlite3.connect(home / "genlab.db") as conn:
        conn.execute(sql, params)
    conn.close()


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path)


def test_create_get_list_round_trip(store: RunStore) -> None:
    first = store.create_run(model="vae", dataset="digits", config=CONFIG, owner="ana",
                             config_hash="abc123")
    second = store.create_run(model="gan", dataset="data/My-Faces.npz", config={"epochs": 1})
    assert first.startswith("vae-digits-") and len(first.rsplit("-", 1)[1]) == 6
    assert second.startswith("gan-my_faces-")

    run = store.get(first)
    assert isinstance(run, RunInfo)
    assert (run.model, run.dataset, run.status, run.owner) == ("vae", "digits", "queued", "ana")
    assert run.config == CONFIG and run.record == {} and run.summary == {}
    assert (run.config_hash, run.progress, run.pid) == ("abc123", 0.0, None)
    assert run.cancel_requested is False
    assert run.started is None and run.finished is None and run.created <= run.updated
    assert store.get(second).dataset == "data/My-Faces.npz"
    assert json.loads(json.dumps(run.to_dict()))["config"] == CONFIG

    store.finish(first, summary={"train_loss": 1.5, "test_loss": 1.75, "epochs": 3})
    store.update_record(first, "performance", {"fd": 12.5})
    again = store.get(first)
    assert again.summary == {"train_loss": 1.5, "test_loss": 1.75, "epochs": 3}
    assert again.record == {"performance": {"fd": 12.5}}

    assert [r.id for r in store.list()] == [second, first]  # newest first
    assert [r.id for r in store.list(status="finished")] == [first]
    assert [r.id for r in store.list(model="gan")] == [second]
    assert [r.id for r in store.list(dataset="digits", model="vae")] == [first]
    assert [r.id for r in store.list(limit=1)] == [second]
    assert store.list(status="failed") == []


def test_prefix_lookup_and_lookup_errors(store: RunStore) -> None:
    vae = store.create_run(model="vae", dataset="digits", config={})
    twin = store.create_run(model="vae", dataset="digits", config={})
    gan = store.create_run(model="gan", dataset="digits", config={})
    assert store.get("gan-").id == gan
    unique = next(i for i in range(1, len(vae) + 1) if vae[:i] != twin[:i])  # shortest unique
    assert store.get(vae[:unique]).id == vae

    with pytest.raises(StoreError, match="ambiguous") as ambiguous:
        store.get("vae-digits-")
    assert not isinstance(ambiguous.value, RunNotFound)
    assert vae in str(ambiguous.value)

    with pytest.raises(RunNotFound, match="unknown run 'nope-123'") as missing:
        store.get("nope-123")
    assert "genlab runs list" in str(missing.value)
    with pytest.raises(RunNotFound):
        store.get("")
    with pytest.raises(RunNotFound, match="nope"):
        store.log("nope", epoch=0, step=0, metrics={"loss": 1.0})


def test_history_progress_and_status_transitions(store: RunStore) -> None:
    run_id = store.create_run(model="vae", dataset="digits", config={})
    store.claim(run_id)
    claimed = store.get(run_id)
    assert claimed.status == "running" and claimed.pid == os.getpid()
    assert claimed.started is not None

    for step, loss in enumerate([3.0, 2.5, 2.25]):
        store.log(run_id, epoch=step // 2, step=step, metrics={"loss": loss, "kl": step / 4},
                  progress=(step + 1) / 4)
    history = store.history(run_id)
    assert [(h["epoch"], h["step"], h["loss"], h["kl"]) for h in history] == [
        (0, 0, 3.0, 0.0), (0, 1, 2.5, 0.25), (1, 2, 2.25, 0.5)]
    assert history[0]["time"] <= history[1]["time"] <= history[2]["time"]
    assert store.get(run_id).progress == pytest.approx(0.75)
    store.set_progress(run_id, 0.8)
    assert store.get(run_id).progress == pytest.approx(0.8) and len(store.history(run_id)) == 3
    store.set_progress(run_id, 7.0)
    assert store.get(run_id).progress == 1.0  # clipped to 0..1

    assert store.cancel_requested(run_id) is False
    assert store.request_cancel(run_id) == "running"
    assert store.cancel_requested(run_id) is True
    store.mark_cancelled(run_id)
    cancelled = store.get(run_id)
    assert cancelled.status == "cancelled" and cancelled.finished is not None
    with pytest.raises(StoreError, match="cancelled"):
        store.claim(run_id)

    done = store.create_run(model="vae", dataset="digits", config={})
    store.claim(done)
    store.finish(done, summary={"test_loss": 0.5})
    finished = store.get(done)
    assert (finished.status, finished.progress) == ("finished", 1.0)
    assert finished.summary == {"test_loss": 0.5} and finished.finished >= finished.started
    assert store.request_cancel(done) == "finished"  # a no-op on a run that ended
    assert store.cancel_requested(done) is False and store.get(done).status == "finished"

    broken = store.create_run(model="vae", dataset="digits", config={})
    store.fail(broken, "loss became NaN at step 3")
    failed = store.get(broken)
    assert (failed.status, failed.error) == ("failed", "loss became NaN at step 3")
    with pytest.raises(StoreError, match="unknown run status"):
        store.create_run(model="vae", dataset="digits", config={}, status="paused")


def test_everything_persists_after_reopening(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    run_id = store.create_run(model="vae", dataset="digits", config=CONFIG)
    store.claim(run_id)
    store.log(run_id, epoch=0, step=7, metrics={"loss": 0.5}, progress=0.5)
    store.update_record(run_id, "privacy", {"epsilon": 8.0})
    store.finish(run_id, summary={"epochs": 1})
    reopened = RunStore(tmp_path).get(run_id)
    assert (reopened.status, reopened.config) == ("finished", CONFIG)
    assert reopened.record == {"privacy": {"epsilon": 8.0}}
    assert [h["step"] for h in RunStore(tmp_path).history(run_id)] == [7]

    written = run_python(
        "import sys; from genlab.runs import RunStore\n"
        "store = RunStore(sys.argv[1])\n"
        "run = store.create_run(model='gan', dataset='faces', config={'epochs': 2})\n"
        "store.log(run, epoch=1, step=3, metrics={'loss': 0.25})\n"
        "store.finish(run, summary={'test_loss': 0.125})\n"
        "print(run)\n",
        str(tmp_path),
    )
    other = written.stdout.strip()
    from_child = RunStore(tmp_path).get(other)
    assert (from_child.status, from_child.config, from_child.summary) == (
        "finished", {"epochs": 2}, {"test_loss": 0.125})
    assert [(h["step"], h["loss"]) for h in RunStore(tmp_path).history(other)] == [(3, 0.25)]


def test_update_record_replaces_one_block_and_keeps_the_others(store: RunStore) -> None:
    run_id = store.create_run(model="vae", dataset="digits", config={})
    store.update_record(run_id, "cost", {"seconds": 12.0})
    store.update_record(run_id, "performance", {"fd": 3.5, "precision": 0.75})
    store.update_record(run_id, "performance", {"fd": 2.5})
    assert store.get(run_id).record == {"cost": {"seconds": 12.0}, "performance": {"fd": 2.5}}


def test_export_csv_and_json(store: RunStore) -> None:
    vae = store.create_run(model="vae", dataset="digits", config=CONFIG)
    store.finish(vae, summary={"train_loss": 1.25, "test_loss": 1.5})
    store.update_record(vae, "performance", {"fd": 4.5})
    store.update_record(vae, "cost", {"seconds": 30.0})
    gan = store.create_run(model="gan", dataset="faces", config={"epochs": 9, "noise": 64})

    rows = list(csv.DictReader(io.StringIO(store.export("csv"))))
    assert [row["id"] for row in rows] == [gan, vae]
    by_id = {row["id"]: row for row in rows}
    assert list(rows[0])[:5] == ["id", "model", "dataset", "status", "created"]
    assert by_id[vae]["config.optim.lr"] == "0.001"
    assert json.loads(by_id[vae]["config.optim.betas"]) == [0.9, 0.99]
    assert by_id[vae]["summary.test_loss"] == "1.5" and by_id[vae]["performance.fd"] == "4.5"
    assert by_id[vae]["cost.seconds"] == "30.0" and by_id[vae]["status"] == "finished"
    assert by_id[gan]["config.noise"] == "64" and by_id[gan]["performance.fd"] == ""

    frame = pd.read_csv(io.StringIO(store.export("csv")))
    assert len(frame) == 2 and frame.set_index("id").loc[gan, "config.epochs"] == 9

    exported = json.loads(store.export("json"))
    assert [entry["id"] for entry in exported] == [gan, vae]
    assert exported[1]["config"] == CONFIG and exported[1]["record"]["performance"] == {"fd": 4.5}
    assert "history" not in exported[1]
    with pytest.raises(StoreError, match="csv or json"):
        store.export("xlsx")


def _wait_until_zombie(pid: int) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        stat = Path(f"/proc/{pid}/stat")
        if not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return
        time.sleep(0.01)


def test_recover_fails_runs_whose_worker_died(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = store.create_run(model="vae", dataset="digits", config={})
        store.claim(dead, pid=child.pid)
        alive = store.create_run(model="vae", dataset="digits", config={})
        store.claim(alive, pid=os.getpid())
        done = store.create_run(model="vae", dataset="digits", config={})
        store.finish(done, summary={"epochs": 1})
        young = store.create_run(model="vae", dataset="digits", config={})  # worker starting
        stale = store.create_run(model="vae", dataset="digits", config={})
        raw_sql(tmp_path, "UPDATE runs SET created = created - 120 WHERE id = ?", (stale,))
        assert RunStore(tmp_path, recover=False).recover() == [stale]  # the child still runs
        raw_sql(tmp_path, "UPDATE runs SET status = 'queued' WHERE id = ?", (stale,))

        os.kill(child.pid, signal.SIGKILL)  # not reaped: it stays a zombie
        _wait_until_zombie(child.pid)
        assert sorted(RunStore(tmp_path, recover=False).recover()) == sorted([dead, stale])

        reopened = RunStore(tmp_path)
        failed = reopened.get(dead)
        assert failed.status == "failed" and failed.finished is not None
        assert failed.error == f"worker process {child.pid} died before the run finished"
        assert reopened.get(stale).status == "failed"
        untouched = [reopened.get(run_id).status for run_id in (alive, done, young)]
        assert untouched == ["running", "finished", "queued"]
        assert reopened.recover() == []
    finally:
        child.kill()
        child.wait()


def test_recover_treats_a_reused_pid_as_dead(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    run_id = store.create_run(model="vae", dataset="digits", config={})
    store.set_pid(run_id, os.getpid())
    assert store.recover() == []
    raw_sql(tmp_path, "UPDATE runs SET pid_start = pid_start + 1 WHERE id = ?", (run_id,))
    assert store.recover() == [run_id]
    assert str(os.getpid()) in store.get(run_id).error


def test_delete_removes_row_history_and_artifacts(store: RunStore) -> None:
    run_id = store.create_run(model="vae", dataset="digits", config={})
    store.log(run_id, epoch=0, step=0, metrics={"loss": 1.0})
    folder = store.artifacts_dir(run_id)
    (folder / "weights.safetensors").write_bytes(b"\0" * 16)
    assert folder == store.home / "runs" / run_id and folder.is_dir()
    store.finish(run_id, summary={})
    store.delete(run_id)
    assert not folder.exists()
    with pytest.raises(RunNotFound):
        store.get(run_id)
    with sqlite3.connect(store.db_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM history").fetchone()[0] == 0
    conn.close()

    active = store.create_run(model="vae", dataset="digits", config={})
    store.claim(active)  # this process is its live worker
    with pytest.raises(StoreError, match="running"):
        store.delete(active)
    assert store.get(active).status == "running"
    with pytest.raises(StoreError, match="not a run id"):
        store.artifacts_dir("../escape")


def test_a_corrupt_database_raises_one_line_store_error(tmp_path: Path) -> None:
    (tmp_path / "genlab.db").write_bytes(b"this is not an SQLite database at all\n" * 200)
    with pytest.raises(StoreError) as caught:
        RunStore(tmp_path)
    message = str(caught.value)
    assert str(tmp_path / "genlab.db") in message and "\n" not in message
    assert "corrupt" in message and "GENLAB_HOME" in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert "sqlite3" not in "".join(traceback.format_exception(caught.value))


def test_a_store_written_by_a_newer_genlab_is_refused(tmp_path: Path) -> None:
    RunStore(tmp_path)
    raw_sql(tmp_path, "PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="newer genlab"):
        RunStore(tmp_path)


def test_a_locked_database_raises_store_error(store: RunStore, monkeypatch) -> None:
    monkeypatch.setattr(runs, "_BUSY_TIMEOUT_S", 0.2)
    store = RunStore(store.home)  # a new store object opens connections with the short timeout
    holder = sqlite3.connect(store.db_path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StoreError, match="locked by another process; try again"):
            store.create_run(model="vae", dataset="digits", config={})
    finally:
        holder.close()
    assert store.create_run(model="vae", dataset="digits", config={})  # released: works again


def test_concurrent_writers_lose_no_rows(store: RunStore) -> None:
    writer = (
        "import sys, time; from genlab.runs import RunStore\n"
        "store = RunStore(sys.argv[1], recover=False)\n"
        "time.sleep(max(0.0, float(sys.argv[3]) - time.time()))  # start together\n"
        "for step in range(50):\n"
        "    store.log(sys.argv[2], epoch=0, step=step, metrics={'loss': step / 2},"
        " progress=(step + 1) / 50)\n"
        "    time.sleep(0.002)  # spread the writes so that the four processes interleave\n"
    )
    ids = [store.create_run(model="vae", dataset="digits", config={"seed": i}) for i in range(4)]
    start = str(time.time() + 0.5)
    procs = [run_python(writer, str(store.home), run_id, start, wait=False) for run_id in ids]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()

    def log_ten(run_id: str) -> None:  # threads share the store object, never a connection
        for step in range(10):
            store.log(run_id, epoch=1, step=step, metrics={"loss": 0.0})

    threads = [threading.Thread(target=log_ten, args=(run_id,)) for run_id in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    for run_id in ids:
        history = store.history(run_id)
        assert [h["step"] for h in history[:50]] == list(range(50))
        assert [h["loss"] for h in history[:50]] == [s / 2 for s in range(50)]
        assert len(history) == 60 and store.get(run_id).progress == 1.0
    with sqlite3.connect(store.db_path) as conn:
        sql = "SELECT run_id FROM history WHERE epoch = 0 ORDER BY seq"
        order = [run_id for (run_id,) in conn.execute(sql)]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert len(order) == 200
    assert sum(a != b for a, b in itertools.pairwise(order)) > 10  # the writers really overlapped
