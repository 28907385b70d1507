"""Classroom mode in a real browser: a deep link behind the password shows nothing of the app,
a wrong password shows nothing either, and a signed-in student cannot delete another's run.
Screenshots land in ``tests/artifacts/classroom_*.png``.
"""

from __future__ import annotations

import pytest
from browser_support import ARTIFACTS, BROWSER_MARKS, IDLE, dashboard_server

from genlab.runs import RunStore

pytestmark = BROWSER_MARKS
PASSWORD = "open sesame"


@pytest.fixture
def classroom_server(tmp_path):
    """A classroom-mode server whose store holds one run of Ann's; yields (url, run id)."""
    home = tmp_path / "home"
    run_id = RunStore(home).create_run(model="vae", dataset="digits", config={"model": "vae"},
                                       owner="ann", status="cancelled")
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(f'[classroom]\npassword = "{PASSWORD}"\nteacher_password = "chalk"\n')
    with dashboard_server(home, tmp_path / "streamlit.log", env={"GENLAB_CLASSROOM": "1"},
                          args=("--secrets.files", str(secrets))) as url:
        yield url, run_id


def settle(page) -> None:
    page.wait_for_selector(IDLE, timeout=30_000)
    page.wait_for_timeout(300)  # let the frontend draw what the script sent


def shown(page) -> str:
    return page.locator("body").inner_text()


def test_the_gate_in_a_real_browser(browser_page, classroom_server):
    page, (url, run_id) = browser_page, classroom_server
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.goto(f"{url}/train?run={run_id}")  # a deep link to a run, before any password
    settle(page)
    text = shown(page)
    assert "Class password" in text
    assert run_id not in text and "ann" not in text and "Train a model" not in text
    assert page.locator('[data-testid="stSidebarNav"]').count() == 0
    page.screenshot(path=str(ARTIFACTS / "classroom_gate.png"))

    page.locator("input[type=password]").fill("open sesame?")
    page.get_by_role("button", name="Enter").click()
    page.wait_for_selector("text=That is not the class password.", timeout=30_000)
    settle(page)
    text = shown(page)
    assert run_id not in text and "Train a model" not in text and "Recent runs" not in text
    page.screenshot(path=str(ARTIFACTS / "classroom_wrong_password.png"))

    page.locator("input[type=password]").fill(PASSWORD)
    page.get_by_role("button", name="Enter").click()
    page.wait_for_selector("text=Your runs carry your name", timeout=30_000)
    settle(page)
    assert run_id not in shown(page)
    page.get_by_label("Your name", exact=True).and_(page.locator("input")).fill("bob")
    page.get_by_role("button", name="Start").click()
    settle(page)
    page.wait_for_selector("text=Signed in as bob", timeout=30_000)
    page.get_by_role("link", name="Train").first.click()  # the sidebar's page links are back
    settle(page)
    page.get_by_text("Live run", exact=True).click()  # bob started no run: the form came first
    page.wait_for_selector("text=Owner: ann", timeout=60_000)
    settle(page)
    assert "Signed in as bob" in shown(page) and "Train a model" in shown(page)
    delete = page.get_by_role("button", name="Delete run")
    assert delete.is_disabled()  # Ann's run: only Ann or the teacher may delete it
    page.screenshot(path=str(ARTIFACTS / "classroom_signed_in.png"), full_page=True)
