"""The sweep launcher's executor setting in a real headless Chromium: choosing Ray enables the
cluster address field; the launcher is screenshot into ``tests/artifacts/``. Skipped with
``GENLAB_BROWSER_TESTS=0``."""

from __future__ import annotations

import services
from browser_support import ARTIFACTS, BROWSER_MARKS, IDLE, dashboard_server
from playwright.sync_api import expect

pytestmark = BROWSER_MARKS


def test_the_sweep_launcher_offers_ray_and_its_address(browser_page, tmp_path, monkeypatch):
    monkeypatch.setenv(services.DEMO_ENV, str(tmp_path / "absent.json"))
    page = browser_page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with dashboard_server(tmp_path / "home", tmp_path / "streamlit.log") as url:
        page.goto(f"{url}/tradeoffs")
        page.wait_for_selector(IDLE, timeout=60_000)
        executor = page.get_by_role("combobox", name="Executor", exact=True)
        assert executor.input_value() == services.EXECUTORS["local"]
        address = page.get_by_label("Ray address", exact=True)
        assert address.is_disabled()
        executor.click()
        page.get_by_role("option", name=services.EXECUTORS["ray"]).click()
        expect(address).to_be_enabled(timeout=30_000)  # after the rerun the choice starts
        assert executor.input_value() == services.EXECUTORS["ray"]
        address.fill("auto")
        address.press("Tab")
        page.wait_for_selector(IDLE, timeout=30_000)
        assert page.locator('[data-testid="stException"]').count() == 0
        launcher = page.locator(".st-key-tradeoffs_sweep")
        launcher.screenshot(path=str(ARTIFACTS / "sweep_launcher_ray.png"))
        assert launcher.get_by_text("Ray address").count() == 1
