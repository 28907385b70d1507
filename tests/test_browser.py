"""End to end: a real ``streamlit run`` server driven by a real headless Chromium (Playwright).

The user's path: open Train, start a 3-epoch VAE on digits, watch it finish, follow the link to
Explore and see images. Then Explore for a GAN, a PixelCNN and a mixture run, each on the tab
that only its kind of model has. Screenshots land in ``tests/artifacts/`` (gitignored) for a human
to look at. Skipped with ``GENLAB_BROWSER_TESTS=0``; when enabled, a missing Chromium is a failure.
"""

from __future__ import annotations

import re
import time

import pytest
from browser_support import ARTIFACTS, BROWSER_MARKS, IDLE, dashboard_server

pytestmark = BROWSER_MARKS

@pytest.fixture
def server(tmp_path):
    """A dashboard server with an empty GENLAB_HOME; yields its URL."""
    with dashboard_server(tmp_path / "home", tmp_path / "streamlit.log") as url:
        yield url
    from genlab.runs import RunStore  # no worker may outlive the test

    store = RunStore(tmp_path / "home", recover=False)
    for run in store.list():
        if run.status in ("queued", "running"):
            from genlab import jobs

            jobs.cancel(store, run.id)
            jobs.wait(store, run.id, timeout=60)


def settle(page, timeout: float = 30) -> None:
    """Wait until Streamlit has finished the current script run."""
    page.wait_for_selector(IDLE, timeout=timeout * 1000)


def screenshot(page, name: str) -> None:
    """The whole page: Streamlit scrolls inside stMain, so grow the viewport to fit it first."""
    height = page.locator('[data-testid="stMain"]').evaluate("main => main.scrollHeight")
    page.set_viewport_size({"width": 1400, "height": max(1000, height)})
    page.wait_for_timeout(300)  # let the layout settle at the new size
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 1000})


def no_exceptions(page) -> None:
    shown = page.locator('[data-testid="stException"]')
    assert shown.count() == 0, shown.first.inner_text()


def test_train_then_explore_in_a_real_browser(browser_page, server):
    page = browser_page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    page.goto(f"{server}/train")
    settle(page)
    no_exceptions(page)
    # The first request of a fresh server is a sub-page: the router must still run.
    # (More pages follow as the axes arrive; the first three are the app's spine.)
    nav = page.locator('[data-testid="stSidebarNav"]').inner_text().split()
    assert nav[:6] == ["home", "Home", "model_training", "Train", "image_search", "Explore"]
    assert page.get_by_role("combobox", name="Dataset").input_value() == "digits"
    epochs = page.get_by_label("Epochs", exact=True)
    epochs.fill("3")
    epochs.press("Tab")
    page.get_by_role("button", name=re.compile("Start training")).click()
    page.get_by_text(re.compile(r"Started run vae-digits-")).wait_for(timeout=30_000)

    status = page.locator('[data-testid="stMetricValue"]').first
    deadline = time.monotonic() + 90
    while (shown := status.inner_text().strip()) != "finished":  # one read per look
        assert shown in ("queued", "running"), shown
        assert time.monotonic() < deadline, "the run did not finish within 90 s"
        page.wait_for_timeout(500)
    images = page.locator('[data-testid="stImage"] img')
    images.nth(1).wait_for(state="visible", timeout=30_000)  # the loss curve, then the samples
    settle(page)
    assert page.get_by_text("3 / 3").count() == 1  # the epoch metric
    chart, samples = images.all()
    assert chart.get_attribute("src").startswith("data:image/svg+xml")
    assert chart.evaluate("img => img.complete && img.naturalWidth") == 720  # decoded and drawn
    assert samples.evaluate("img => img.complete && img.naturalWidth") > 0
    no_exceptions(page)
    screenshot(page, "train.png")

    page.get_by_text("Explore this run").click()
    page.wait_for_url(re.compile(r"/explore\?run=vae-digits-"), timeout=30_000)
    settle(page)
    image = page.locator('[data-testid="stImage"] img').first
    image.wait_for(state="visible", timeout=30_000)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                           arg=image.element_handle(), timeout=30_000)
    assert image.evaluate("img => img.naturalWidth") >= 500  # 64 digits, scaled up
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0
    no_exceptions(page)
    screenshot(page, "explore.png")

    page.get_by_role("tab", name="Latent traversal").click()
    traversal = page.locator('[data-testid="stImage"] img').filter(visible=True).first
    traversal.wait_for(state="visible", timeout=30_000)
    settle(page)
    assert traversal.evaluate("img => img.naturalHeight") > 0
    screenshot(page, "explore_traversal.png")


# Runs a little larger than the AppTest zoo's, so the screenshots show what a class would see:
# the mixture keeps its default 100 components (the tab then shows the 40 heaviest).
EXPLORED = {
    "gan": ("Interpolation", dict(epochs=8, channels=16, latent_dim=8)),
    "pixelcnn": ("Samples", dict(epochs=5, channels=16, layers=3, head=16, batch_size=32)),
    "mixture": ("Components", dict(epochs=10, components=100)),
}
COMMON_TABS = ["Reconstructions", "Latent traversal", "Interpolation"]


@pytest.mark.parametrize("name", sorted(EXPLORED))
def test_explore_each_kind_of_model_in_a_real_browser(browser_page, zoo, tmp_path, name):
    tab, settings = EXPLORED[name]
    run_id = zoo.run(name, **settings)
    page = browser_page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with dashboard_server(zoo.home, tmp_path / "streamlit.log") as url:
        page.goto(f"{url}/explore?run={run_id}")
        settle(page, timeout=60)
        image = page.locator('[data-testid="stImage"] img').first
        image.wait_for(state="visible", timeout=30_000)
        no_exceptions(page)
        assert page.locator('[data-testid="stAlertContentError"]').count() == 0
        assert page.get_by_role("heading", name="Explore a run").count() == 1
        tabs = [t.strip() for t in page.get_by_role("tab").all_inner_texts()]
        special = {"mixture": ["Components"]}.get(name, [])
        assert tabs == ["Samples", *special, *COMMON_TABS]
        page.get_by_role("tab", name=tab).click()
        shown = page.locator('[data-testid="stImage"] img').filter(visible=True).first
        shown.wait_for(state="visible", timeout=30_000)
        page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                               arg=shown.element_handle(), timeout=30_000)
        settle(page)
        no_exceptions(page)
        assert shown.evaluate("img => img.naturalWidth") >= 300  # scaled up, not thumbnails
        screenshot(page, f"explore_{name}.png")
