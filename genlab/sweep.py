"""Sweeps: a grid of runs (models × ε × seeds) trained and evaluated by the local workers.

A :class:`SweepSpec` names the grid. :func:`plan` looks every cell up in the store by its config
hash, so a sweep is idempotent: what is done stays done, a run that failed is queued again in
its own row (never a second row for the same config), and a run another process is training is
waited on. :func:`run_sweep` is the driver. It keeps at most ``jobs`` workers in flight, and each
worker trains *and* evaluates its run (``python -m genlab.jobs RUN --evaluate``), so killing the
driver loses nothing: the workers finish, and the next sweep picks up where this one stopped.
:func:`launch_sweep` starts the driver as a detached process (the dashboard and the lessons use
it); :func:`sweep_status` is the cheap summary their pages poll.

Nothing here imports the training stack until a run has to start: a sweep whose runs are all
done only reads the store.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
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

from genlab.config import RunConfig, make_run_config
from genlab.errors import ConfigError, GenlabError
from genlab.procs import EVALUATE_ERROR, EVALUATE_PID, pid_marker_alive, write_pid_marker
from genlab.runs import ACTIVE, RunInfo, RunStore

try:  # POSIX file locks keep two drivers from starting the same run twice
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

DEFAULT_LIMIT = 200  # runs in one sweep unless --max-runs says otherwise
RECORD_BLOCKS = ("performance", "interpretability", "privacy", "cost")
STATES = ("done", "needs_eval", "active", "todo")
_NO_DP = ("inf", "+inf", "infinity", "∞", "none")


# ----------------------------------------------------------------------------- parsing
def _fmt(eps: float) -> str:
    return "inf" if math.isinf(eps) and eps > 0 else f"{eps:g}"


def _epsilon(value: float, shown: str) -> float:
    if math.isnan(value) or not value > 0:
        raise ConfigError(f"epsilon must be > 0 (got {shown}); use inf for a run without DP")
    return value


def _items(text: str, what: str, example: str) -> list[str]:
    parts = [part.strip() for part in str(text).split(",")]
    if not any(parts):
        raise ConfigError(f"give at least one {what}, e.g. {example}")
    if not all(parts):
        raise ConfigError(f"empty {what} in {text!r}; separate values with commas, e.g. {example}")
    return parts


def parse_epsilons(text: str) -> tuple[float, ...]:
    """``"inf,10,3,1"`` -> ``(inf, 10.0, 3.0, 1.0)``; ``inf``, ``∞`` or ``none`` mean no DP.

    Raises:
        ConfigError: a value that is not a number, or not above 0.
    """
    out = []
    for part in _items(text, "epsilon", "--epsilons inf,10,3,1"):
        if part.lower() in _NO_DP:
            out.append(math.inf)
            continue
        try:
            value = float(part)
        except ValueError:
            raise ConfigError(
                f"epsilon must be a number or inf (got {part!r}); e.g. --epsilons inf,10,3,1"
            ) from None
        out.append(_epsilon(value, part))
    return tuple(out)


def parse_models(text: str) -> tuple[str, ...]:
    """``"vae, mixture"`` -> ``("vae", "mixture")`` (names are checked by :class:`SweepSpec`)."""
    return tuple(_items(text, "model", "--models vae,mixture"))


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"0,1,2"`` -> ``(0, 1, 2)``."""
    out = []
    for part in _items(text, "seed", "--seeds 0,1,2"):
        try:
            out.append(int(part))
        except ValueError:
            raise ConfigError(
                f"seeds must be whole numbers (got {part!r}); e.g. --seeds 0,1,2"
            ) from None
    return tuple(out)


def _as_epsilon(value: Any) -> float:
    if isinstance(value, str):
        parsed = parse_epsilons(value)
        if len(parsed) != 1:
            raise ConfigError(f"one epsilon per entry (got {value!r})")
        return parsed[0]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"epsilon must be a number or inf (got {value!r})")
    return float(value)


def _duplicates(values: tuple, what: str, shown: Callable[[Any], str] = str) -> None:
    seen, dupes = set(), []
    for v in values:
        if v in seen and v not in dupes:
            dupes.append(v)
        seen.add(v)
    if dupes:
        names = ", ".join(shown(v) for v in dupes)
        raise ConfigError(f"duplicate {what}: {names}; list each one once")


