"""Page-response figures of a load benchmark's timed moves; used by ``classroom_load.py``.

A move is a dict with ``t`` (monotonic start), ``seconds`` (None for a failed move) and more.
"""

from __future__ import annotations

import statistics
import time


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def response(moves: list[dict]) -> dict:
    """n, p50, p95 and max of the timed moves' seconds."""
    seconds = [m["seconds"] for m in moves if m["seconds"] is not None]
    if not seconds:
        return {"n": 0, "p50": None, "p95": None, "max": None}
    return {"n": len(seconds), "p50": statistics.median(seconds),
            "p95": percentile(seconds, 0.95), "max": max(seconds)}


def timeline(moves: list[dict], samples: list[dict], start: float,
             window_s: float = 30.0) -> list[dict]:
    """Page response and CPU seconds by role per ``window_s`` of the benchmark: whether slow
    moves come in bursts, and what kept the cores busy meanwhile."""
    windows: dict[int, list[float]] = {}
    for m in moves:
        windows.setdefault(int((m["t"] - start) // window_s), []).append(m["seconds"])

    def cpu_at(t: float) -> dict[str, float]:  # the last sample at or before t
        before = [s for s in samples if s["t"] <= t] or samples[:1]
        return before[-1]["cpu_s"]

    rows = []
    for k, v in sorted(windows.items()):
        lo, hi = cpu_at(start + k * window_s), cpu_at(start + (k + 1) * window_s)
        rows.append({"from_s": k * window_s, "n": len(v), "p50": round(statistics.median(v), 2),
                     "p95": round(percentile(v, 0.95), 2), "max": round(max(v), 2),
                     "cpu_s": {role: round(hi[role] - lo.get(role, 0.0), 1) for role in hi}})
    return rows


def host_speed(repeats: int = 3) -> float:
    """Seconds for one core to add up the integers below 10**7 in a Python loop, the best of
    ``repeats``, measured before the load starts. The same class cost 2.5 times the CPU-seconds
    on one day's host as on another's with the same CPU name (bench/README.md), so each result
    carries its host's speed."""
    best = float("inf")
    for _ in range(repeats):
        start, total = time.perf_counter(), 0
        for i in range(10**7):
            total += i
        best = min(best, time.perf_counter() - start)
    return round(best, 3)
