"""Classroom mode under AppTest: the password gate, owner names, and who may cancel or delete.

Runs are real rows of a real store. The running run is "held" by this test process (its pid), so
the store's recovery sees a live worker and leaves it running.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from test_dashboard import live_view

from genlab.config import make_run_config
from genlab.runs import RunStore

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
SECRETS = {"classroom": {"password": "open sesame", "teacher_password": "chalk dust"}}


@pytest.fixture
def classroom(genlab_home, monkeypatch) -> RunStore:
    """Classroom mode over an empty store."""
    monkeypatch.setenv("GENLAB_CLASSROOM", "1")
    return RunStore(genlab_home)


def add_run(store: RunStore, owner: str | None, status: str) -> str:
    """A run of ``owner`` in ``status``; a running one is held by this process."""
    cfg = make_run_config("vae", "digits", epochs=3, seed=len(store.list()))
    run_id = store.create_run(model="vae", dataset="digits", config=cfg.to_dict(), owner=owner,
                              status="queued" if status == "running" else status)
    if status == "running":
        store.claim(run_id, pid=os.getpid())
    return run_id


def app(secrets: dict | None = SECRETS) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=90)
    if secrets:
        at.secrets.update(secrets)
    return at.run()


def everything_shown(at: AppTest) -> str:
    """The text of every element on the page (main area and sidebar), protos included."""
    parts = []

    def walk(node) -> None:
        parts.append(str(getattr(node, "proto", "")))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return "\n".join(parts)


def submit(at: AppTest, field: str, value: str) -> AppTest:
    """Type ``value`` into the gate's field ``field`` and press its form's button."""
    at.text_input(key=field).input(value)
    form_buttons = [b for b in at.button if b.proto.is_form_submitter]
    assert len(form_buttons) == 1, [b.label for b in at.button]
    return form_buttons[0].click().run()


def sign_in(name: str, *, teacher: bool = False, page: str = "home") -> AppTest:
    at = submit(app(), "access_password_input", SECRETS["classroom"]["password"])
    at = submit(at, "access_name_input", name)
    if teacher:
        at = submit(at, "access_teacher_input", SECRETS["classroom"]["teacher_password"])
    if page != "home":
        at.switch_page(f"views/{page}.py")
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_laptop_mode_asks_nothing_and_the_local_user_owns_everything(genlab_home, monkeypatch):
    monkeypatch.delenv("GENLAB_CLASSROOM", raising=False)
    store = RunStore(genlab_home)
    other = add_run(store, "someone-else", "cancelled")
    at = app(secrets=None)
    assert not at.exception
    assert not at.text_input  # no password, no name
    assert at.dataframe[0].value.set_index("id").loc[other, "owner"] == "someone-else"
    at.switch_page("views/train.py")
    live_view(at.run())
    delete = at.button(key="train_delete")
    assert not delete.proto.disabled  # the laptop's user is in charge of every run
    delete.click().run()
    assert not at.exception and store.list() == []


def test_a_wrong_password_shows_nothing_of_the_app(classroom):
    secret_run = add_run(classroom, "ann", "cancelled")
    at = app()
    shown = everything_shown(at)
    assert secret_run not in shown and "ann" not in shown and "Recent runs" not in shown
    assert [t.label for t in at.text_input] == ["Class password"]
    assert not at.dataframe and not at.page_link and not at.selectbox
    at = submit(at, "access_password_input", "open sesame!")  # one character too many
    assert [e.value for e in at.error] == ["That is not the class password."]
    shown = everything_shown(at)
    assert secret_run not in shown and "Recent runs" not in shown and not at.dataframe
    at.switch_page("views/train.py")  # a direct page link shows the gate, not the page
    at.run()
    assert secret_run not in everything_shown(at) and [t.label for t in at.text_input] == [
        "Class password"]

    at = submit(at, "access_password_input", "open sesame")
    assert [t.label for t in at.text_input] == ["Your name"]  # then the name, still no runs
    assert secret_run not in everything_shown(at)
    at = submit(at, "access_name_input", "   ")
    assert "enter a name" in at.error[0].value
    at = live_view(submit(at, "access_name_input", "bob"))  # in: the Train page asked for
    assert at.selectbox(key="train_follow").value == secret_run
    assert "Owner: ann" in [c.value for c in at.caption]
    assert "Signed in as **bob**" in at.sidebar.caption[0].value


def test_without_a_password_secret_the_class_only_gives_names(classroom):
    at = app(secrets=None)
    assert [t.label for t in at.text_input] == ["Your name"]
    at = submit(at, "access_name_input", "<script>")
    assert "may only hold letters" in at.error[0].value
    at = submit(at, "access_name_input", "Zoë M-2")
    assert "Signed in as **Zoë M-2**" in at.sidebar.caption[0].value
    assert not at.sidebar.expander  # no teacher password configured: no teacher unlock


def test_runs_started_in_the_page_carry_the_owner(classroom):
    at = sign_in("carla", page="train")
    at.selectbox(key="train_model").select("mixture")
    at.run()
    at.number_input(key="train_epochs").set_value(1)
    at.button(key="train_start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    (run,) = classroom.list()
    assert run.owner == "carla" and "Owner: carla" in [c.value for c in at.caption]
    from genlab import jobs

    assert jobs.wait(classroom, run.id, timeout=120) == "finished"


def test_another_owner_cannot_cancel_or_delete_through_the_page(classroom):
    running, ended = add_run(classroom, "ann", "running"), add_run(classroom, "ann", "cancelled")
    at = live_view(sign_in("bob", page="train"))
    at.selectbox(key="train_follow").select(running)
    at.run()
    cancel = at.button(key="train_cancel")
    assert cancel.proto.disabled and "Only ann or the teacher" in cancel.proto.help
    cancel._value = True  # a forged click on the disabled button: Streamlit drops it
    at.run()
    assert not at.exception and not classroom.get(running).cancel_requested

    at.selectbox(key="train_follow").select(ended)
    at.run()
    delete = at.button(key="train_delete")
    assert delete.proto.disabled and "Only ann or the teacher" in delete.proto.help
    delete._value = True
    at.run()
    assert classroom.get(ended).status == "cancelled"  # still there


BEHIND_THE_BUTTONS = """
import streamlit as st
import services
from genlab.errors import OwnershipError
services.sign_in("bob")
for action in (services.cancel_run, services.delete_run):
    try:
        action(st.session_state["run"])
    except OwnershipError as err:
        st.error(str(err))
