"""Sweeps on Ray (``genlab sweep --executor ray``): each run is one Ray task; the driver alone
writes the store.

The driver plans the grid exactly as the local executor does (:func:`genlab.sweep.plan`: done
runs are reused, failed or cancelled ones retried in their own row, runs another process trains
are waited on), so a sweep is idempotent by config hash whichever executor ran it. Each run that
needs work becomes one task (:func:`genlab.ray_worker.run_task`, one CPU, and one GPU when the
run's device is cuda, or ``auto`` on a cluster that has GPUs). The task trains and evaluates in
the worker and returns everything: summary, history, record and artifacts as bytes. The driver
writes them into the store and the run's folder, so the store never leaves the driver's machine.

While a task is out, its run is ``queued`` with the driver's pid as its worker: if the driver
dies, :meth:`RunStore.recover` marks the run failed, and the next sweep retries it. A task whose
worker dies (killed, out of memory, a node lost) marks its run failed, unless ``retries`` lets
Ray run it again; the sweep goes on. A cancel request on a run (the dashboard's Cancel,
:func:`genlab.jobs.cancel`) becomes ``ray.cancel``; Ctrl-C on the driver cancels every task out.

Ray is optional (``pip install 'genlab[ray]'``) and imported only here, only when asked for.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import time
from collections.abc import Callable
from typing import Any

from genlab.errors import ConfigError, RunNotFound, StoreError
from genlab.paths import replacing
from genlab.procs import EVALUATE_ERROR, EVALUATE_PID, write_pid_marker
from genlab.runs import RunStore
from genlab.sweep import (
    SweepItem,
    SweepSpec,
    _check_runs,
    _classify,
    _driver_marker,
    _submit_lock,
    plan,
)

RAY_MISSING = "--executor ray needs Ray, which is not installed; pip install 'genlab[ray]'"
CPUS_PER_RUN = 1  # tiny models gain nothing from a second thread (see genlab.threads)
_ARTIFACT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def import_ray():
    """The ``ray`` module, or a ConfigError with one line saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
    return ray


