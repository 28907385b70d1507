"""End to end: the Trade-offs page and the HTML report in a real headless Chromium (Playwright).

The page runs on a real server over a store of synthetic but real-shaped runs (three models, four
ε, three seeds; tests/tradeoffs_support.py). A link with axis and model choices opens the page;
the Pareto view and the parallel coordinates are screenshot into ``tests/artifacts/``; then the
page's own URL, which now holds the whole view, opens in a fresh browser context and must show
the same choices. The report opens from a file:// URL in an offline context: plotly must draw
from the embedded bundle, with no request leaving the file. Skipped with
``GENLAB_BROWSER_TESTS=0``.
"""

from __future__ import annotations

import pytest
import services
from browser_support import ARTIFACTS, BROWSER_MARKS, IDLE, dashboard_server
from tradeoffs_support import fill_store

from genlab.report import write_report
from genlab.runs import RunStore
from genlab.tradeoffs import AXES

pytestmark = BROWSER_MARKS
X, Y = "privacy.mia_auc", "performance.cas"


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A dashboard server over the synthetic runs (no demo file); yields ``(url, home, ids)``."""
    home, log = tmp_path / "home", tmp_path / "streamlit.log"
    home.mkdir()
    ids = fill_store(home)
    monkeypatch.setenv(services.DEMO_ENV, str(tmp_path / "absent.json"))
    with dashboard_server(home, log) as url:
        yield url, home, ids


def charts(page):
    found = page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot')
    found.nth(3).wait_for(state="visible", timeout=60_000)
    return found


def selectbox_value(page, label: str) -> str:
    """The option a selectbox shows (a combobox input's value)."""
    return page.get_by_role("combobox", name=label, exact=True).input_value()


def check_view(page) -> None:
    """The page shows the link's view: axis pickers, model tags and the Pareto axis titles."""
    page.wait_for_selector(IDLE, timeout=90_000)
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.locator('[data-testid="stAlertContentWarning"]').count() == 0
    found = charts(page)
    assert found.count() == 4  # Pareto, scatter matrix, parallel coordinates, curves
    assert selectbox_value(page, "x axis") == services.axis_label(X)
    assert selectbox_value(page, "y axis") == services.axis_label(Y)
    tags = page.locator('[data-testid="stMultiSelect"]').first.inner_text()
    assert "gan" in tags and "vae" in tags and "mixture" not in tags
    pareto = found.nth(0)
    assert pareto.locator(".xtitle").text_content() == AXES[X].label
    assert pareto.locator(".ytitle").text_content() == AXES[Y].label
    legend = pareto.locator(".legendtext").all_text_contents()
    assert {"gan", "vae", "Pareto-optimal"} <= set(legend) and "mixture" not in legend


def test_tradeoffs_page_link_reproduces_the_view(browser_page, server):
    url, _, _ = server
    page = browser_page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.goto(f"{url}/tradeoffs?x={X}&y={Y}&models=gan,vae")
    check_view(page)
    page.wait_for_function("() => location.search.includes('dataset=digits')", timeout=30_000)
    link = page.url
    assert "eps=1%2C8" in link or "eps=1,8" in link
    found = charts(page)
    found.nth(0).scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    found.nth(0).screenshot(path=str(ARTIFACTS / "tradeoffs_pareto.png"))
    found.nth(2).scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    found.nth(2).screenshot(path=str(ARTIFACTS / "tradeoffs_parallel.png"))
    height = page.locator('[data-testid="stMain"]').evaluate("main => main.scrollHeight")
    page.set_viewport_size({"width": 1400, "height": max(1000, height)})
    page.wait_for_timeout(800)
    page.screenshot(path=str(ARTIFACTS / "tradeoffs.png"), full_page=True)

    fresh = page.context.browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        other = fresh.new_page()
        other.goto(link)
        check_view(other)
        assert other.url == link
    finally:
        fresh.close()


def test_html_report_draws_offline(browser_page, server, tmp_path):
    _, home, ids = server
    runs = [r for r in RunStore(home).list(status="finished") if r.record]
    path = write_report(runs, tmp_path / "report.html")
    context = browser_page.context.browser.new_context(viewport={"width": 1300, "height": 1000},
                                                       offline=True)
    try:
        page = context.new_page()
        requests = []
        page.on("request", lambda request: requests.append(request.url))
        page.goto(path.as_uri())
        page.wait_for_selector(".js-plotly-plot .main-svg", timeout=30_000)
        plots = page.locator(".js-plotly-plot")
        assert plots.count() == 4
        for i in range(4):
            assert plots.nth(i).locator(".main-svg").count() >= 1
        assert plots.nth(0).locator(".scatterlayer .point").count() >= len(runs) // 3
        page.wait_for_timeout(800)
        page.screenshot(path=str(ARTIFACTS / "tradeoffs_report.png"), full_page=True)
        assert [u for u in requests if not u.startswith(("file:", "data:", "blob:"))] == []
        assert "How each figure was measured" in page.content()
        assert next(iter(ids.values())) in page.locator("table").inner_text()
    finally:
        context.close()
