"""End to end: the Explain page in a real headless Chromium (Playwright) over a real server.

Two VAEs on digits, one trained without DP and one with DP at ε = 3, are explained: the
attribution heatmaps over the images (with a latent traversal beside them), the interpretability
scores, the latent map, and the drift view comparing both runs on the same images. Two screenshots
land in ``tests/artifacts/`` (gitignored) for a human to look at: ``explain.png`` (the overlays
and the scores) and ``explain_drift.png`` (the drift view). Skipped with
``GENLAB_BROWSER_TESTS=0``, like the other browser tests; when enabled, a missing Chromium is a
failure.
"""

from __future__ import annotations

import pytest
from browser_support import ARTIFACTS, BROWSER_MARKS, IDLE, dashboard_server
from test_browser_privacy import SETTINGS
from test_privacy_page import train_run

from genlab.evaluate import evaluate_run
from genlab.runs import RunStore

pytestmark = [*BROWSER_MARKS, pytest.mark.slow]
N_IMAGES = 16  # the page's default


@pytest.fixture
def server(tmp_path):
    """A dashboard server over a home with a non-DP VAE (its interpretability block filled) and
    its DP twin; yields ``(url, plain_run_id, dp_run_id)``."""
    home, log = tmp_path / "home", tmp_path / "streamlit.log"
    home.mkdir()
    plain = train_run(home, **SETTINGS)
    dp = train_run(home, privacy={"epsilon": 3.0}, **SETTINGS)
    evaluate_run(RunStore(home), plain, audit=False, n_generated=200)
    with dashboard_server(home, log) as url:
        yield url, plain, dp


def grow_to_fit(page) -> None:
    """Streamlit scrolls inside stMain: grow the viewport so every section is laid out."""
    height = page.locator('[data-testid="stMain"]').evaluate("main => main.scrollHeight")
    page.set_viewport_size({"width": 1400, "height": max(1000, height)})
    page.wait_for_timeout(800)  # let the charts redraw at the new size


def test_explain_page_shows_overlays_and_dp_drift(browser_page, server):
    url, plain, dp = server
    page = browser_page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.goto(f"{url}/explain?run={plain}&compare={dp}")
    page.wait_for_selector(IDLE, timeout=90_000)
    assert page.get_by_role("heading", name="Explain a run", exact=True).count() == 1
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0
    nav = page.locator('[data-testid="stSidebarNav"]').inner_text().split()
    assert nav.index("Explain") == nav.index("Explore") + 2  # right after Explore (icon between)

    charts = page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot')
    charts.nth(3).wait_for(state="visible", timeout=30_000)
    assert charts.count() == 4  # the overlays, the latent map, the two drift maps
    grow_to_fit(page)
    overlays = charts.nth(0)
    # one grey image and one attribution heatmap per panel, drawn as raster images
    assert overlays.locator("g.hm image").count() == 2 * N_IMAGES
    assert overlays.locator(".gtitle, .annotation-text").count() >= N_IMAGES  # f = ... titles
    assert overlays.locator(".colorbar").count() == 1
    traversal = page.locator('[data-testid="stImage"] img').first
    page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                           arg=traversal.element_handle(), timeout=30_000)
    metrics = dict(zip(page.locator('[data-testid="stMetricLabel"]').all_inner_texts(),
                       page.locator('[data-testid="stMetricValue"]').all_inner_texts()))
    assert metrics["Target"] == "elbo"
    assert 0 <= float(metrics["Faithfulness"]) <= 1 and 0 <= float(metrics["Stability"]) <= 1
    assert -1 <= float(metrics["Attribution drift (mean Spearman ρ)"]) <= 1
    for i in (2, 3):
        assert charts.nth(i).locator("g.hm image").count() == 2 * N_IMAGES
    rhos = charts.nth(3).locator(".annotation-text").all_text_contents()
    assert sum(t.startswith("ρ = ") for t in rhos) == N_IMAGES

    page.locator(".st-key-explain_overlays").screenshot(path=str(ARTIFACTS / "explain.png"))
    page.locator(".st-key-explain_drift").screenshot(path=str(ARTIFACTS / "explain_drift.png"))