def local_cpus() -> int:
    """CPUs this process may use: a local Ray instance gets that many."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover (macOS)
        return os.cpu_count() or 1


def check_reachable(address: str, *, timeout: float = 10.0) -> None:
    """Fail fast on a cluster address nothing listens at: Ray itself keeps retrying for
    minutes. ``auto`` (the cluster ``ray start`` left on this machine) is Ray's to find.

    Raises:
        ConfigError: a malformed address, or no answer at HOST:PORT within ``timeout``.
    """
    bare = address.removeprefix("ray://")
    if bare in ("auto", "local"):
        return
    host, _, port = bare.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"the Ray address must be auto, HOST:PORT or ray://HOST:PORT "
                          f"(got {address!r})")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        raise ConfigError(f"cannot reach the Ray cluster at {address} ({err.strerror or err}); "
                          "is `ray start --head` running there?") from None


def connect(address: str | None = None) -> tuple[Any, bool]:
    """Connect to Ray: the cluster at ``address``, the one this process already joined, or a
    new local instance (``num_cpus`` from the machine, no dashboard).

    Returns:
        ``(ray, started)``: the module, and whether this call started the connection (and so
        should shut it down when the sweep ends).

    Raises:
        ConfigError: Ray is not installed, or the cluster cannot be reached.
    """
    ray = import_ray()
    if ray.is_initialized():
        return ray, False
    if address:
        check_reachable(address)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the machine
    quiet = dict(log_to_driver=False, logging_level=logging.WARNING)  # stdout stays JSON
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            ray.init(num_cpus=local_cpus(), include_dashboard=False, **quiet)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as err:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        text = " ".join(str(err).split())
        raise ConfigError(f"could not start or reach {where}: {text}") from None
    return ray, True


def _num_gpus(ray, device: str) -> int:
    if device == "cuda":
        return 1
    if device == "auto":  # the driver may have no GPU while the workers do
        return 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    return 0


def _in_flight_cap(ray, jobs: int | None) -> int:
    """How many tasks to keep out at once: ``jobs``, else twice the cluster's CPU slots (so a
    worker that frees up finds its next run waiting, without a queued row per grid cell)."""
    if jobs is not None:
        return jobs
    return 2 * max(1, int(ray.cluster_resources().get("CPU", 1) // CPUS_PER_RUN))


def _ray_error(err: BaseException) -> str:
    """One line for a task that did not return."""
    ray = import_ray()
    text = " ".join(str(err).split())[:300]
    if isinstance(err, ray.exceptions.WorkerCrashedError | ray.exceptions.NodeDiedError):
        return f"its Ray worker died before the run finished ({type(err).__name__})"
    if isinstance(err, ray.exceptions.OutOfMemoryError):
        return "Ray stopped its worker: the node ran out of memory"
    return f"the Ray task failed: {type(err).__name__}: {text}"


# ----------------------------------------------------------------------------- landing
def land(store: RunStore, run_id: str, result: dict[str, Any]) -> None:
    """Write a task's result into the store and the run's folder.

    The artifacts and the record go in before the run is marked finished, so a driver killed
    halfway leaves a run that recovers as failed, never one that looks finished but lacks
    files.
    """
    if result.get("error"):
        store.fail(run_id, result["error"])
        return
    folder = store.artifacts_dir(run_id)
    for name, data in result["artifacts"].items():
        if not _ARTIFACT_NAME.fullmatch(name):
            raise StoreError(f"a Ray task returned an artifact with a bad name: {name!r}")
        with replacing(folder / name) as partial:
            partial.write_bytes(data)
    info = store.get(run_id)
    if info.status != "finished":  # a training task; an evaluation task's run is finished
        store.claim(run_id, pid=os.getpid(), started=result.get("started"))
        total = max(int(result["summary"].get("steps", 0)), 1)
        for row in result["history"]:
            metrics = {k: v for k, v in row.items() if k not in ("epoch", "step", "time")}
            store.log(run_id, epoch=row["epoch"], step=row["step"], metrics=metrics,
                      progress=row["step"] / total)
    for block, values in result["record"].items():
        store.update_record(run_id, block, values)
    if result.get("evaluate_error"):
        (folder / EVALUATE_ERROR).write_text(result["evaluate_error"])
    if info.status != "finished":
        store.finish(run_id, summary=result["summary"])


# ----------------------------------------------------------------------------- the driver
class _Task:
    """One run out on Ray: its plan index, run id and object ref."""

    def __init__(self, index: int, run_id: str, ref: Any, *, evaluating_only: bool):
        self.index, self.run_id, self.ref = index, run_id, ref
        self.evaluating_only = evaluating_only
        self.cancel_sent: float | None = None  # when ray.cancel was first sent (monotonic)
        self.forced = False


def _submit(ray, store: RunStore, item: SweepItem, index: int, *, evaluate: bool,
            retries: int) -> _Task | SweepItem:
    """Create (or requeue) the item's run and send its task; a fresh look at the store under
    the submit lock first, so two drivers never start the same run."""
    from genlab import ray_worker

    with _submit_lock(store):
        fresh = _classify(store, item.config, item.config_hash)
        trained = None
        if fresh.state == "todo" and fresh.run_id is None:
            cfg = item.config
            run_id = store.create_run(model=cfg.model, dataset=cfg.data.name,
                                      config=cfg.to_dict(), owner="sweep",
                                      config_hash=item.config_hash)
        elif fresh.state == "todo":  # only failed or cancelled runs: reuse the newest one's row
            run_id = fresh.run_id
            store.requeue(run_id)
        elif fresh.state == "needs_eval" and evaluate:
            run_id = fresh.run_id
            trained = ray_worker.trained_run(store, run_id)
            folder = store.artifacts_dir(run_id)
            (folder / EVALUATE_ERROR).unlink(missing_ok=True)
            write_pid_marker(folder / EVALUATE_PID, os.getpid())  # "active" while it is out
        else:
            return fresh
        if trained is None:
            store.set_pid(run_id, os.getpid())  # recover() fails the run if this driver dies
    task = ray.remote(ray_worker.run_task).options(
        num_cpus=CPUS_PER_RUN,
        num_gpus=_num_gpus(ray, item.config.train.device),
        max_retries=retries,
        retry_exceptions=False,
        name=f"genlab:{run_id}",
    )
    ref = task.remote(item.config.to_dict(), evaluate=evaluate, trained=trained,
                      threads=CPUS_PER_RUN)
    return _Task(index, run_id, ref, evaluating_only=trained is not None)


def _collect(ray, store: RunStore, task: _Task) -> None:
    """Land a task that returned, or record why it did not."""
    try:
        result = ray.get(task.ref)
    except ray.exceptions.RayError as err:  # a forced cancel reports a crashed worker
        cancelled = isinstance(err, ray.exceptions.TaskCancelledError) or task.forced
        result = None if cancelled else {"error": _ray_error(err)}
        if cancelled and not task.evaluating_only:
            store.mark_cancelled(task.run_id)
    try:
        store.get(task.run_id)
    except RunNotFound:  # deleted while its task was out: nothing to land
        return
    try:
        if result is not None and task.evaluating_only and result.get("error"):
            result = {"record": {}, "artifacts": {}, "evaluate_error": result["error"]}
        if result is not None:
            land(store, task.run_id, result)
    finally:
        if task.evaluating_only:
            (store.artifacts_dir(task.run_id) / EVALUATE_PID).unlink(missing_ok=True)


def run_ray_sweep(
    store: RunStore,
    spec: SweepSpec,
    *,
    on_progress: Callable[[int, int, SweepItem], None] | None = None,
    evaluate: bool = True,
    jobs: int | None = None,
    address: str | None = None,
    retries: int = 0,
    poll: float = 0.5,
    executor: str = "ray",
) -> list[str]:
    """:func:`genlab.sweep.run_sweep` with each run as a Ray task; returns the run ids in plan
    order.

    Args:
        on_progress: called as ``(settled, total, item)`` each time a run is settled.
        evaluate: fill every run's whole record in its task.
        jobs: the most tasks out at once (default: twice the cluster's CPUs).
        address: the Ray cluster to use (``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``);
            without one a local Ray instance is started, or the one this process joined reused.
        retries: how often Ray reruns a task whose worker died before the run is failed.
        poll: seconds between looks at the store and the tasks.
        executor: must be ``"ray"`` (:func:`genlab.sweep.run_sweep` passes its own on).

    Raises:
        ConfigError: Ray is missing or unreachable, ``jobs`` below 1, or a setting the data
            does not fit (no run is created).
        DataError: the dataset cannot be loaded (no run is created).
    """
    if executor != "ray":
        raise ConfigError(f"unknown executor {executor!r}; use local or ray")
    if jobs is not None and jobs < 1:
        raise ConfigError(f"--jobs must be at least 1 (got {jobs})")
    if retries < 0:
        raise ConfigError(f"--ray-retries must be 0 or more (got {retries})")
    import_ray()  # a missing Ray is one line now, whether or not the grid needs a task
    items = plan(store, spec)
    total, settled = len(items), 0
    queue = [i for i, item in enumerate(items)
             if item.state == "todo" or (item.state == "needs_eval" and evaluate)]
    waiting = {i for i, item in enumerate(items) if item.state == "active"}

    def settle(i: int, item: SweepItem) -> None:
        nonlocal settled
        items[i], settled = item, settled + 1
        if on_progress is not None:
            on_progress(settled, total, item)

    for i, item in enumerate(items):
        if i not in waiting and i not in queue:
            settle(i, item)
    _check_runs([items[i] for i in queue if items[i].state == "todo"])
    ray, started = connect(address) if queue else (None, False)
    out: dict[Any, _Task] = {}
    try:
        with _driver_marker(store, spec):
            queue.reverse()  # pop() from the end keeps plan order
            while queue or waiting or out:
                for i in sorted(waiting):  # runs another process trains
                    item = _classify(store, items[i].config, items[i].config_hash)
                    if item.state == "active":
                        continue
                    waiting.discard(i)
                    if item.state == "needs_eval" and evaluate:
                        items[i] = item
                        queue.append(i)
                    else:
                        settle(i, item)
                cap = _in_flight_cap(ray, jobs) if queue else 0
                while queue and len(out) < cap:
                    i = queue.pop()
                    sent = _submit(ray, store, items[i], i, evaluate=evaluate, retries=retries)
                    if isinstance(sent, _Task):
                        out[sent.ref] = sent
                    elif sent.state == "active":
                        items[i] = sent
                        waiting.add(i)
                    else:
                        settle(i, sent)
                if not out:
                    if waiting:
                        time.sleep(poll)
                    continue
                ready, _ = ray.wait(list(out), num_returns=len(out), timeout=poll)
                for ref in ready:
                    task = out.pop(ref)
                    _collect(ray, store, task)
                    item = items[task.index]
                    settle(task.index, _classify(store, item.config, item.config_hash))
                for task in out.values():  # a cancel request from the dashboard or the API
                    _pass_on_cancel(ray, store, task)
    except KeyboardInterrupt:
        _cancel_all(ray, store, out)
        raise
    finally:
        if started:
            with contextlib.suppress(Exception):
                ray.shutdown()
    return [item.run_id for item in items]


CANCEL_GRACE_S = 10.0  # after this, a task that ignored ray.cancel is cancelled with force


def _pass_on_cancel(ray, store: RunStore, task: _Task) -> None:
    """Turn a run's cancel request into ``ray.cancel``. A task that goes on for
    ``CANCEL_GRACE_S`` after it (the KeyboardInterrupt can miss a task that is only just
    starting; seen once in CI, where a cancelled 500-epoch run finished) gets
    ``ray.cancel(force=True)``, which ends its worker process."""
    if task.cancel_sent is None:
        if store.cancel_requested(task.run_id):
            ray.cancel(task.ref)
            task.cancel_sent = time.monotonic()
    elif not task.forced and time.monotonic() - task.cancel_sent > CANCEL_GRACE_S:
        ray.cancel(task.ref, force=True)
        task.forced = True


def _cancel_all(ray, store: RunStore, out: dict[Any, _Task]) -> None:
    """Ctrl-C: cancel every task out and mark its run cancelled."""
    for task in out.values():
        with contextlib.suppress(Exception):
            ray.cancel(task.ref, force=True)
        with contextlib.suppress(Exception):
            if task.evaluating_only:
                (store.artifacts_dir(task.run_id) / EVALUATE_PID).unlink(missing_ok=True)
            else:
                store.mark_cancelled(task.run_id)
