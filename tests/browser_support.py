"""What the browser tests share: Chromium's path and flags, the idle selector, the marks, and a
real ``streamlit run`` server on a free loopback port (``dashboard_server``). The
``browser_page`` fixture lives in conftest.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM = os.environ.get("GENLAB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'

BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(os.environ.get("GENLAB_BROWSER_TESTS", "1") != "1",
                       reason="browser tests are off (GENLAB_BROWSER_TESTS != 1)"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"streamlit exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                if reply.read().decode().strip() == "ok":
                    return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"streamlit did not answer /_stcore/health in {timeout:.0f} s:\n"
                f"{log.read_text()[-3000:]}")


@contextmanager
def dashboard_server(home: Path, log: Path, *, env: dict | None = None,
                     args: tuple[str, ...] = ()):
    """A dashboard server on a free loopback port over ``home``; yields its URL.

    Args:
        env: Extra environment variables (e.g. ``GENLAB_CLASSROOM``).
        args: Extra ``streamlit run`` options (e.g. ``--secrets.files PATH``).
    """
    port = free_port()
    env = {**os.environ, "GENLAB_HOME": str(home), "PYTHONUNBUFFERED": "1", **(env or {})}
    cmd = [sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true",
           "--browser.gatherUsageStats", "false", *args]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
