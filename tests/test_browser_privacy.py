"""End to end: the Privacy page in a real headless Chromium (Playwright) over a real server.

Two VAEs on digits, one trained with DP at ε = 3 and one without, both audited with the reference
model, are compared side by side. The full-page screenshot lands in
``tests/artifacts/privacy.png`` (gitignored) for a human to look at: the ROC, the ε pair and the
exposed images must be readable. Skipped with ``GENLAB_BROWSER_TESTS=0``, like
``test_browser.py``; when enabled, a missing Chromium is a failure.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from test_privacy_page import train_run

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM = os.environ.get("GENLAB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
# Big enough that the VAE draws digits, small enough to train in seconds on a laptop CPU.
SETTINGS = {"epochs": 15, "arch": "mlp", "latent_dim": 8, "hidden": 128}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("GENLAB_BROWSER_TESTS", "1") != "1",
                       reason="browser tests are off (GENLAB_BROWSER_TESTS != 1)"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """A dashboard server over a home with an audited DP run and an audited non-DP run; yields
    ``(url, dp_run_id, plain_run_id)``."""
    home, log = tmp_path / "home", tmp_path / "streamlit.log"
    home.mkdir()
    dp = train_run(home, privacy={"epsilon": 3.0}, audit=True, **SETTINGS)
    plain = train_run(home, audit=True, **SETTINGS)
    port = free_port()
    env = {**os.environ, "GENLAB_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true",
           "--browser.gatherUsageStats", "false"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield url, dp, plain
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
            return reply.read().decode().strip() == "ok"
    except OSError:
        return False


@pytest.fixture
def browser_page():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium is missing at {CHROMIUM}: install it (apt-get install chromium), "
                    "set GENLAB_CHROMIUM to its path, or skip with GENLAB_BROWSER_TESTS=0")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            browser.close()


def screenshot(page, name: str) -> None:
    """The whole page: Streamlit scrolls inside stMain, so grow the viewport to fit it first."""
    height = page.locator('[data-testid="stMain"]').evaluate("main => main.scrollHeight")
    page.set_viewport_size({"width": 1400, "height": max(1000, height)})
    page.wait_for_timeout(500)  # let the charts redraw at the new size
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_privacy_page_compares_a_dp_run_with_a_plain_run(browser_page, server):
    url, dp, plain = server
    page = browser_page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.goto(f"{url}/privacy?run={dp}&compare={plain}")
    page.wait_for_selector(IDLE, timeout=90_000)
    assert page.get_by_role("heading", name="Privacy", exact=True).count() == 1
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0

    charts = page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot')
    charts.nth(3).wait_for(state="visible", timeout=30_000)
    assert charts.count() == 4  # ε against steps, the planner, the ROC, the ε pair
    roc = charts.nth(2)
    assert roc.locator(".xtick").count() >= 3  # a log axis with its decades labelled
    legend = roc.locator(".legendtext").all_text_contents()  # SVG: no innerText
    assert any(t.startswith(dp) and "reference attack" in t for t in legend)
    assert any(t.startswith(plain) and "LOSS attack" in t for t in legend)
    pair = charts.nth(3).locator(".bartext").all_text_contents()
    assert "∞ (no DP)" in pair and any(t.startswith("ε = 2.9") for t in pair)

    images = page.locator('[data-testid="stImage"] img')
    images.nth(1).wait_for(state="attached", timeout=30_000)  # drawn after the charts
    assert images.count() == 2  # each run's most exposed images
    for i in range(2):
        page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                               arg=images.nth(i).element_handle(), timeout=30_000)
        assert images.nth(i).evaluate("img => img.naturalWidth") >= 400  # 2 pairs of 96 px
    metrics = page.locator('[data-testid="stMetricValue"]').all_inner_texts()
    assert "ε = ∞" in metrics and any(m.startswith("ε = 2.9") for m in metrics)
    screenshot(page, "privacy.png")
