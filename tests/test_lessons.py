"""Lesson presets: well formed, small, runnable on digits and the same as their `genlab sweep`
command; Home lists them, follows a running one, links a finished one to its answer, and
launches one for real (slow)."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import time
from pathlib import Path

import pytest
import services
from test_dashboard import no_exception, open_page
from test_sweep import COMPLETE, fake_run

from genlab.cli import build_parser
from genlab.cli_sweep import spec_from_args
from genlab.lessons import LESSONS, PAGES, Answer, Lesson, lesson
from genlab.procs import write_pid_marker
from genlab.runs import RunStore
from genlab.sweep import SweepSpec, record_complete, sweep_status
from genlab.train import check_run

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"


def registered_pages() -> set[str]:
    return set(re.findall(r'url_path="([a-z_]+)"', APP.read_text()))


def test_lessons_are_small_digits_sweeps_with_answer_pages():
    ids = [item.id for item in LESSONS]
    assert len(ids) >= 3 and len(set(ids)) == len(ids)
    for item in LESSONS:
        assert item.spec.dataset == "digits" and item.spec.size <= 3
        assert item.title.endswith("?") and item.question.endswith("?")
        assert len(item.explanation) > 150
        assert item.page in PAGES and item.answers[0].page == item.page
        for answer in item.answers:
            assert answer.page in registered_pages() or answer.page == "tradeoffs"
    pages = {answer.page for item in LESSONS for answer in item.answers}
    assert {"explore", "explain", "privacy"} <= pages
    assert lesson("membership").query_params(["a", "b"]) == {"run": "a", "compare": "b"}
    assert lesson("membership").query_params(["a", None]) == {"run": "a"}


@pytest.mark.parametrize("item", LESSONS, ids=lambda item: item.id)
def test_every_lesson_run_fits_its_data(item):
    for cfg in item.spec.configs():  # batch within the train split, δ below 1/N, DP-ready
        check_run(cfg)


@pytest.mark.parametrize("item", LESSONS, ids=lambda item: item.id)
def test_lesson_command_is_the_same_sweep(item):
    args = build_parser().parse_args(shlex.split(item.command())[1:])
    spec = spec_from_args(args)
    assert spec.sweep_id() == item.spec.sweep_id()
    assert [c.config_hash() for c in spec.configs()] == [
        c.config_hash() for c in item.spec.configs()]


def test_a_lesson_refuses_an_unknown_page_or_run():
    spec = SweepSpec(dataset="digits", models=("vae",), epsilons=(float("inf"),), seeds=(0,))
    with pytest.raises(ValueError, match="unknown page 'train'"):
        Lesson("x", "X?", "X?", "x", spec, (Answer("x", "train"),))
    with pytest.raises(ValueError, match="no run 1 in 1 runs"):
        Lesson("x", "X?", "X?", "x", spec, (Answer("x", "explore", (("run", 1),)),))
    with pytest.raises(KeyError, match="known: dp-samples"):
        lesson("nope")


# ----------------------------------------------------------------------------- Home
def test_home_lists_the_lessons_and_what_a_good_epsilon_is(genlab_home):
    at = open_page("home")
    no_exception(at)
    titles = [m.value.split("\n")[0] for m in at.markdown if m.value.startswith("### ")]
    for item in LESSONS:
        assert f"### {item.title}" in titles
        button = at.button(key=f"lesson_start_{item.id}")
        assert button.label == "Start this lesson"
    text = " ".join(m.value for m in at.markdown)
    assert "ε ≤ 1 a strong guarantee" in text and "around **10 and more**" in text
    assert text.count(":small[:gray[") == text.count("genlab sweep --dataset digits") == len(
        LESSONS)
    assert RunStore(genlab_home).list() == []  # showing the lessons starts nothing


def test_home_links_a_finished_lesson_and_explains_a_failed_one(genlab_home):
    store = RunStore(genlab_home)
    done = [fake_run(store, cfg) for cfg in lesson("membership").spec.configs()]
    failed = fake_run(store, lesson("which-pixels").spec.configs()[0], status="failed", record={})
    store.fail(failed, "DataError: the digits went missing")
    at = open_page("home")
    no_exception(at)
    links = {link.proto.label: link.proto for link in at.page_link}
    answer = links["The attack: memorising model against DP"]
    assert "privacy" in answer.page and answer.query_string == f"run={done[0]}&compare={done[1]}"
    assert not [b for b in at.button if b.key == "lesson_start_membership"]
    (error,) = at.error
    assert "1 of 1 runs failed" in error.value and "the digits went missing" in error.value
    assert at.button(key="lesson_start_which-pixels").label == "Try again"


def test_home_follows_a_running_lesson(genlab_home):
    store = RunStore(genlab_home)
    spec = lesson("dp-samples").spec
    first, second = spec.configs()
    fake_run(store, first)
    queued = fake_run(store, second, status="queued", record={})
    store.set_pid(queued, os.getpid())  # a live "worker"
    marker = genlab_home / "sweeps" / f"{spec.sweep_id()}.pid"
    marker.parent.mkdir()
    write_pid_marker(marker, os.getpid())  # a live "driver"
    at = open_page("home")
    no_exception(at)
    (bar,) = at.get("progress")
    assert bar.proto.value == 50 and "1 of 2 runs trained and evaluated" in bar.proto.text
    assert not [b for b in at.button if b.key == "lesson_start_dp-samples"]


@pytest.mark.slow
def test_home_starts_a_lesson_and_links_its_answer_when_done(genlab_home):
    item = lesson("which-pixels")
    at = open_page("home")
    at.button(key=f"lesson_start_{item.id}").click().run()
    no_exception(at)
    store = RunStore(genlab_home)
    try:
        assert services.lesson_status(item.id)["state"] == "running"
        assert not [b for b in at.button if b.key == f"lesson_start_{item.id}"]
        assert [p.proto.text for p in at.get("progress")] == [
            "0 of 1 runs trained and evaluated. It works in the background: closing the tab "
            "does not stop it."]
    finally:
        deadline = time.monotonic() + 400
        while sweep_status(store, item.spec)["running"] and time.monotonic() < deadline:
            time.sleep(1)
    (run,) = store.list()
    assert run.status == "finished" and record_complete(run.record)
    at = open_page("home")
    no_exception(at)
    (link,) = [link.proto for link in at.page_link if link.label == item.answers[0].label]
    assert "explain" in link.page and link.query_string == f"run={run.id}"
    assert COMPLETE.keys() <= run.record.keys()


@pytest.mark.parametrize("lesson_id", [item.id for item in LESSONS])
def test_each_lesson_launches_its_sweep_from_home(genlab_home, lesson_id):
    """The Start button starts the lesson's own grid in the background and the panel follows it;
    the driver is then stopped and its runs cancelled (the slow test above runs one to the end)."""

    item = lesson(lesson_id)
    at = open_page("home")
    at.button(key=f"lesson_start_{lesson_id}").click().run()
    no_exception(at)
    store = RunStore(genlab_home)
    status = services.lesson_status(lesson_id)
    marker = genlab_home / "sweeps" / f"{status['sweep_id']}.pid"
    try:
        assert status["state"] == "running" and status["total"] == item.spec.size
        assert status["sweep_id"] == item.spec.sweep_id()
        (bar,) = [p.proto.text for p in at.get("progress")]
        assert bar.startswith(f"0 of {item.spec.size} run")
        assert not [b for b in at.button if b.key == f"lesson_start_{lesson_id}"]
    finally:
        with contextlib.suppress(OSError, ValueError):  # the driver, so it starts nothing more
            os.kill(int(marker.read_text().split()[0]), signal.SIGKILL)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # cancel what it started; workers stop at a step
            active = [r for r in RunStore(genlab_home).list() if r.status in ("queued", "running")]
            if not active:
                break
            for run in active:
                store.request_cancel(run.id)
            time.sleep(0.5)
