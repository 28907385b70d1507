"""The background worker's entry point: wait for the device light, then train.

``python -m genlab.worker RUN_ID --ticket N [...]`` takes the same arguments as
``python -m genlab.jobs``. A job usually waits in the fair device queue (:mod:`genlab.fairqueue`)
far longer than it trains, and importing torch and the models costs a worker about 4 s of CPU
and 380 MB of memory (measured on this project's 2-core machine). So this module waits for its
turn with only the standard library and SQLite loaded; once the ticket is granted it imports
:mod:`genlab.jobs` and runs :func:`genlab.jobs.worker_main` in the same process, whose own wait
finds the ticket already granted to this process and passes straight through. Twenty queued jobs
then cost twenty small processes instead of twenty copies of torch.

A worker also runs at a lower CPU priority than the dashboard that started it (``nice`` +10,
``GENLAB_WORKER_NICE``): on a small machine a page view then waits for no training step, and a
job gets every cycle the pages leave. On a GPU the priority changes little, since the device
does the work.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

from genlab import fairqueue, launcher
from genlab.errors import GenlabError, TrainingCancelled
from genlab.procs import EVALUATE_PID, pid_alive, write_pid_marker
from genlab.runs import ACTIVE, RunStore

DEFAULT_NICE = 10


def lower_priority() -> int:
    """Raise this process's nice value by ``GENLAB_WORKER_NICE`` (default 10, 0 for none);
    returns the new nice value. A value that is not a whole number counts as the default.

    On Linux with autogroup scheduling (``/proc/sys/kernel/sched_autogroup_enabled``, on in most
    distributions' kernels) the CPU is shared between sessions first, and a process's nice only
    counts within its own session. A worker leads a session of its own (:mod:`genlab.jobs`
    starts it so that it outlives the server), so its nice alone changed nothing: on the 2-core
    machine a training worker took a quarter of the CPU from a class of 20 pages
    (bench/README.md). Such a worker lowers its session's priority to the same nice value."""
    try:
        step = int(os.environ.get("GENLAB_WORKER_NICE", str(DEFAULT_NICE)))
    except ValueError:
        step = DEFAULT_NICE
    step = max(0, step)
    if step > 0 and os.getsid(0) == os.getpid():  # never the session of a terminal it runs in
        # The session first, so that whoever sees the new nice value sees the session's too.
        with contextlib.suppress(OSError):  # no autogroup (another OS, or a kernel without it)
            Path("/proc/self/autogroup").write_text(f"{min(19, os.nice(0) + step)}\n")
    return os.nice(step)


def main(argv: list[str] | None = None) -> int:
    """Wait for the ticket's turn (if any), then hand over to :func:`genlab.jobs.worker_main`."""
    argv = sys.argv[1:] if argv is None else list(argv)
    started_nice = os.nice(0)  # the launcher that would serve the process that started this one
    lower_priority()
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("run_id")
    parser.add_argument("--ticket", type=int, default=None)
    parser.add_argument("--audit", action="store_true")
    parser.add_argument(TAKE_OVER, type=int, default=None)
    known, _ = parser.parse_known_args(argv)
    if known.take_over is not None:
        cut = argv.index(TAKE_OVER)
        return _take_over(known.ticket, known.take_over, argv[:cut] + argv[cut + 2:])
    mine = None
    if known.ticket is not None and not known.audit:
        store = RunStore(recover=False)
        mine = fairqueue.find(store, known.ticket)
    if mine is None:  # no ticket to wait on: the full worker takes one itself
        return _full(argv)
    try:
        with fairqueue.turn(store, mine.run_id, mine.device, ticket=mine.ticket,
                            slots=fairqueue.jobs_per_device(),
                            cancelled=lambda: store.cancel_requested(mine.run_id)):
            if _hand_over(store, mine, argv, started_nice=started_nice):
                return 0
            return _full(argv)
    except TrainingCancelled:  # cancelled while it waited: it never started
        if store.get(mine.run_id).status in ACTIVE:
            store.mark_cancelled(mine.run_id)
        return 0
    except GenlabError as err:  # the store went away while waiting
        print(f"genlab worker: {err}", file=sys.stderr)
        return 1


# ------------------------------------------------------------------ handing a turn to the launcher
# A job submitted before the warm launcher (genlab.launcher) served got a fresh worker, which
# would import torch itself once its turn came: with a class arriving all at once, every job of
# the class did, at the workers' low priority, while the launcher warmed up beside them (bench/
# README.md, "Warm workers"). Such a worker hands its turn to a launcher that serves by then: the
# launcher forks the job's worker, which takes the ticket and the run over, and this one exits.
TAKE_OVER = "--take-over"  # PID: the fresh worker whose granted ticket this one takes over
HAND_OVER_TIMEOUT_S = 30.0


def _hand_over(store: RunStore, mine: fairqueue.Ticket, argv: list[str], *,
               started_nice: int) -> bool:
    """Give this worker's granted turn to a worker forked by the warm launcher of the process
    that started this one (at nice ``started_nice``); True when that one took the ticket over
    (this one then exits), False to run the job here."""
    if "torch" in sys.modules or not launcher.enabled():  # forked warm already, or no launcher
        return False
    key = launcher.code_key(started_nice)
    if not launcher.ready(key):
        return False
    try:
        log = Path(os.readlink("/proc/self/fd/1"))  # the run's log, which jobs opened for us
    except OSError:
        return False
    if not log.is_file():
        return False
    child = launcher.spawn([*argv, TAKE_OVER, str(os.getpid())], env=dict(os.environ), log=log,
                           key=key)
    if child is None:
        return False
    deadline = time.monotonic() + HAND_OVER_TIMEOUT_S
    while time.monotonic() < deadline and pid_alive(child):
        now = fairqueue.find(store, mine.ticket)
        if now is not None and now.pid == child:
            return True
        time.sleep(0.05)
    with contextlib.suppress(OSError):  # too late: make sure it never starts, then run here
        os.kill(child, signal.SIGKILL)
    fairqueue.take_over(store, mine.ticket, child, os.getpid())
    _move_run(store, mine.run_id, child, os.getpid())
    return False


def _take_over(ticket: int | None, parent: int, argv: list[str]) -> int:
    """In the forked worker: take ``parent``'s run, its evaluation marker and, last, its granted
    ticket (what ``parent`` waits to see before it exits), then run the job and free the ticket."""
    store = RunStore(recover=False)
    mine = fairqueue.find(store, ticket)
    if mine is None or mine.granted is None or mine.pid != parent:
        print(f"genlab worker: no granted ticket {ticket} of process {parent} to take over",
              file=sys.stderr)
        return 1
    _move_run(store, mine.run_id, parent, os.getpid())  # first: never seen without a live owner
    if not fairqueue.take_over(store, mine.ticket, parent, os.getpid()):
        return 1  # gone meanwhile: the parent runs the job and takes its run back
    try:
        return _full(argv)
    finally:
        fairqueue.release(store, mine.ticket)


def _move_run(store: RunStore, run_id: str, old_pid: int, new_pid: int) -> None:
    """Record ``new_pid`` as the run's process and in its evaluation marker, where either names
    ``old_pid``."""
    if store.get(run_id).pid == old_pid:
        store.set_pid(run_id, new_pid)
    marker = store.artifacts_dir(run_id) / EVALUATE_PID
    with contextlib.suppress(OSError, ValueError):
        if int(marker.read_text().split()[0]) == old_pid:
            write_pid_marker(marker, new_pid)


def _full(argv: list[str]) -> int:
    from genlab.jobs import worker_main

    return worker_main(argv)


if __name__ == "__main__":
    sys.exit(main())
