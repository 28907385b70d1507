"""Running a stored run: in the foreground (``genlab train``) or in a background worker process.

Training never runs inside a Streamlit script run. The dashboard calls :func:`submit`, which
records a queued run and starts ``python -m genlab.worker RUN`` (which waits for its device turn
without torch, then runs :func:`worker_main`) as its own process session, so the
job survives a closed tab or a restarted server. Workers write their progress to the store; pages
poll it. One device runs one job at a time by default (``GENLAB_JOBS_PER_DEVICE`` raises that):
a worker waits for its turn in the device queue, round robin between owners
(:mod:`genlab.fairqueue`), and the run stays ``queued`` meanwhile.

A worker started with ``evaluate=True`` (``--evaluate``) also fills the run's whole three-axis
record after training, in the same device slot, so a sweep whose driver is killed loses nothing;
``--evaluate-only`` evaluates a run that finished without its record. While either evaluates, an
``evaluate.pid`` marker sits in the run's folder; a failed evaluation leaves ``evaluate.error``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from genlab import fairqueue, launcher
from genlab.checkpoint import WEIGHTS_FILE, save_weights
from genlab.config import RunConfig
from genlab.errors import GenlabError, TrainingCancelled
from genlab.fairqueue import jobs_per_device
from genlab.fastpath import fit_cpu_threads
from genlab.owners import Actor
from genlab.procs import (
    EVALUATE_ERROR,
    EVALUATE_PID,
    pid_marker_alive,
    write_pid_marker,
)
from genlab.runs import RunStore
from genlab.train import Callback, Trainer, TrainResult, check_run, resolve_device, train_run
from genlab.train_state import CHECKPOINT_FILE, CheckpointCallback, TrainState
from genlab.viz import image_grid, save_png

SAMPLE_GRID = "samples.png"


class StoreCallback(Callback):
    """Writes epoch metrics and progress to the store, and stops the run when it is cancelled."""

    def __init__(self, store: RunStore, run_id: str, *, check_every: float = 0.5):
        self.store, self.run_id, self.check_every = store, run_id, check_every
        self._last = 0.0

    def _check_cancel(self) -> None:
        if self.store.cancel_requested(self.run_id):
            raise TrainingCancelled(f"run {self.run_id} was cancelled")

    def on_step_end(self, trainer: Trainer, step: int, metrics) -> None:
        now = time.monotonic()
        if now - self._last >= self.check_every:
            self._last = now
            self._check_cancel()
            self.store.set_progress(self.run_id, step / max(trainer.total_steps, 1))

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        self.store.log(
            self.run_id,
            epoch=epoch,
            step=trainer.step,
            metrics=metrics,
            progress=trainer.step / max(trainer.total_steps, 1),
        )
        self._check_cancel()


def write_artifacts(store: RunStore, run_id: str, cfg: RunConfig, model) -> Path:
    """Config, weights and a sample grid in the run's folder."""
    folder = store.artifacts_dir(run_id)
    (folder / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
    save_weights(model, folder / WEIGHTS_FILE, config_json=cfg.to_json())
    gen = torch.Generator().manual_seed(cfg.train.seed)
    save_png(image_grid(model.sample(64, generator=gen), nrow=8, scale=2), folder / SAMPLE_GRID)
    return folder


def execute_run(store: RunStore, run_id: str, *, callbacks: Sequence[Callback] = (),
                resume: TrainState | None = None) -> TrainResult:
    """Train a stored run to the end and record the outcome (finished, cancelled or failed).

    A resume checkpoint (:mod:`genlab.train_state`) is written at each epoch end, until the run
    finishes; ``resume`` continues from one (``genlab runs resume``)."""
    info = store.get(run_id)
    cfg = RunConfig.from_dict(info.config)
    store.claim(run_id, pid=os.getpid())
    checkpoint = store.artifacts_dir(run_id) / CHECKPOINT_FILE
    try:
        saver = CheckpointCallback(checkpoint, config_hash=cfg.config_hash())
        model, result = train_run(
            cfg, callbacks=[saver, StoreCallback(store, run_id), *callbacks], resume=resume
        )
        write_artifacts(store, run_id, cfg, model)
        store.finish(run_id, summary={**result.summary(), "params": model.num_params()})
        checkpoint.unlink(missing_ok=True)  # only an unfinished run needs it
        if result.privacy:  # the formal guarantee belongs in the record's privacy block
            store.update_record(run_id, "privacy", result.privacy)
        return result
    except (TrainingCancelled, KeyboardInterrupt):
        store.mark_cancelled(run_id)
        raise
    except BaseException as err:
        store.fail(
            run_id, f"{type(err).__name__}: {err}" if not isinstance(err, GenlabError) else str(err)
        )
        raise


# ------------------------------------------------------------------------------- background
@contextlib.contextmanager
def device_slot(
    store: RunStore, run_id: str, device: str, *, poll: float = 0.5, ticket: int | None = None
) -> Iterator[None]:
    """Wait for this job's turn on ``device`` (round robin between owners, see
    :mod:`genlab.fairqueue`); give up if the run is cancelled meanwhile."""
    with fairqueue.turn(store, run_id, device, slots=jobs_per_device(), ticket=ticket, poll=poll,
                        cancelled=lambda: store.cancel_requested(run_id)):
        yield


def submit(
    store: RunStore, cfg: RunConfig, *, owner: str | None = None, evaluate: bool = False
) -> str:
    """Queue a run and start its background worker process; returns the run id at once.

    Args:
        owner: Who submitted it (a user or session name).
        evaluate: After training, the worker also fills the three-axis record
            (:func:`genlab.evaluate.evaluate_run` with the full audit).

    Raises:
        GenlabError: the data cannot be loaded or a setting does not fit it; no run is created.
    """
    check_run(cfg)
    run_id = store.create_run(
        model=cfg.model,
        dataset=cfg.data.name,
        config=cfg.to_dict(),
        owner=owner,
        config_hash=cfg.config_hash(),
    )
    start_worker(store, run_id, evaluate=evaluate)
    return run_id


def start_worker(store: RunStore, run_id: str, *, evaluate: bool = False) -> int:
    """Start the background worker of a queued run (new, or reset by ``RunStore.requeue``);
    returns its pid."""
    ticket = _ticket(store, run_id)
    args = [run_id, *ticket.args] + (["--evaluate"] if evaluate else [])
    pid = _spawn(store, run_id, args, "worker.log")
    store.set_pid(run_id, pid)
    if evaluate:
        _mark_evaluating(store, run_id, pid)
    # Last: a fresh worker may hand its turn to one the warm launcher forks, which takes over only
    # an attached ticket and moves the run's pid and evaluation marker to itself where they name
    # the fresh one (genlab.worker). Written after it, they could name the fresh worker, which
    # exits, while the forked one runs the job.
    ticket.attach(pid)
    return pid


def submit_evaluation(store: RunStore, run_id: str) -> int:
    """Evaluate a finished run (the whole record, full audit) in a background worker; returns
    its pid. The sweep's plan counts the run active while its ``evaluate.pid`` marker lives."""
    run_id = store.get(run_id).id
    ticket = _ticket(store, run_id)
    pid = _spawn(store, run_id, ["--evaluate-only", run_id, *ticket.args], "evaluate.log")
    _mark_evaluating(store, run_id, pid)
    ticket.attach(pid)  # last, as in start_worker
    return pid


class _Place:
    """A job's place in the device queue, taken when it is submitted (None: the worker takes
    one itself, or records why the run's device cannot be used)."""

    def __init__(self, store: RunStore, ticket: int | None):
        self.store, self.ticket = store, ticket
        self.args = [] if ticket is None else ["--ticket", str(ticket)]

    def attach(self, pid: int) -> None:
        if self.ticket is not None:
            fairqueue.attach(self.store, self.ticket, pid)


def _ticket(store: RunStore, run_id: str) -> _Place:
    try:
        return _Place(store, fairqueue.enqueue(store, run_id, _run_device(store, run_id)))
    except GenlabError:  # e.g. --device cuda without a GPU: the worker fails the run, as before
        return _Place(store, None)


def _mark_evaluating(store: RunStore, run_id: str, pid: int) -> None:
    folder = store.artifacts_dir(run_id)
    (folder / EVALUATE_ERROR).unlink(missing_ok=True)
    write_pid_marker(folder / EVALUATE_PID, pid)


AUDIT_PID = "audit.pid"  # in the run's folder while a background audit runs: "pid starttime"
AUDIT_ERROR = "audit.error"  # the one-line reason the last background audit failed


def _spawn(store: RunStore, run_id: str, args: list[str], log_name: str) -> int:
    """Start ``python -m genlab.worker ARGS`` in its own session, writing to the run's
    ``log_name``; forked from the warm launcher when one is ready (:mod:`genlab.launcher`).
    Returns the worker's pid."""
    log_path = store.artifacts_dir(run_id) / log_name
    env = {**os.environ, "GENLAB_HOME": str(store.home)}
    pid = launcher.spawn(args, env=env, log=log_path)
    if pid is not None:
        return pid
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "genlab.worker", *args],  # waits light, then runs worker_main
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    # Reap the child when it ends, so a finished worker never lingers as a zombie.
    threading.Thread(target=proc.wait, daemon=True).start()
    return proc.pid