# ----------------------------------------------------------------------------- the grid
@dataclass(frozen=True)
class SweepSpec:
    """A grid of runs on one dataset: every model × every ε × every seed.

    Args:
        dataset: a dataset name or path, as for ``genlab train``.
        models: registered model names.
        epsilons: DP budgets; ``math.inf`` is a run without DP.
        seeds: training seeds (each also fixes the data split, as in ``genlab train``).
        epochs: epochs of every run; ``None`` takes each model's default for the dataset.
        overrides: ``(key, value)`` settings applied to every run (``--set``).
        limit: the most runs the grid may have.

    Raises:
        ConfigError: an empty grid, an unknown model, a bad ε or setting, a value listed
            twice, or more runs than ``limit``.
    """

    dataset: str
    models: tuple[str, ...]
    epsilons: tuple[float, ...]
    seeds: tuple[int, ...]
    epochs: int | None = None
    overrides: tuple[tuple[str, object], ...] = ()
    limit: int = DEFAULT_LIMIT

    def __post_init__(self):
        from genlab.models import model_entry, model_names

        overrides = self.overrides.items() if isinstance(self.overrides, dict) else self.overrides
        for name, value in (
            ("models", tuple(self.models)),
            ("epsilons", tuple(_as_epsilon(e) for e in self.epsilons)),
            ("seeds", tuple(self.seeds)),
            ("overrides", tuple(sorted((str(k), v) for k, v in overrides))),
        ):
            object.__setattr__(self, name, value)
        if not self.dataset:
            raise ConfigError("a sweep needs a dataset, e.g. --dataset digits")
        if not self.models:
            raise ConfigError(
                f"a sweep needs at least one model; known models: {', '.join(model_names())}"
            )
        if not self.epsilons:
            raise ConfigError("a sweep needs at least one epsilon; use inf for runs without DP")
        if not self.seeds:
            raise ConfigError("a sweep needs at least one seed, e.g. --seeds 0")
        for model in self.models:
            model_entry(model)  # an unknown name lists the known ones
        for eps in self.epsilons:
            _epsilon(eps, _fmt(eps))
        for seed in self.seeds:
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise ConfigError(f"seeds must be whole numbers (got {seed!r})")
        _duplicates(self.models, "models")
        _duplicates(self.epsilons, "epsilons", _fmt)
        _duplicates(self.seeds, "seeds")
        if self.epochs is not None and (isinstance(self.epochs, bool) or self.epochs < 1):
            raise ConfigError(f"epochs must be at least 1 (got {self.epochs})")
        if self.limit < 1:
            raise ConfigError(f"the run limit must be at least 1 (got {self.limit})")
        if self.size > self.limit:
            raise ConfigError(
                f"this sweep has {self.size} runs, more than the limit of {self.limit}; "
                "raise --max-runs or shrink the grid"
            )
        for model in self.models:  # a --set key no model has fails now, not mid-sweep
            make_run_config(model, self.dataset, epochs=self.epochs, seed=self.seeds[0],
                            overrides=dict(self.overrides))

    @property
    def size(self) -> int:
        """The number of runs: models × epsilons × seeds."""
        return len(self.models) * len(self.epsilons) * len(self.seeds)

    def configs(self) -> list[RunConfig]:
        """Every run's config, ordered by model, then ε (as given), then seed."""
        return [
            make_run_config(
                model,
                self.dataset,
                epochs=self.epochs,
                seed=seed,
                overrides=dict(self.overrides),
                privacy=None if math.isinf(eps) else {"epsilon": eps},
            )
            for model in self.models
            for eps in self.epsilons
            for seed in self.seeds
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; ε = ∞ is the string ``"inf"``."""
        return {
            "dataset": self.dataset,
            "models": list(self.models),
            "epsilons": [_fmt(e) if math.isinf(e) else e for e in self.epsilons],
            "seeds": list(self.seeds),
            "epochs": self.epochs,
            "overrides": dict(self.overrides),
            "limit": self.limit,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown or not {"dataset", "models", "epsilons", "seeds"} <= set(d):
            raise ConfigError(f"not a sweep spec (keys: {', '.join(sorted(d))})")
        eps = d["epsilons"]
        eps = parse_epsilons(",".join(map(str, eps))) if eps else ()
        return cls(**{**d, "epsilons": eps, "overrides": tuple((d.get("overrides") or {}).items())})

    def sweep_id(self) -> str:
        """A short stable name of the grid, from its runs' config hashes: ``--set k=8`` and
        ``{"k": 8}`` give the same sweep, and the limit is not part of it."""
        text = ",".join(cfg.config_hash() for cfg in self.configs())
        return hashlib.sha256(text.encode()).hexdigest()[:12]


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
) -> list[str]:
    """Train (and evaluate) every run of the sweep that is not done yet; returns the run ids in
    plan order.

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
def launch_sweep(store: RunStore, spec: SweepSpec, *, evaluate: bool = True) -> int:
    """Start the sweep's driver as a detached process and return its pid.

    The spec goes to ``<home>/sweeps/<id>.json`` and the driver's output to ``<id>.log``. If a
    driver of the same grid is already running, its pid comes back and none is started.
    """
    folder, sweep_id = _sweeps_dir(store), spec.sweep_id()
    marker = folder / f"{sweep_id}.pid"
    if pid_marker_alive(marker):
        return int(marker.read_text().split()[0])
    spec_file = folder / f"{sweep_id}.json"
    spec_file.write_text(json.dumps(spec.to_dict(), indent=2))
    args = [sys.executable, "-m", "genlab.sweep", "--spec", str(spec_file)]
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
    marker = _sweeps_dir(store) / f"{spec.sweep_id()}.pid"
    return {
        "sweep_id": spec.sweep_id(),
        "total": len(items),
        **counts,
        "running": pid_marker_alive(marker),
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
    args = parser.parse_args(argv)
    try:
        text = Path(args.spec).read_text() if args.spec else args.spec_json
        spec = SweepSpec.from_dict(json.loads(text))
        store = RunStore()
        evaluate = not args.no_evaluate
        ids = run_sweep(store, spec, jobs=args.jobs, evaluate=evaluate, on_progress=_log_line)
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
