"""Process liveness from ``/proc``: a pid with its start time, so a reused pid is not mistaken
for the worker that once had it, and an unreaped zombie counts as dead."""

from __future__ import annotations

from pathlib import Path


def process_stat(pid: int) -> tuple[str, int] | None:
    """``(state, starttime)`` from ``/proc/<pid>/stat``, or None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces
    return fields[0], int(fields[19])  # fields 3 (state) and 22 (starttime) of proc(5)
