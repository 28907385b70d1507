"""Sweeps: a grid of runs (models × ε × seeds) trained and evaluated by the local workers.

A :class:`~genlab.sweep_spec.SweepSpec` names the grid. :func:`plan` looks every cell up in the
store by its config hash, so a sweep is idempotent: what is done stays done, a run that failed is
queued again in its own row (never a second row for the same config), and a run another process
is training is waited on. :func:`run_sweep` is the driver. It keeps at most ``jobs`` workers in
flight, and each worker trains *and* evaluates its run (``python -m genlab.jobs RUN
--evaluate``), so killing the driver loses nothing: the workers finish, and the next sweep picks
up where this one stopped. :func:`launch_sweep` starts the driver as a detached process
(``python -m genlab.sweep --spec FILE``; the dashboard and the lessons use it);
:func:`sweep_status` is the cheap summary their pages poll.

Nothing here imports the training stack until a run has to start: a sweep whose runs are all
done only reads the store.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genlab.config import RunConfig
from genlab.errors import ConfigError, GenlabError
from genlab.procs import EVALUATE_ERROR, EVALUATE_PID, pid_marker_alive, write_pid_marker
from genlab.runs import ACTIVE, RunInfo, RunStore
from genlab.sweep_spec import DEFAULT_LIMIT, SweepSpec, parse_epsilons, parse_models, parse_seeds

try:  # POSIX file locks keep two drivers from starting the same run twice
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

__all__ = [
    "DEFAULT_LIMIT",
    "SweepItem",
    "SweepSpec",
    "failures",
    "launch_sweep",
    "parse_epsilons",
    "parse_models",
    "parse_seeds",
    "plan",
    "record_complete",
    "run_sweep",
    "sweep_status",
]

RECORD_BLOCKS = ("performance", "interpretability", "privacy", "cost", "efficiency")
STATES = ("done", "needs_eval", "active", "todo")


# ----------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class SweepItem:
    """One cell of the grid and where it stands.

    ``state`` is ``done`` (finished with the whole record), ``needs_eval`` (finished, record
    incomplete), ``active`` (queued, training or evaluating in a live worker) or ``todo`` (no
    run yet, or only failed or cancelled ones). ``status`` and ``error`` are those of the run
    ``run_id`` (for a ``needs_eval`` run, ``error`` is why its last evaluation failed).
    """

    config: RunConfig
    config_hash: str
    run_id: str | None
    state: str
    status: str | None = None
    error: str | None = None


def record_complete(record: dict) -> bool:
    """Whether a record has all four blocks, the privacy block with its membership audit."""
    return all(block in record for block in RECORD_BLOCKS) and "mia_auc" in record["privacy"]


def _classify(store: RunStore, cfg: RunConfig, config_hash: str) -> SweepItem:
    """The item of one config, from the best of its runs: done, then finished, then active."""
    runs = store.find_by_hash(config_hash)

    def rank(info: RunInfo) -> tuple[int, float]:
        if info.status == "finished":
            return (3 if record_complete(info.record) else 2), info.created
        return (1 if info.status in ACTIVE else 0), info.created

    if not runs:
        return SweepItem(cfg, config_hash, None, "todo")
    best = max(runs, key=rank)
    item = SweepItem(cfg, config_hash, best.id, "todo", best.status, best.error)
    if best.status in ACTIVE:
        return dataclasses.replace(item, state="active")
    if best.status != "finished":
        return item
    if record_complete(best.record):
        return dataclasses.replace(item, state="done")
    folder = store.home / "runs" / best.id
    if pid_marker_alive(folder / EVALUATE_PID):
        return dataclasses.replace(item, state="active")
    error_file = folder / EVALUATE_ERROR
    error = error_file.read_text().strip() if error_file.exists() else None
    return dataclasses.replace(item, state="needs_eval", error=error)


def plan(store: RunStore, spec: SweepSpec) -> list[SweepItem]:
    """Where every run of the sweep stands, in :meth:`SweepSpec.configs` order.

    Runs whose worker died are marked failed first, so ``active`` means a live worker.
    """
    store.recover()
    return [_classify(store, cfg, cfg.config_hash()) for cfg in spec.configs()]


# ----------------------------------------------------------------------------- the driver
def _sweeps_dir(store: RunStore) -> Path:
    folder = store.home / "sweeps"
    folder.mkdir(exist_ok=True)
    return folder


@contextlib.contextmanager
def _submit_lock(store: RunStore) -> Iterator[None]:
    """One driver at a time looks a run up and starts it, so none starts it twice."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(_sweeps_dir(store) / "submit.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def _driver_marker(store: RunStore, spec: SweepSpec) -> Iterator[None]:
    """``<home>/sweeps/<id>.pid`` names this process while it drives the sweep."""
    marker = _sweeps_dir(store) / f"{spec.sweep_id()}.pid"
    write_pid_marker(marker, os.getpid())
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            if int(marker.read_text().split()[0]) == os.getpid():
                marker.unlink()


