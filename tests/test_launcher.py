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
