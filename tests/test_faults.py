"""Faults: a worker killed mid-run while another waits for the device, the Streamlit server killed
while a job it started trains, and a corrupt or locked store on the CLI and in the dashboard.

(A Ray worker killed mid-sweep is in test_ray_executor.py, a killed run's resume in
test_resume.py, a killed sweep driver in test_sweep.py.)
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from browser_support import BROWSER_MARKS, IDLE, free_port, wait_healthy
from test_dashboard import no_exception, open_page

from genlab import jobs, runs
from genlab.checkpoint import WEIGHTS_FILE
from genlab.cli import main
from genlab.config import make_run_config
from genlab.runs import RunStore

REPO = Path(__file__).resolve().parents[1]
PAGES = ("home", "train", "explore", "explain", "privacy", "tradeoffs")
CORRUPT = ("is not a genlab run store (the file is corrupt); move it aside or point GENLAB_HOME "
           "to another folder")
LOCKED = "is locked by another process; try again"


def wait_until(store: RunStore, run_id: str, predicate, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = store.get(run_id)
        if predicate(info):
            return info
        time.sleep(0.1)
    raise AssertionError(f"{run_id} never got there; last: {info.status}")


# ----------------------------------------------------------------------------- a killed worker
@pytest.mark.slow
def test_a_sigkilled_worker_fails_its_run_and_the_queued_job_runs_next(genlab_home):
    store = RunStore(genlab_home)
    victim = jobs.submit(store, make_run_config("vae", "digits", epochs=500, seed=5))
    info = wait_until(store, victim, lambda i: i.status == "running" and i.progress > 0)
    waiting = jobs.submit(store, make_run_config("mixture", "digits", epochs=2, seed=5))
    time.sleep(1.0)
    assert store.get(waiting).status == "queued"  # behind the victim: one job per device
    os.kill(info.pid, signal.SIGKILL)
    assert jobs.wait(store, waiting, timeout=120) == "finished"  # the device lock was freed
    reopened = RunStore(genlab_home)  # opening the store recovers dead workers' runs
    failed = reopened.get(victim)
    assert failed.status == "failed"
    assert failed.error == f"worker process {info.pid} died before the run finished"
    assert [h["epoch"] for h in reopened.history(waiting)] == [1, 2]
    assert (reopened.artifacts_dir(waiting) / WEIGHTS_FILE).is_file()


# ----------------------------------------------------------------------------- a killed server
@pytest.mark.slow
@BROWSER_MARKS[0]
@BROWSER_MARKS[1]
def test_a_job_outlives_the_killed_streamlit_server_and_lands_in_the_store(browser_page,
                                                                           tmp_path):
    home, log = tmp_path / "home", tmp_path / "streamlit.log"
    port = free_port()
    env = {**os.environ, "GENLAB_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.port",
           str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
           "--browser.gatherUsageStats", "false"]
    with open(log, "wb") as out:
        server = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, server, log)
        page = browser_page
        page.goto(f"{url}/train")
        page.wait_for_selector(IDLE, timeout=60_000)
        epochs = page.get_by_label("Epochs", exact=True)
        epochs.fill("12")
        epochs.press("Tab")
        page.get_by_role("button", name=re.compile("Start training")).click()
        started = page.get_by_text(re.compile(r"Started run vae-digits-\w+"))
        started.wait_for(timeout=60_000)
        run_id = re.search(r"vae-digits-\w+", started.inner_text()).group(0)
        store = RunStore(home)
        wait_until(store, run_id, lambda i: i.status == "running" and i.progress > 0)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert store.get(run_id).status == "running"  # the worker is its own process session
    assert jobs.wait(store, run_id, timeout=300) == "finished"
    info = RunStore(home).get(run_id)
    assert info.summary["epochs"] == 12 and info.progress == 1.0
    assert [h["epoch"] for h in store.history(run_id)] == list(range(1, 13))
    assert (store.artifacts_dir(run_id) / WEIGHTS_FILE).is_file()


# ----------------------------------------------------------------------------- a bad store
@pytest.fixture
def corrupt_home(genlab_home, monkeypatch, tmp_path) -> Path:
    monkeypatch.setenv("GENLAB_DEMO_RECORDS", str(tmp_path / "absent.json"))
    (genlab_home / "genlab.db").write_bytes(b"\x00garbage, not SQLite\xff" * 300)
    return genlab_home


@pytest.fixture
def locked_home(genlab_home, monkeypatch, tmp_path):
    """A store whose file another connection holds under an exclusive lock (no reads either)."""
    monkeypatch.setenv("GENLAB_DEMO_RECORDS", str(tmp_path / "absent.json"))
    monkeypatch.setattr(runs, "_BUSY_TIMEOUT_S", 0.2)
    subprocess.run([sys.executable, "-c", "import sys; from genlab.runs import RunStore; "
                    "RunStore(sys.argv[1])", str(genlab_home)], check=True)
    holder = sqlite3.connect(genlab_home / "genlab.db", isolation_level=None)
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("CREATE TABLE held (x)")  # a write: the lock is held until the end
    yield genlab_home
    holder.close()


@pytest.mark.parametrize("argv", [
    ["runs", "list"],
    ["runs", "show", "vae-digits-000000"],
    ["train", "--model", "mixture", "--epochs", "1", "--quiet"],
    ["sweep", "--models", "mixture", "--epochs", "1", "--quiet"],
    ["runs", "resume", "vae-digits-000000"],
])
def test_a_corrupt_store_is_one_line_on_every_command(corrupt_home, argv, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"genlab: error: {corrupt_home / 'genlab.db'} {CORRUPT}\n"
    assert (corrupt_home / "genlab.db").read_bytes().startswith(b"\x00garbage")  # left as it was


@pytest.mark.parametrize("argv", [["runs", "list"], ["train", "--model", "mixture", "--epochs",
                                                     "1", "--quiet"]])
def test_a_locked_store_is_one_line_on_the_cli(locked_home, argv, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (f"genlab: error: the run store {locked_home / 'genlab.db'} "
                            f"{LOCKED}\n")


@pytest.mark.parametrize("page", PAGES)
def test_a_corrupt_store_is_an_error_on_every_page(corrupt_home, page):
    at = open_page(page)
    no_exception(at)
    assert len(at.error) == 1 and CORRUPT in at.error[0].value, [e.value for e in at.error]


@pytest.mark.parametrize("page", PAGES)
def test_a_locked_store_is_an_error_on_every_page(locked_home, page):
    at = open_page(page)
    no_exception(at)
    assert len(at.error) == 1 and LOCKED in at.error[0].value, [e.value for e in at.error]
