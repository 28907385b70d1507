"""The warm worker launcher: it forks workers for its own user, refuses malformed requests
without forking, stays one thread, and stops when asked."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from genlab import launcher

pytestmark = pytest.mark.skipif(not launcher.enabled(), reason="the launcher is Linux-only")


def _ask_raw(payload: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(10)
        conn.connect(launcher._address(launcher.code_key()))
        conn.sendall(payload)
        return conn.recv(200)


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_a_forked_worker_is_the_launchers_child_and_writes_to_its_log(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLAB_HOME", str(tmp_path))
    pid = launcher.warm()
    assert pid is not None and len(os.listdir(f"/proc/{pid}/task")) == 1  # one thread to fork
    log = tmp_path / "worker.log"
    worker = launcher.spawn(["no-such-run"], env={**os.environ, "GENLAB_HOME": str(tmp_path)},
                            log=log)
    assert worker is not None and worker != pid and _parent(worker) == pid
    deadline = time.monotonic() + 60
    while Path(f"/proc/{worker}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)  # the launcher reaps it (SIGCHLD ignored): no zombie stays
    assert not Path(f"/proc/{worker}").exists()
    assert "no-such-run" in log.read_text()  # the worker's one-line reason, in its own log
    assert launcher.warm(timeout=5) == pid  # the launcher serves on


@pytest.mark.parametrize("payload", [b'{"args": 5}\n', b'{"args": ["x"], "env": {"A": 1}, '
                                     b'"cwd": "/", "log": "/tmp/l"}\n'])
def test_a_malformed_request_is_refused_without_a_fork(payload):
    pid = launcher.warm()
    assert _ask_raw(payload) == b'{"error": "malformed request"}\n'
    assert _ask_raw(b"not json\n") == b""  # not even an answer
    assert launcher.warm(timeout=5) == pid


def test_switched_off_it_forks_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(launcher.SWITCH, "0")
    assert launcher.spawn(["x"], env={}, log=tmp_path / "log") is None
    assert launcher.warm() is None


def test_stop_ends_it():
    assert launcher.warm() is not None
    assert launcher.stop() is True
    assert launcher.stop() is False  # nobody left to answer


# ------------------------------------------------------- a fresh worker hands its turn over
@pytest.mark.parametrize("warm", [True, False])
def test_a_fresh_worker_hands_its_turn_to_a_launcher_that_serves_by_then(genlab_home, monkeypatch,
                                                                         warm):
    """A job submitted before the launcher served got a fresh worker (spawn answers None here);
    when its turn comes and a launcher serves, a forked worker takes the ticket and the run over
    and trains it. Without a launcher the fresh worker trains it itself."""
    from genlab import fairqueue, jobs
    from genlab.config import make_run_config
    from genlab.runs import RunStore

    if warm:
        assert launcher.warm() is not None
    else:
        monkeypatch.setenv(launcher.SWITCH, "0")
    monkeypatch.setattr(launcher, "spawn", lambda *a, **k: None)  # as before the launcher served
    store = RunStore(genlab_home)
    run_id = jobs.submit(store, make_run_config("mixture", "digits", epochs=1, seed=0))
    fresh = store.get(run_id).pid
    assert jobs.wait(store, run_id, timeout=120) == "finished", store.get(run_id).error
    trained_by = store.get(run_id).pid  # the process that claimed the run and trained it
    assert (trained_by != fresh) is warm
    assert fairqueue.tickets(store) == []  # the ticket was freed by whoever held it last
    log = (store.artifacts_dir(run_id) / "worker.log").read_text()
    assert "Traceback" not in log and "take over" not in log


def test_a_worker_takes_over_only_a_granted_ticket_of_the_process_named(genlab_home):
    from genlab import fairqueue, worker
    from genlab.runs import RunStore

    store = RunStore(genlab_home)
    run_id = store.create_run(model="mixture", dataset="digits", config={})
    ticket = fairqueue.enqueue(store, run_id, "cpu", owner="ann", pid=os.getpid())
    for holder in (os.getpid() + 1_000_000, os.getpid()):  # another process's; not yet granted
        assert worker._take_over(ticket, holder, [run_id, "--ticket", str(ticket)]) == 1
    (left,) = fairqueue.tickets(store)
    assert left.pid == os.getpid() and left.granted is None
    assert fairqueue.take_over(store, ticket, os.getpid() + 1_000_000, 1) is False
    assert fairqueue.take_over(store, ticket, os.getpid(), os.getppid()) is True
    fairqueue.release(store, ticket)  # another process holds it now: this one frees nothing
    assert [t.pid for t in fairqueue.tickets(store)] == [os.getppid()]
    assert fairqueue.find(store, ticket).pid == os.getppid()
    assert fairqueue.find(store, ticket + 1) is None and fairqueue.find(store, None) is None


def test_the_launcher_says_in_the_homes_log_when_it_serves_and_when_it_exits(tmp_path,
                                                                             monkeypatch):
    monkeypatch.setenv("GENLAB_HOME", str(tmp_path))
    monkeypatch.setenv(launcher.IDLE, "1")
    launcher.start(f"log-test-{os.getpid()}-{time.time_ns()}")  # its own launcher, not the suite's
    log = tmp_path / "launcher.log"
    deadline = time.monotonic() + 120
    while "exiting" not in (text := log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, f"no exit in the launcher's log: {text!r}"
        time.sleep(0.2)
    serving, exiting = text.splitlines()
    assert "serving after" in serving and "s of imports; exits after 1 s idle" in serving
    assert exiting.endswith("idle for 1 s; exiting")