def submit_audit(store: RunStore, run_id: str, *, reference: bool = True) -> None:
    """Start the membership audit of a finished run in a background process.

    The full audit trains a reference model, and training never runs inside a page; the page
    polls :func:`audit_state` instead.
    """
    folder = store.artifacts_dir(store.get(run_id).id)
    (folder / AUDIT_ERROR).unlink(missing_ok=True)
    args = ["--audit", run_id] + ([] if reference else ["--no-reference"])
    pid = _spawn(store, run_id, args, "audit.log")
    write_pid_marker(folder / AUDIT_PID, pid)


def audit_state(store: RunStore, run_id: str) -> tuple[bool, str | None]:
    """``(running, error)`` of the run's background audit; a dead worker's marker is cleared."""
    folder = store.artifacts_dir(run_id)
    marker, error_file = folder / AUDIT_PID, folder / AUDIT_ERROR
    error = error_file.read_text().strip() if error_file.exists() else None
    if not marker.exists():
        return False, error
    if pid_marker_alive(marker):
        return True, None
    marker.unlink(missing_ok=True)
    return False, error or "the audit's worker stopped before it finished"


def cancel(store: RunStore, run_id: str, *, actor: Actor | None = None) -> str:
    """Ask a queued or running job to stop; returns the run's status at the time of asking.
    OwnershipError if ``actor`` is neither the run's owner nor the teacher."""
    return store.request_cancel(run_id, actor=actor)


