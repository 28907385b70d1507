"""End to end: the Privacy page in a real headless Chromium (Playwright) over a real server.

Two VAEs on digits, one trained with DP at ε = 3 and one without, both audited with the reference
model, are compared side by side. The full-page screenshot lands in
``tests/artifacts/privacy.png`` (gitignored) for a human to look at: the ROC, the ε pair and the
exposed images must be readable. Skipped with ``GENLAB_BROWSER_TESTS=0``, like
``test_browser.py``; when enabled, a missing Chromium is a failure.
"""

from __future__ import annotations

import pytest
from browser_support import ARTIFACTS, BROWSER_MARKS, IDLE, dashboard_server
from test_privacy_page import train_run

# Big enough that the VAE draws digits, small enough to train in seconds on a laptop CPU.
SETTINGS = {"epochs": 15, "arch": "mlp", "latent_dim": 8, "hidden": 128}

pytestmark = [*BROWSER_MARKS, pytest.mark.slow]


@pytest.fixture
def server(tmp_path):
    """A dashboard server over a home with an audited DP run and an audited non-DP run; yields
    ``(url, dp_run_id, plain_run_id)``."""
    home, log = tmp_path / "home", tmp_path / "streamlit.log"
    home.mkdir()
    dp = train_run(home, privacy={"epsilon": 3.0}, audit=True, **SETTINGS)
    plain = train_run(home, audit=True, **SETTINGS)
    with dashboard_server(home, log) as url:
        yield url, dp, plain


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