def _check_runs(items: list[SweepItem]) -> None:
    """Bad data or a model unfit for DP fails before any run is created."""
    if not items:
        return
    from genlab.train import check_run

    seen = set()
    for item in items:
        key = (item.config.model, item.config.privacy is None)
        if key not in seen:
            seen.add(key)
            check_run(item.config)


def _start(store: RunStore, item: SweepItem, *, evaluate: bool) -> SweepItem:
    """Start the work ``item`` needs (train, or evaluate), unless another process already did."""
    from genlab import jobs

    with _submit_lock(store):
        fresh = _classify(store, item.config, item.config_hash)
        if fresh.state == "todo" and fresh.run_id is None:
            run_id = jobs.submit(store, item.config, owner="sweep", evaluate=evaluate)
        elif fresh.state == "todo":  # only failed or cancelled runs: reuse the newest one's row
            run_id = fresh.run_id
            store.requeue(run_id)
            jobs.start_worker(store, run_id, evaluate=evaluate)
        elif fresh.state == "needs_eval" and evaluate:
            jobs.submit_evaluation(store, fresh.run_id)
            return dataclasses.replace(fresh, state="active", error=None)
        else:
            return fresh
    return dataclasses.replace(fresh, run_id=run_id, state="active", status="queued", error=None)


def run_sweep(
    store: RunStore,
    spec: SweepSpec,
    *,
    on_progress: Callable[[int, int, SweepItem], None] | None = None,
    evaluate: bool = True,
    jobs: int | None = None,
    poll: float = 0.5,
    executor: str = "local",
    ray_address: str | None = None,
) -> list[str]:
    """Train (and evaluate) every run of the sweep that is not done yet; returns the run ids in
    plan order. ``executor="ray"``: each run is a Ray task (:mod:`genlab.ray_executor`).

    Each run is tried once per call: a run that fails stays failed (see :func:`failures`) and
    the sweep goes on. Calling it again retries the failed runs in their own rows and does
    nothing for the ones that are done.

    Args:
        on_progress: called as ``(settled, total, item)`` each time a run is settled (done,
            or failed), including the runs that were done already.
        evaluate: fill every run's whole record (performance, interpretability, the full
            membership audit, cost) in its worker; without it, finished runs count as settled.
        jobs: the most workers in flight at once (default ``GENLAB_JOBS_PER_DEVICE``, 1).
        poll: seconds between looks at the store while workers run.

    Raises:
        ConfigError: ``jobs`` below 1, or a setting the data does not fit (no run is created).
        DataError: the dataset cannot be loaded (no run is created).
    """
    if executor != "local":  # ray, or a name it refuses
        from genlab.ray_executor import run_ray_sweep
        return run_ray_sweep(store, spec, on_progress=on_progress, evaluate=evaluate, jobs=jobs,
                             address=ray_address, poll=poll, executor=executor)
    if jobs is not None and jobs < 1:
        raise ConfigError(f"--jobs must be at least 1 (got {jobs})")
    items = plan(store, spec)
    total, settled = len(items), 0
    queue: deque[int] = deque()
    waiting: set[int] = set()
    started: set[int] = set()

    def settle(i: int, item: SweepItem) -> None:
        nonlocal settled
        items[i], settled = item, settled + 1
        if on_progress is not None:
            on_progress(settled, total, item)

    def needs_work(item: SweepItem) -> bool:
        return item.state == "todo" or (item.state == "needs_eval" and evaluate)

    with _driver_marker(store, spec):
        for i, item in enumerate(items):
            if item.state == "active":
                waiting.add(i)
            elif needs_work(item):
                queue.append(i)
            else:
                settle(i, item)
        _check_runs([items[i] for i in queue if items[i].state == "todo"])
        while queue or waiting:
            for i in sorted(waiting):
                item = _classify(store, items[i].config, items[i].config_hash)
                if item.state == "active":
                    continue
                waiting.discard(i)
                # a run someone else trained without its record gets evaluated; a failure,
                # or a second failure of ours, is settled
                if item.state == "needs_eval" and evaluate and i not in started:
                    items[i] = item
                    queue.appendleft(i)
                else:
                    settle(i, item)
            if queue and jobs is None:
                from genlab.jobs import jobs_per_device

                jobs = jobs_per_device()
            while queue and len(waiting) < (jobs or 1):
                i = queue.popleft()
                item = _start(store, items[i], evaluate=evaluate)
                started.add(i)
                if item.state == "active":
                    items[i] = item
                    waiting.add(i)
                else:
                    settle(i, item)
            if waiting:
                time.sleep(poll)
                store.recover()
    return [item.run_id for item in items]