"""


@pytest.mark.parametrize("status", ["running", "cancelled"])
def test_the_services_behind_the_buttons_refuse_another_owner(classroom, status):
    run_id = add_run(classroom, "ann", status)
    at = AppTest.from_string(BEHIND_THE_BUTTONS)
    at.session_state["run"] = run_id
    at.run()
    assert [e.value for e in at.error] == [
        f"bob cannot cancel {run_id}: it is ann's run; only its owner or the teacher can",
        f"bob cannot delete {run_id}: it is ann's run; only its owner or the teacher can"]
    info = classroom.get(run_id)
    assert info.status == status and not info.cancel_requested


def test_the_owner_and_the_teacher_can(classroom):
    running, ended = add_run(classroom, "ann", "running"), add_run(classroom, "ann", "cancelled")
    cli_run = add_run(classroom, None, "cancelled")  # from the command line: the teacher's
    at = live_view(sign_in("ann", page="train"))
    at.selectbox(key="train_follow").select(running)
    at.run()
    at.button(key="train_cancel").click().run()
    assert classroom.get(running).cancel_requested
    assert "Cancel requested" in at.warning[0].value
    at.selectbox(key="train_follow").select(cli_run)
    at.run()
    assert at.button(key="train_delete").proto.disabled  # not ann's

    at = live_view(sign_in("dana", teacher=True, page="train"))
    assert "Signed in as **dana** (teacher)" in at.sidebar.caption[0].value
    for run_id in (ended, cli_run):
        at.selectbox(key="train_follow").select(run_id)
        at.run()
        at.button(key="train_delete").click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert f"Deleted run {run_id}." in [s.value for s in at.success]
    assert [r.id for r in classroom.list()] == [running]


def test_a_wrong_teacher_password_gives_no_rights(classroom):
    ended = add_run(classroom, "ann", "cancelled")
    at = sign_in("bob")
    at = submit(at, "access_teacher_input", "chalk")
    assert at.error[0].value == "That is not the teacher password."
    assert "(teacher)" not in at.sidebar.caption[0].value
    at.switch_page("views/train.py")
    live_view(at.run())
    at.selectbox(key="train_follow").select(ended)
    at.run()
    assert at.button(key="train_delete").proto.disabled


def test_a_run_far_back_in_the_queue_refreshes_its_panel_less_often(classroom):
    import services

    from genlab import fairqueue

    owners = ["ann", "bob", "carla", "dan"]
    queued = [add_run(classroom, owner, "queued") for owner in owners]
    for run_id, owner in zip(queued, owners):
        fairqueue.enqueue(classroom, run_id, "cpu", owner=owner, pid=os.getpid())
    ahead = [services.queue_position(run_id) for run_id in queued]
    assert ahead == [0, 1, 2, 3]  # four owners, one job each: they start in order
    assert [services.live_refresh_seconds("queued", n) for n in ahead] == [5.0, 5.0, 5.0, 20.0]
    assert services.live_refresh_seconds("running", None) == 1.0
    assert services.live_refresh_seconds("finished", None) is None

    at = live_view(sign_in("dan", page="train"))  # the last in line follows its run slowly
    assert at.selectbox(key="train_follow").value == queued[-1]
    assert not at.exception and "3 jobs ahead of it" in at.info[0].value