def wait(store: RunStore, run_id: str, *, timeout: float = 600, poll: float = 0.25) -> str:
    """Block until the run leaves queued/running; returns its final status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = store.get(run_id).status
        if status not in ("queued", "running"):
            return status
        time.sleep(poll)
    raise TimeoutError(f"run {run_id} still {status} after {timeout:.0f} s")


def _one_line(err: BaseException) -> str:
    text = str(err) if isinstance(err, GenlabError) else f"{type(err).__name__}: {err}"
    return " ".join(text.split())


def audit_main(store: RunStore, run_id: str, *, reference: bool) -> int:
    """Body of a background audit: run it, record a failure in one line, clear the marker."""
    from genlab.evaluate import audit_run

    folder = store.artifacts_dir(run_id)
    try:
        audit_run(store, run_id, reference=reference)
        return 0
    except Exception as err:
        (folder / AUDIT_ERROR).write_text(_one_line(err))
        print(f"genlab audit worker: {err}", file=sys.stderr)
        return 1
    finally:
        (folder / AUDIT_PID).unlink(missing_ok=True)


def evaluate_main(store: RunStore, run_id: str) -> int:
    """Fill a finished run's whole record (full audit); a failure leaves ``evaluate.error``
    and the run finished, so a later sweep can evaluate it again."""
    from genlab.evaluate import evaluate_run

    folder = store.artifacts_dir(run_id)
    try:
        evaluate_run(store, run_id, audit=True, reference=True)
        return 0
    except Exception as err:
        (folder / EVALUATE_ERROR).write_text(_one_line(err))
        print(f"genlab evaluate worker: {err}", file=sys.stderr)
        return 1


def _run_device(store: RunStore, run_id: str) -> str:
    return resolve_device(RunConfig.from_dict(store.get(run_id).config).train.device).type


def _run_slot(store: RunStore, run_id: str, ticket: int | None):
    return device_slot(store, run_id, _run_device(store, run_id), ticket=ticket)


def worker_main(argv: list[str] | None = None) -> int:
    """Entry point of a background worker: ``python -m genlab.jobs RUN_ID [--evaluate]`` trains
    a queued run (and then evaluates it); ``python -m genlab.jobs --evaluate-only RUN_ID``
    evaluates a finished one; ``python -m genlab.jobs --audit RUN_ID [--no-reference]`` audits
    one."""
    parser = argparse.ArgumentParser(prog="python -m genlab.jobs")
    parser.add_argument("run_id")
    parser.add_argument("--audit", action="store_true")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--evaluate", action="store_true")
    parser.add_argument("--evaluate-only", action="store_true")
    parser.add_argument("--ticket", type=int, default=None)  # its place in the device queue
    args = parser.parse_args(argv)
    fit_cpu_threads()  # the cores other processes leave free (see genlab.fastpath)
    store = RunStore(recover=False)
    if args.audit:
        return audit_main(store, args.run_id, reference=not args.no_reference)
    marker = store.artifacts_dir(args.run_id) / EVALUATE_PID
    if args.evaluate_only:
        try:
            with _run_slot(store, args.run_id, args.ticket):
                return evaluate_main(store, args.run_id)
        except Exception as err:  # before evaluating: an unknown run or an unusable device
            (marker.parent / EVALUATE_ERROR).write_text(_one_line(err))
            return 1
        finally:
            marker.unlink(missing_ok=True)
    try:
        with _run_slot(store, args.run_id, args.ticket):
            execute_run(store, args.run_id)
            if args.evaluate:  # in the same slot: evaluation trains a reference model
                return evaluate_main(store, args.run_id)
    except TrainingCancelled:
        if store.get(args.run_id).status != "cancelled":
            store.mark_cancelled(args.run_id)
        return 0
    except Exception as err:  # recorded by execute_run; record it here if it failed earlier
        if store.get(args.run_id).status in ("queued", "running"):
            store.fail(args.run_id, str(err))
        print(f"genlab worker: {err}", file=sys.stderr)
        return 1
    finally:
        if args.evaluate:
            marker.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
