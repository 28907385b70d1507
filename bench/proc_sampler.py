"""Memory and CPU of a process tree, by role, sampled from ``/proc`` (Linux only); used by
``classroom_load.py``.

Roles: ``bench`` (the sampling process itself), ``server`` (one given pid), ``workers`` (genlab's
job workers) and ``browser`` (everything else below the bench: Playwright's driver and Chromium).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path


def _proc_table() -> dict[int, tuple[int, str]]:
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        table[int(entry.name)] = (int(stat[stat.rindex(")") + 2:].split()[1]), cmd)
    return table


def _memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in kB; PSS shares each shared page among its users."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def _cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of one process so far (fields 14 and 15 of proc(5))."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_role(cpu: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds each role used while sampled (a process is counted as last seen)."""
    out: dict[str, float] = {}
    for role, seconds in cpu.values():
        out[role] = out.get(role, 0.0) + seconds
    return out


class MemorySampler(threading.Thread):
    """Every ``every`` seconds, the memory of this script's whole process tree, by role."""

    def __init__(self, server_pid: int, every: float = 0.5):
        super().__init__(daemon=True)
        self.server_pid, self.every = server_pid, every
        self.samples: list[dict] = []
        self.stop = threading.Event()
        self.cpu: dict[int, tuple[str, float]] = {}  # pid -> (role, CPU seconds last seen)

    def snapshot(self) -> dict:
        table, me = _proc_table(), os.getpid()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        tree, todo = [], [me]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo.extend(children.get(pid, []))
        roles = {"server": [0, 0], "workers": [0, 0], "browser": [0, 0], "bench": [0, 0]}
        workers = 0
        for pid in tree:
            cmd = table.get(pid, (0, ""))[1]
            role = ("bench" if pid == me else "server" if pid == self.server_pid
                    else "workers" if "genlab.worker" in cmd or "genlab.jobs" in cmd
                    else "browser")
            workers += role == "workers"
            self.cpu[pid] = (role, _cpu_seconds(pid) or self.cpu.get(pid, (role, 0.0))[1])
            rss, pss = _memory_kb(pid)
            roles[role][0] += rss
            roles[role][1] += pss
        return {"t": time.monotonic(), "workers": workers, "load1": os.getloadavg()[0],
                **{f"{role}_{kind}_mb": value / 1024 for role, (rss, pss) in roles.items()
                   for kind, value in (("rss", rss), ("pss", pss))}}

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append(self.snapshot())
            self.stop.wait(self.every)
