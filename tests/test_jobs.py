"""Background jobs: real worker processes, cancelling, queueing, and a worker killed mid-run."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genlab import jobs
from genlab.checkpoint import WEIGHTS_FILE, load_run_model
from genlab.config import make_run_config
from genlab.procs import EVALUATE_PID
from genlab.runs import RunStore
from genlab.viz import image_grid


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLAB_HOME", str(tmp_path))
    return RunStore(tmp_path)


def _wait_for(store, run_id, predicate, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = store.get(run_id)
        if predicate(info):
            return info
        time.sleep(0.1)
    raise AssertionError(f"{run_id} never reached the state; last: {info.status}")


def test_background_run_finishes_with_artifacts_and_reloads(store):
    cfg = make_run_config("vae", "digits", epochs=3, seed=4)
    run_id = jobs.submit(store, cfg)
    assert store.get(run_id).status in ("queued", "running")
    assert jobs.wait(store, run_id, timeout=120) == "finished"
    info = store.get(run_id)
    assert info.progress == 1.0 and info.summary["epochs"] == 3
    assert [h["epoch"] for h in store.history(run_id)] == [1, 2, 3]
    folder = store.artifacts_dir(run_id)
    for name in ("config.json", WEIGHTS_FILE, jobs.SAMPLE_GRID):
        assert (folder / name).is_file()
    # weights reload into a fresh model and give the very samples the worker drew
    model, loaded_cfg, _ = load_run_model(store, run_id)
    assert loaded_cfg == cfg
    grid = image_grid(model.sample(64, generator=torch.Generator().manual_seed(4)), nrow=8, scale=2)
    assert np.array_equal(grid, np.asarray(Image.open(folder / jobs.SAMPLE_GRID)))


def test_cancel_a_running_job(store):
    run_id = jobs.submit(store, make_run_config("vae", "digits", epochs=500))
    _wait_for(store, run_id, lambda i: i.status == "running" and i.progress > 0)
    assert jobs.cancel(store, run_id) == "running"
    assert jobs.wait(store, run_id, timeout=30) == "cancelled"
    assert store.get(run_id).progress < 1


def test_jobs_queue_one_per_device_and_a_queued_job_can_be_cancelled(store):
    first = jobs.submit(store, make_run_config("vae", "digits", epochs=500))
    _wait_for(store, first, lambda i: i.status == "running")
    second = jobs.submit(store, make_run_config("vae", "digits", epochs=2, seed=1))
    time.sleep(2.0)
    assert store.get(second).status == "queued"  # waits for the device
    assert jobs.cancel(store, second) == "queued"
    assert jobs.wait(store, second, timeout=30) == "cancelled"
    assert store.get(first).status == "running"
    jobs.cancel(store, first)
    assert jobs.wait(store, first, timeout=30) == "cancelled"


def test_killed_worker_is_marked_failed_and_others_are_intact(store):
    done = jobs.submit(store, make_run_config("vae", "digits", epochs=1))
    assert jobs.wait(store, done, timeout=60) == "finished"
    victim = jobs.submit(store, make_run_config("vae", "digits", epochs=500, seed=2))
    info = _wait_for(store, victim, lambda i: i.status == "running" and i.progress > 0)
    os.kill(info.pid, signal.SIGKILL)
    time.sleep(0.5)
    reopened = RunStore(store.home)  # the next start of the store recovers
    failed = reopened.get(victim)
    assert failed.status == "failed"
    assert str(info.pid) in failed.error
    intact = reopened.get(done)
    assert intact.status == "finished" and intact.summary == store.get(done).summary
    assert (reopened.artifacts_dir(done) / WEIGHTS_FILE).is_file()


def test_submit_refuses_bad_data_without_creating_a_run(store, tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.zeros((30, 5), np.float32), y=np.zeros(30, np.int64))
    with pytest.raises(Exception, match="images have shape"):
        jobs.submit(store, make_run_config("vae", str(tmp_path / "bad.npz")))
    assert store.list() == []


def test_background_audit_fills_the_privacy_record(store):
    cfg = make_run_config("mixture", "digits", epochs=2, seed=0, privacy={"epsilon": 4.0})
    run_id = store.create_run(model=cfg.model, dataset="digits", config=cfg.to_dict(),
                              config_hash=cfg.config_hash())
    jobs.execute_run(store, run_id)
    jobs.submit_audit(store, run_id, reference=True)
    assert jobs.audit_state(store, run_id) == (True, None)
    deadline = time.monotonic() + 180
    while jobs.audit_state(store, run_id)[0] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert jobs.audit_state(store, run_id) == (False, None)
    block = store.get(run_id).record["privacy"]
    assert set(block["attacks"]) == {"loss", "reference"}
    assert 0 <= block["epsilon_lower_bound"] <= block["epsilon"] <= 4.0
    assert not (store.artifacts_dir(run_id) / jobs.AUDIT_PID).exists()


def test_a_failed_background_audit_leaves_one_line(store):
    cfg = make_run_config("mixture", "digits", epochs=1, seed=0)
    run_id = store.create_run(model=cfg.model, dataset="digits", config=cfg.to_dict(),
                              config_hash=cfg.config_hash())  # queued: never trained
    jobs.submit_audit(store, run_id, reference=False)
    deadline = time.monotonic() + 60
    while jobs.audit_state(store, run_id)[0] and time.monotonic() < deadline:
        time.sleep(0.2)
    running, error = jobs.audit_state(store, run_id)
    assert not running and "not finished" in error and "\n" not in error
    assert "privacy" not in store.get(run_id).record


_AUTOGROUP_SWITCH = Path("/proc/sys/kernel/sched_autogroup_enabled")
AUTOGROUP = _AUTOGROUP_SWITCH.is_file() and _AUTOGROUP_SWITCH.read_text().strip() == "1"


@pytest.mark.parametrize("setting, step", [(None, 10), ("3", 3), ("0", 0)])
def test_a_worker_runs_at_a_lower_priority_than_the_page_that_started_it(store, monkeypatch,
                                                                          setting, step):
    if setting is None:  # `make test` runs the suite's jobs at its own priority
        monkeypatch.delenv("GENLAB_WORKER_NICE", raising=False)
    else:
        monkeypatch.setenv("GENLAB_WORKER_NICE", setting)
    first = jobs.submit(store, make_run_config("vae", "digits", epochs=500))
    second = jobs.submit(store, make_run_config("vae", "digits", epochs=1, seed=1))  # queued
    try:
        for run_id in (first, second):
            pid = _wait_for(store, run_id, lambda i: i.pid is not None).pid
            deadline = time.monotonic() + 30  # the worker sets its priority as it starts
            while (nice := os.getpriority(os.PRIO_PROCESS, pid)) == os.nice(0) and step:
                assert time.monotonic() < deadline, f"{run_id} kept the parent's priority"
                time.sleep(0.05)
            assert nice == min(19, os.nice(0) + step)
            if AUTOGROUP and step:  # and its session, between which the kernel shares the CPU
                assert Path(f"/proc/{pid}/autogroup").read_text().split()[-1] == str(nice)
    finally:
        for run_id in (first, second):
            jobs.cancel(store, run_id)
            jobs.wait(store, run_id, timeout=60)


@pytest.mark.parametrize("evaluate_only", [False, True])
def test_a_jobs_pid_and_evaluation_marker_are_written_before_its_ticket_is_attached(
        store, monkeypatch, evaluate_only):
    # A warm launcher's worker takes over only an attached ticket, and moves the run's pid and
    # marker where they name the fresh worker: written after, they would name one that exits.
    cfg = make_run_config("vae", "digits", epochs=1, seed=0)
    run_id = store.create_run(model="vae", dataset="digits", config=cfg.to_dict(), owner="ann",
                              status="finished" if evaluate_only else "queued")
    seen = {}
    attach = jobs.fairqueue.attach

    def spy(store_, ticket, pid):
        marker = store.artifacts_dir(run_id) / EVALUATE_PID
        seen.update(pid=pid, run_pid=store.get(run_id).pid,
                    marker=marker.read_text().split()[0] if marker.exists() else None)
        attach(store_, ticket, pid)

    monkeypatch.setattr(jobs, "_spawn", lambda *a: os.getpid())  # no worker: the order is tested
    monkeypatch.setattr(jobs.fairqueue, "attach", spy)
    if evaluate_only:
        pid = jobs.submit_evaluation(store, run_id)
    else:
        pid = jobs.start_worker(store, run_id, evaluate=True)
    assert seen == {"pid": pid, "run_pid": None if evaluate_only else pid, "marker": str(pid)}