def failures(store: RunStore, run_ids: list[str], *, evaluate: bool = True) -> list[dict]:
    """The runs that did not end finished (and, with ``evaluate``, fully evaluated), each as
    ``{"run_id", "status", "error"}``."""
    out = []
    for run_id in run_ids:
        info = store.get(run_id)
        if info.status != "finished":
            out.append({"run_id": info.id, "status": info.status,
                        "error": info.error or f"the run is {info.status}"})
        elif evaluate and not record_complete(info.record):
            error_file = store.home / "runs" / info.id / EVALUATE_ERROR
            error = error_file.read_text().strip() if error_file.exists() else None
            out.append({"run_id": info.id, "status": info.status,
                        "error": f"evaluation failed: {error or 'the record is incomplete'}"})
    return out


# ----------------------------------------------------------------------------- background
def launch_sweep(store: RunStore, spec: SweepSpec, *, evaluate: bool = True,
                 executor: str = "local", ray_address: str | None = None) -> int:
    """Start the sweep's driver (``executor`` as for :func:`run_sweep`) detached; its pid.

    The spec goes to ``<home>/sweeps/<id>.json`` and the driver's output to ``<id>.log``. If a
    driver of the same grid is already running, its pid comes back and none is started.
    """
    folder, sweep_id = _sweeps_dir(store), spec.sweep_id()
    marker = folder / f"{sweep_id}.pid"
    if pid_marker_alive(marker):
        return int(marker.read_text().split()[0])
    spec_file = folder / f"{sweep_id}.json"
    spec_file.write_text(json.dumps(spec.to_dict(), indent=2))
    args = [sys.executable, "-m", "genlab.sweep", "--spec", str(spec_file), "--executor", executor]
    args += ["--ray-address", ray_address] if ray_address else []
    with open(folder / f"{sweep_id}.log", "ab") as log:
        proc = subprocess.Popen(
            args + ([] if evaluate else ["--no-evaluate"]),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "GENLAB_HOME": str(store.home)},
            start_new_session=True,
        )
    threading.Thread(target=proc.wait, daemon=True).start()  # reap it: no zombie lingers
    write_pid_marker(marker, proc.pid)
    return proc.pid


def sweep_status(store: RunStore, spec: SweepSpec, *, evaluate: bool = True) -> dict[str, Any]:
    """Where the sweep stands, cheaply (the dashboard polls it).

    Returns:
        ``{"sweep_id", "total", "done", "active", "needs_eval", "failed", "todo", "running",
        "run_ids", "errors"}``: counts of runs by state (``failed``: failed or cancelled
        runs, and finished runs whose evaluation failed; ``needs_eval``: finished runs not yet
        evaluated; ``todo``: no run yet), whether a driver of this grid is running, the run
        ids in plan order (None where no run exists yet) and ``{run_id: error}`` of failures.
    """
    items = plan(store, spec)
    counts = dict.fromkeys(("done", "active", "needs_eval", "failed", "todo"), 0)
    errors = {}
    for item in items:
        state = item.state
        if state == "todo" and item.run_id is not None:
            state = "failed"
        elif state == "needs_eval" and not evaluate:
            state = "done"
        elif state == "needs_eval" and item.error:
            state = "failed"
        if state == "failed":
            errors[item.run_id] = item.error or f"the run is {item.status}"
        counts[state] += 1
    sweep_id = spec.sweep_id()
    return {
        "sweep_id": sweep_id,
        "total": len(items),
        **counts,
        "running": pid_marker_alive(_sweeps_dir(store) / f"{sweep_id}.pid"),
        "run_ids": [item.run_id for item in items],
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m genlab.sweep (--spec FILE | --spec-json JSON) [--jobs N] [--no-evaluate]``:
    the detached driver :func:`launch_sweep` starts."""
    parser = argparse.ArgumentParser(prog="python -m genlab.sweep")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--spec", help="a JSON file holding SweepSpec.to_dict()")
    source.add_argument("--spec-json", help="SweepSpec.to_dict() as JSON text")
    parser.add_argument("--jobs", type=int)
    parser.add_argument("--no-evaluate", action="store_true")
    parser.add_argument("--executor", choices=("local", "ray"), default="local")
    parser.add_argument("--ray-address")
    args = parser.parse_args(argv)
    try:
        text = Path(args.spec).read_text() if args.spec else args.spec_json
        spec = SweepSpec.from_dict(json.loads(text))
        store = RunStore()
        evaluate = not args.no_evaluate
        ids = run_sweep(store, spec, jobs=args.jobs, evaluate=evaluate, on_progress=_log_line,
                        executor=args.executor, ray_address=args.ray_address)
    except (GenlabError, OSError, json.JSONDecodeError) as err:
        print(f"genlab sweep: error: {err}", file=sys.stderr)
        return 2
    failed = failures(store, ids, evaluate=evaluate)
    for f in failed:
        print(f"genlab sweep: {f['run_id']} {f['status']}: {f['error']}", flush=True)
    print(f"genlab sweep: {len(ids) - len(failed)} of {len(ids)} runs done", flush=True)
    return 1 if failed else 0


def _log_line(settled: int, total: int, item: SweepItem) -> None:
    print(f"[{settled}/{total}] {item.run_id} {item.state}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
