"""Lessons for class on Home: launch a lesson's sweep in the background and follow it.

Nothing trains here: :func:`start_lesson` starts the sweep's driver as its own process
(:func:`genlab.sweep.launch_sweep`), whose workers train and evaluate every run. The page polls
:func:`lesson_status`, a cheap look at the store, until the answer pages can be opened.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from genlab.lessons import LESSONS, Lesson, lesson
from genlab.sweep import launch_sweep, sweep_status

from .core import get_store

APP = Path(__file__).resolve().parents[1] / "app.py"

GOOD_EPSILON = (
    "**What is a good ε?** There is no single threshold; smaller is more private. A common rule "
    "of thumb calls **ε ≤ 1 a strong guarantee**: no attacker can become much more sure that "
    "your record was used than they were before. Large real deployments, such as the 2020 US "
    "Census and Apple's collection of usage statistics, have used ε of around **10 and more**; "
    "at that level the formal guarantee on its own is weak, and the protection rests on other "
    "safeguards too. ε = ∞ means no guarantee at all. The Privacy page shows what an actual "
    "attack achieves beside the formal ε."
)


def lessons() -> tuple[Lesson, ...]:
    """Every lesson preset, in the order Home lists them."""
    return LESSONS


def start_lesson(lesson_id: str) -> int:
    """Launch the lesson's sweep in the background (once: a running one is left alone);
    returns the driver's pid."""
    return launch_sweep(get_store(), lesson(lesson_id).spec)


def lesson_status(lesson_id: str) -> dict[str, Any]:
    """The sweep's counts, run ids, errors and whether its driver runs (see
    :func:`genlab.sweep.sweep_status`), plus ``"state"``: ``running``, ``done``, ``failed`` (it
    stopped with failed runs) or ``idle`` (not started, or stopped before the end)."""
    status = sweep_status(get_store(), lesson(lesson_id).spec)
    if status["running"] or status["active"]:
        state = "running"
    elif status["done"] == status["total"]:
        state = "done"
    elif status["failed"]:
        state = "failed"
    else:
        state = "idle"
    return {**status, "state": state}


@functools.lru_cache(maxsize=1)
def _registered_pages() -> frozenset[str]:
    """The url_paths the router (``app.py``) registers."""
    return frozenset(re.findall(r'url_path="([a-z_]+)"', APP.read_text()))


def answer_links(lesson_id: str, run_ids: list[str | None]) -> list[dict[str, Any]]:
    """``{"label", "page", "query_params"}`` of each answer link whose page the router has;
    ``page`` is the view file for ``st.page_link``."""
    return [
        {"label": a.label, "page": f"views/{a.page}.py", "query_params": a.query_params(run_ids)}
        for a in lesson(lesson_id).answers
        if a.page in _registered_pages()
    ]
