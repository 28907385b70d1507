"""The fair device queue: jobs waiting for a device take turns between owners, round robin.

First come, first served lets one student who queues ten runs hold the class's only device for
all ten. Here every job that needs a device gets a *ticket* in the run store (table
``device_queue``) when it is submitted, and a free slot goes to the waiting ticket of the owner
who was served least recently on that device (``device_turns``); an owner's own tickets keep
their submission order. So if A queues five runs and then B one, B's run starts second.

:func:`next_ticket` is the whole policy, a pure function. :func:`turn` is what a worker process
runs around its job: it waits (polling the store, which every worker shares) until its ticket is
granted, and removes it when the job ends. A ticket whose process died is dropped by the next
poll of any worker, so a killed worker never holds a slot. Runs without an owner (the command
line, sweeps) share one turn under the empty name.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from genlab.errors import TrainingCancelled
from genlab.procs import pid_alive, process_stat
from genlab.runs import RunStore

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS device_queue (ticket INTEGER PRIMARY KEY AUTOINCREMENT,"
    " run_id TEXT NOT NULL, owner TEXT NOT NULL, device TEXT NOT NULL, submitted REAL NOT NULL,"
    " pid INTEGER, pid_start INTEGER, granted REAL)",
    "CREATE TABLE IF NOT EXISTS device_turns (device TEXT NOT NULL, owner TEXT NOT NULL,"
    " served REAL NOT NULL, PRIMARY KEY (device, owner))",
)
_STARTUP_GRACE_S = 30.0  # a ticket without a pid may belong to a worker that is still starting
_ready: set[str] = set()  # database files whose queue tables exist (per process)


@dataclass(frozen=True)
class Ticket:
    """One job waiting for, or holding, a slot on a device."""

    ticket: int
    run_id: str
    owner: str
    device: str
    submitted: float
    pid: int | None
    pid_start: int | None
    granted: float | None


def jobs_per_device() -> int:
    """How many jobs may hold one device at once (``GENLAB_JOBS_PER_DEVICE``, default 1)."""
    return max(1, int(os.environ.get("GENLAB_JOBS_PER_DEVICE", "1")))


def next_ticket(waiting: Sequence[Ticket], served: dict[str, float]) -> Ticket | None:
    """The waiting ticket that gets the next free slot: round robin between owners.

    Args:
        waiting: The tickets not yet granted, on one device.
        served: When each owner last got a slot on that device (absent: never).

    Returns:
        The oldest ticket of the owner served least recently (an owner never served comes
        first; ties go to the owner whose oldest ticket is oldest), or None when none waits.
    """
    if not waiting:
        return None
    oldest: dict[str, Ticket] = {}
    for t in sorted(waiting, key=lambda t: t.ticket):
        oldest.setdefault(t.owner, t)
    return min(oldest.values(), key=lambda t: (served.get(t.owner, -math.inf), t.ticket))


def _ensure(store: RunStore) -> None:
    if str(store.db_path) in _ready:
        return
    with store._connect(write=True) as conn:  # same package: the store's own connection
        for statement in _SCHEMA:
            conn.execute(statement)
    _ready.add(str(store.db_path))


def enqueue(
    store: RunStore, run_id: str, device: str, *, owner: str | None = None, pid: int | None = None
) -> int:
    """Give a job of ``run_id`` a ticket on ``device`` now; returns the ticket number.

    Args:
        owner: Whose turn it takes; None reads the run's owner from the store.
        pid: The job's process, if it already runs (else :func:`attach` it once started).
    """
    _ensure(store)
    if owner is None:
        info = store.get(run_id)
        run_id, owner = info.id, info.owner
    stat = process_stat(pid) if pid else None
    with store._connect(write=True) as conn:
        cursor = conn.execute(
            "INSERT INTO device_queue (run_id, owner, device, submitted, pid, pid_start)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (run_id, owner or "", device, time.time(), pid, stat[1] if stat else None),
        )
        return int(cursor.lastrowid)


def attach(store: RunStore, ticket: int, pid: int) -> None:
    """Record the process that will use ``ticket``, so a dead one can be told apart."""
    _ensure(store)
    stat = process_stat(pid)
    with store._connect(write=True) as conn:
        conn.execute(
            "UPDATE device_queue SET pid = ?, pid_start = ? WHERE ticket = ?",
            (pid, stat[1] if stat else None, ticket),
        )


def take_over(store: RunStore, ticket: int, old_pid: int, new_pid: int) -> bool:
    """Move ``ticket`` (and the turn it may hold) from process ``old_pid`` to ``new_pid``, in
    one statement; False when ``old_pid`` no longer holds it."""
    _ensure(store)
    stat = process_stat(new_pid)
    with store._connect(write=True) as conn:
        return conn.execute(
            "UPDATE device_queue SET pid = ?, pid_start = ? WHERE ticket = ? AND pid = ?",
            (new_pid, stat[1] if stat else None, ticket, old_pid),
        ).rowcount == 1


def release(store: RunStore, ticket: int) -> None:
    """Free ``ticket`` unless another process took it over (:func:`take_over`)."""
    _ensure(store)
    with store._connect(write=True) as conn:
        conn.execute("DELETE FROM device_queue WHERE ticket = ? AND (pid = ? OR pid IS NULL)",
                     (ticket, os.getpid()))


def tickets(store: RunStore, device: str | None = None) -> list[Ticket]:
    """Every ticket (on ``device``, if given), in submission order."""
    _ensure(store)
    sql, args = "SELECT * FROM device_queue", ()
    if device is not None:
        sql, args = sql + " WHERE device = ?", (device,)
    with store._connect() as conn:
        rows = conn.execute(sql + " ORDER BY ticket", args).fetchall()
    return [_ticket(row) for row in rows]


def find(store: RunStore, ticket: int | None) -> Ticket | None:
    """Ticket number ``ticket``, or None when there is none (or ``ticket`` is None)."""
    if ticket is None:
        return None
    _ensure(store)
    with store._connect() as conn:
        row = conn.execute("SELECT * FROM device_queue WHERE ticket = ?", (ticket,)).fetchone()
    return None if row is None else _ticket(row)


def _ticket(row) -> Ticket:
    return Ticket(**{name: row[name] for name in Ticket.__dataclass_fields__})


def _alive(t: Ticket, now: float) -> bool:
    if t.pid is None:
        return now - t.submitted < _STARTUP_GRACE_S
    return pid_alive(t.pid, t.pid_start)


def _served(store: RunStore, device: str) -> dict[str, float]:
    with store._connect() as conn:
        rows = conn.execute("SELECT owner, served FROM device_turns WHERE device = ?", (device,))
        return {owner: served for owner, served in rows}


def _drop(store: RunStore, numbers: Sequence[int]) -> None:
    if numbers:
        with store._connect(write=True) as conn:
            conn.executemany("DELETE FROM device_queue WHERE ticket = ?", [(n,) for n in numbers])


def _try_grant(store: RunStore, ticket: int, device: str, slots: int) -> bool:
    """Grant ``ticket`` if it is next and a slot is free; the check and the grant are one
    immediate transaction, so two workers never take the same turn."""
    now = time.time()
    queue = [t for t in tickets(store, device) if _alive(t, now)]
    waiting = [t for t in queue if t.granted is None]
    if sum(t.granted is not None for t in queue) >= slots:
        return False
    chosen = next_ticket(waiting, _served(store, device))
    if chosen is None or chosen.ticket != ticket:
        return False
    with store._connect(write=True) as conn:
        held = conn.execute(
            "SELECT pid, pid_start FROM device_queue WHERE device = ? AND granted IS NOT NULL",
            (device,),
        ).fetchall()
        live = [row for row in held if pid_alive(row["pid"], row["pid_start"])]
        mine = conn.execute("SELECT granted FROM device_queue WHERE ticket = ?", (ticket,))
        row = mine.fetchone()
        if row is None or row["granted"] is not None or len(live) >= slots:
            return False
        conn.execute("UPDATE device_queue SET granted = ? WHERE ticket = ?", (now, ticket))
        conn.execute(
            "INSERT INTO device_turns (device, owner, served) VALUES (?, ?, ?)"
            " ON CONFLICT (device, owner) DO UPDATE SET served = excluded.served",
            (device, chosen.owner, now),
        )
    return True


def position(store: RunStore, run_id: str) -> int | None:
    """How many waiting jobs on its device would start before ``run_id``'s, if nothing else
    arrives (0: it is next); None when the run holds no waiting ticket."""
    mine = [t for t in tickets(store) if t.run_id == run_id and t.granted is None]
    if not mine:
        return None
    now, device = time.time(), mine[0].device
    waiting = [t for t in tickets(store, device) if t.granted is None and _alive(t, now)]
    served, ahead = dict(_served(store, device)), 0
    while waiting:
        chosen = next_ticket(waiting, served)
        if chosen.ticket == mine[0].ticket:
            return ahead
        ahead += 1
        served[chosen.owner] = now + ahead  # as if it were served next
        waiting.remove(chosen)
    return ahead


@contextlib.contextmanager
def turn(
    store: RunStore,
    run_id: str,
    device: str,
    *,
    slots: int = 1,
    ticket: int | None = None,
    owner: str | None = None,
    poll: float = 0.5,
    cancelled: Callable[[], bool] = lambda: False,
) -> Iterator[int]:
    """Wait for ``run_id``'s turn on ``device``, hold the slot for the block, then free it.

    Args:
        slots: How many jobs may hold ``device`` at once.
        ticket: The ticket the job got when it was submitted; None takes a new one now.
        owner: Whose turn a new ticket takes; None reads the run's owner from the store.
        poll: Seconds between looks at the queue.
        cancelled: Checked while waiting; when it returns True the wait ends.

    Yields:
        The ticket number.

    Raises:
        TrainingCancelled: ``cancelled()`` turned true while the job was waiting.
    """
    _ensure(store)
    known = {t.ticket: t for t in tickets(store, device)}
    held = known.get(ticket)
    if held is not None and held.granted is not None and held.pid == os.getpid():
        yield ticket  # this process already holds the turn (genlab.worker waited for it)
        return
    if held is None:
        ticket = enqueue(store, run_id, device, owner=owner, pid=os.getpid())
    else:
        attach(store, ticket, os.getpid())
    try:
        while not _try_grant(store, ticket, device, slots):
            now = time.time()
            _drop(store, [t.ticket for t in tickets(store, device) if not _alive(t, now)])
            if cancelled():
                raise TrainingCancelled(f"run {run_id} was cancelled while queued")
            time.sleep(poll)
        yield ticket
    finally:
        release(store, ticket)
