"""Memory and CPU of a process tree, by role, sampled from ``/proc`` (Linux only); used by
``classroom_load.py``.

Roles: ``bench`` (the sampling process itself), ``server`` (one given pid), ``workers`` (genlab's
job workers, and the warm launcher they are forked from: ``genlab.launcher``) and ``browser``
(everything else below the bench: Playwright's driver and Chromium). A forked worker keeps the
launcher's command line and shares its pages until it writes them, so PSS is the fair measure of
the workers' memory; the ``workers`` count leaves the launcher out.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
WORKER_MODULES = ("genlab.worker", "genlab.jobs", "genlab.launcher")


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


def _memory_kb(pid: int, pss: bool) -> tuple[int, int]:
    """(RSS, PSS) of one process in kB; PSS shares each shared page among its users. PSS (0
    unless asked for) walks the process's page tables: about 1.5 ms per Chromium process."""
    rss = proportional = 0
    try:
        rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KB
        if pss:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    proportional = int(line.split()[1])
    except (OSError, IndexError, ValueError):
        pass
    return rss, proportional


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
    """Every ``every`` seconds, the CPU and RSS of this script's whole process tree, by role;
    PSS only every ``pss_every`` seconds, since reading it for 20 browsers took 0.12 s of CPU a
    time (a quarter of a core every 0.5 s, taken from what is measured)."""

    def __init__(self, server_pid: int, every: float = 1.0, pss_every: float = 5.0):
        super().__init__(daemon=True)
        self.server_pid, self.every, self.pss_every = server_pid, every, pss_every
        self._next_pss = 0.0
        self.samples: list[dict] = []
        self.stop = threading.Event()
        self.cpu: dict[int, tuple[str, float]] = {}  # pid -> (role, CPU seconds last seen)
        self.own_cpu_s = 0.0  # what sampling cost this script (part of the "bench" role)

    def snapshot(self) -> dict:
        """One sample; it has ``*_pss_mb`` keys only when PSS was due."""
        table, me = _proc_table(), os.getpid()
        with_pss = time.monotonic() >= self._next_pss
        if with_pss:
            self._next_pss = time.monotonic() + self.pss_every
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
                    else "workers" if any(m in cmd for m in WORKER_MODULES)
                    else "browser")
            parent_cmd = table.get(table.get(pid, (0, ""))[0], (0, ""))[1]
            launcher = "genlab.launcher" in cmd and "genlab.launcher" not in parent_cmd
            workers += role == "workers" and not launcher
            self.cpu[pid] = (role, _cpu_seconds(pid) or self.cpu.get(pid, (role, 0.0))[1])
            rss, pss = _memory_kb(pid, with_pss)
            roles[role][0] += rss
            roles[role][1] += pss
        kinds = ("rss", "pss") if with_pss else ("rss",)
        return {"t": time.monotonic(), "workers": workers, "load1": os.getloadavg()[0],
                "cpu_s": cpu_by_role(self.cpu),  # CPU seconds so far, by role
                **{f"{role}_{kind}_mb": value / 1024 for role, values in roles.items()
                   for kind, value in zip(kinds, values)}}

    def run(self) -> None:
        while not self.stop.is_set():
            before = time.thread_time()
            self.samples.append(self.snapshot())
            self.own_cpu_s += time.thread_time() - before
            self.stop.wait(self.every)
