"""Process liveness from ``/proc``: a pid with its start time, so a reused pid is not mistaken
for the worker that once had it, and an unreaped zombie counts as dead.

A *pid marker* is a small file holding ``"pid starttime"`` of a background process (an audit or
an evaluation worker); it sits in the run's folder while that process works.
"""

from __future__ import annotations

import os
from pathlib import Path

from genlab.paths import replacing

EVALUATE_PID = "evaluate.pid"  # in the run's folder while a worker evaluates it (genlab.jobs)
EVALUATE_ERROR = "evaluate.error"  # the one-line reason the run's last evaluation failed


def process_stat(pid: int) -> tuple[str, int] | None:
    """``(state, starttime)`` from ``/proc/<pid>/stat``, or None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces
    return fields[0], int(fields[19])  # fields 3 (state) and 22 (starttime) of proc(5)


def pid_alive(pid: int, start: int | None = None) -> bool:
    """Whether process ``pid`` lives, is no zombie and (if given) started at ``start``."""
    if Path("/proc/self/stat").exists():
        stat = process_stat(pid)  # a start-time mismatch means the pid was reused
        return stat is not None and stat[0] not in "ZX" and start in (None, stat[1])
    try:  # no /proc (macOS): existence is all we can check
        os.kill(pid, 0)
    except OSError as err:  # EPERM: it exists but belongs to another user
        return isinstance(err, PermissionError)
    return True


def write_pid_marker(path: Path, pid: int) -> None:
    """Write the marker of process ``pid`` (with its start time, 0 where unknown).

    The new marker replaces the old one in one step (``os.replace``): a reader sees one or the
    other, never the empty file that rewriting in place leaves between its truncate and its
    write. A sweep polls the evaluation marker while a worker hands it to the process that takes
    its job over; in a loop of rewrites, 3 reads in 4 once caught it empty.
    """
    stat = process_stat(pid)
    with replacing(path) as partial:
        partial.write_text(f"{pid} {stat[1] if stat else 0}")


def pid_marker_alive(path: Path) -> bool:
    """Whether the process a marker names still runs; False for a missing or garbled marker."""
    try:
        pid, start = (int(v) for v in path.read_text().split())
    except (OSError, ValueError):
        return False
    return pid > 0 and pid_alive(pid, start or None)
