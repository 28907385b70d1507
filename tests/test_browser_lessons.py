"""End to end: a lesson for class started from Home in a real headless Chromium, followed to the
end, then its answer page opened from the link it shows.

The "Which pixels matter?" lesson trains one small VAE on digits in the background (about a
minute). Screenshots land in ``tests/artifacts/lesson_home.png`` (the finished lesson with its
answer link) and ``tests/artifacts/lesson_answer.png`` (the Explain page it opens).
"""

from __future__ import annotations

import pytest
from browser_support import ARTIFACTS, BROWSER_MARKS, IDLE, dashboard_server

from genlab.lessons import lesson
from genlab.runs import RunStore

pytestmark = [*BROWSER_MARKS, pytest.mark.slow]
LESSON = "which-pixels"


def screenshot(page, name: str) -> None:
    """The whole page: Streamlit scrolls inside stMain, so grow the viewport to fit it first."""
    height = page.locator('[data-testid="stMain"]').evaluate("main => main.scrollHeight")
    page.set_viewport_size({"width": 1400, "height": max(1000, height)})
    page.wait_for_timeout(500)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_a_lesson_runs_from_home_and_opens_its_answer(browser_page, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    page = browser_page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with dashboard_server(home, tmp_path / "streamlit.log") as url:
        page.goto(url)  # Home is the default page, at the root
        page.wait_for_selector(IDLE, timeout=90_000)
        assert page.get_by_text(lesson(LESSON).title).count() >= 1
        page.locator(f".st-key-lesson_start_{LESSON} button").click()
        # the fragment polls every 2 s; the runs train in a worker beside the server
        answer = page.get_by_role("link", name="Attributions of the VAE")
        answer.wait_for(state="visible", timeout=300_000)
        page.wait_for_selector(IDLE, timeout=60_000)
        assert page.get_by_text("Ready: open the answer.").count() == 1
        assert page.locator('[data-testid="stException"]').count() == 0
        screenshot(page, "lesson_home.png")

        runs = RunStore(home).list()
        assert len(runs) == 1 and runs[0].status == "finished"
        record = runs[0].record
        assert {"performance", "interpretability", "privacy", "cost"} <= set(record)
        assert f"run={runs[0].id}" in answer.get_attribute("href")

        answer.click()
        page.wait_for_url(f"**/explain?run={runs[0].id}*", timeout=30_000)
        page.wait_for_selector(IDLE, timeout=120_000)
        assert page.get_by_role("heading", name="Explain a run", exact=True).count() == 1
        assert page.locator('[data-testid="stAlertContentError"]').count() == 0
        heatmaps = page.locator('[data-testid="stImage"] img, [data-testid="stPlotlyChart"]')
        heatmaps.first.wait_for(state="visible", timeout=60_000)
        screenshot(page, "lesson_answer.png")
