"""The fair device queue: the round-robin policy, tickets in the real store, real workers."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY_SETTINGS

from genlab import fairqueue, jobs, launcher
from genlab.config import make_run_config
from genlab.fairqueue import Ticket, next_ticket
from genlab.runs import RunStore


def _tickets(owners: str) -> list[Ticket]:
    """One waiting ticket per letter, in order: ``"AAB"`` is A's two tickets, then B's."""
    return [Ticket(i, f"{o}{i}", o, "cpu", float(i), None, None, None)
            for i, o in enumerate(owners, start=1)]


def _start_order(waiting: list[Ticket], served: dict[str, float] | None = None) -> str:
    """The owners in the order one device serves them, one job at a time."""
    served, order, clock = dict(served or {}), "", 0.0
    waiting = list(waiting)
    while waiting:
        chosen = next_ticket(waiting, served)
        clock += 1
        served[chosen.owner] = clock
        order += chosen.owner
        waiting.remove(chosen)
    return order


def test_round_robin_between_owners_not_first_come_first_served():
    # A queued five, then B one, then C one: each newcomer is served before A's backlog.
    assert _start_order(_tickets("AAAAABC")) == "ABCAAAA"
    assert _start_order(_tickets("AAABBBC")) == "ABCABAB"
    # A already had the device (its first run started before B queued): B goes next.
    assert _start_order(_tickets("AAAAB"), served={"A": 0.0}) == "BAAAA"
    # The owner served least recently goes first; an owner's own tickets keep their order.
    first = next_ticket(_tickets("ABB"), {"A": 5.0, "B": 2.0})
    assert (first.owner, first.ticket) == ("B", 2)
    assert next_ticket([], {}) is None


def test_tickets_in_the_store_take_turns_and_a_dead_ticket_frees_its_slot(tmp_path):
    store = RunStore(tmp_path)
    me = os.getpid()
    a1, a2, b1 = (fairqueue.enqueue(store, run, "cpu", owner=owner, pid=me)
                  for run, owner in (("a1", "ann"), ("a2", "ann"), ("b1", "bob")))
    assert not fairqueue._try_grant(store, a2, "cpu", 1)  # a1 is ann's older ticket
    assert not fairqueue._try_grant(store, b1, "cpu", 1)  # nobody served yet: the oldest first
    assert fairqueue._try_grant(store, a1, "cpu", 1)
    assert not fairqueue._try_grant(store, b1, "cpu", 1)  # the one slot is taken
    assert fairqueue.position(store, "b1") == 0 and fairqueue.position(store, "a2") == 1
    fairqueue._drop(store, [a1])  # a1's job ended
    assert not fairqueue._try_grant(store, a2, "cpu", 1)  # ann was just served: bob's turn
    assert fairqueue._try_grant(store, b1, "cpu", 1)

    # b1's process dies holding the slot: its ticket no longer counts, so a2 may start.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    fairqueue.attach(store, b1, dead.pid)
    assert fairqueue._try_grant(store, a2, "cpu", 1)
    assert [t.ticket for t in fairqueue.tickets(store) if t.granted] == [a2, b1]
    assert fairqueue.position(store, "a2") is None  # granted, no longer waiting


def test_real_workers_serve_a_late_owner_second(tmp_path, monkeypatch):
    """Ann queues three tiny digits runs, then Bob one: Bob's run is the second to start."""
    monkeypatch.setenv("GENLAB_HOME", str(tmp_path))
    store = RunStore(tmp_path)

    def tiny(seed: int):
        return make_run_config("vae", "digits", epochs=1, seed=seed,
                               overrides=TINY_SETTINGS["vae"])

    # The device is busy while they queue, so every ticket is in before the first grant: a warm
    # worker can train ann's first run before bob's submit (this test once failed that way), and
    # round robin then rightly chooses among ann's runs alone.
    with fairqueue.turn(store, "device-holder", jobs.resolve_device("auto").type, owner="test"):
        ann = [jobs.submit(store, tiny(seed), owner="ann") for seed in range(3)]
        bob = jobs.submit(store, tiny(9), owner="bob")
    for run_id in [*ann, bob]:
        assert jobs.wait(store, run_id, timeout=240) == "finished", store.get(run_id).error
    runs = sorted(store.list(), key=lambda r: r.started)
    assert [r.id for r in runs] == [ann[0], bob, *ann[1:]]
    # one at a time: each run started after the one before it had finished
    assert all(later.started >= earlier.finished
               for earlier, later in zip(runs, runs[1:]))
    assert fairqueue.tickets(store) == []  # every worker removed its ticket
    assert not math.isnan(runs[-1].summary["test_loss"])


def _private_dirty_mb(pid: int) -> float:
    """Memory only this process has written to (its own, not shared with a parent)."""
    text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    return int(re.search(r"^Private_Dirty:\s+(\d+) kB", text, re.M).group(1)) / 1024


@pytest.mark.parametrize("warm", [False, True], ids=["fresh", "forked"])
def test_a_queued_worker_waits_light_and_can_be_cancelled(warm, tmp_path, monkeypatch):
    """A queued worker costs little memory of its own while it waits: a fresh ``genlab.worker``
    waits with only SQLite loaded (torch comes once its turn is granted), and one forked from the
    warm launcher shares the launcher's pages (a fresh process with torch writes ~150 MB)."""
    monkeypatch.setenv("GENLAB_HOME", str(tmp_path))
    monkeypatch.setenv(launcher.SWITCH, "1" if warm else "0")
    launcher_pid = launcher.warm() if warm else None
    assert (launcher_pid is not None) == warm
    store = RunStore(tmp_path)
    device = jobs.resolve_device("auto").type
    with fairqueue.turn(store, "device-holder", device, owner="test"):  # the device is busy
        run_id = jobs.submit(store, make_run_config("vae", "digits", epochs=1), owner="ann")
        pid = store.get(run_id).pid
        maps = Path(f"/proc/{pid}/maps")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "_sqlite3" not in maps.read_text():
            time.sleep(0.1)  # genlab.jobs would load torch before sqlite3; genlab.worker never
        assert "_sqlite3" in maps.read_text()
        parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        assert (parent == launcher_pid) == warm
        time.sleep(2.0)  # it polls the queue meanwhile
        assert ("libtorch" in maps.read_text()) == warm and store.get(run_id).status == "queued"
        assert _private_dirty_mb(pid) < 60
        assert fairqueue.position(store, run_id) == 0
        assert jobs.cancel(store, run_id) == "queued"
        assert jobs.wait(store, run_id, timeout=30) == "cancelled"
    assert fairqueue.tickets(store) == []


def test_a_run_whose_device_is_missing_fails_with_the_reason(tmp_path, monkeypatch):
    """No ticket can be taken for an unusable device; the worker records why, as before."""
    if jobs.resolve_device("auto").type == "cuda":
        pytest.skip("this machine has a CUDA GPU: nothing to refuse")
    monkeypatch.setenv("GENLAB_HOME", str(tmp_path))
    store = RunStore(tmp_path)
    run_id = jobs.submit(store, make_run_config("vae", "digits", epochs=1, device="cuda"))
    assert jobs.wait(store, run_id, timeout=120) == "failed"
    assert "no CUDA GPU is available" in store.get(run_id).error
    assert fairqueue.tickets(store) == []
