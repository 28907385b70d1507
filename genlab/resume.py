"""``genlab runs resume RUN``: continue a failed, killed or cancelled run from its last
checkpoint.

Every run a local worker or ``genlab train`` trains leaves a checkpoint at each epoch end
(:mod:`genlab.train_state`). :func:`resume_run` checks that the run may resume, puts the store's
history back to the checkpoint's epochs (an epoch logged after the last checkpoint is trained
again, so it must not stay twice), and trains the remaining epochs in this process, recording
the outcome like any run. A run trained on Ray has no checkpoint on the driver: its sweep, run
again, trains it anew.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence

from genlab.config import RunConfig
from genlab.errors import StoreError
from genlab.procs import process_stat
from genlab.runs import ACTIVE, RunStore
from genlab.train import Callback, TrainResult
from genlab.train_state import CHECKPOINT_FILE, TrainState, load_checkpoint

RESUMABLE = ("failed", "cancelled")


def resumable_state(store: RunStore, run_id: str) -> tuple[str, TrainState]:
    """The full run id and its checkpoint, if the run may resume.

    Raises:
        RunNotFound: no run has that id.
        StoreError: the run finished, is still active, or has no checkpoint.
        DataError: its checkpoint is damaged.
    """
    info = store.get(run_id)
    if info.status in ACTIVE:  # a killed worker's run counts as failed once recovered
        store.recover()
        info = store.get(info.id)
    if info.status == "finished":
        raise StoreError(f"run {info.id} has finished; there is nothing to resume")
    if info.status not in RESUMABLE:
        raise StoreError(f"run {info.id} is {info.status} (worker pid {info.pid}); cancel it, or "
                         "wait for it to stop, before resuming it")
    state = load_checkpoint(store.artifacts_dir(info.id) / CHECKPOINT_FILE)
    if state is None:
        raise StoreError(f"run {info.id} has no checkpoint to resume from (it stopped before its "
                         "first epoch ended, or it ran on Ray); train it again")
    if state.meta.get("config_hash") != info.config_hash:
        raise StoreError(f"the checkpoint of run {info.id} belongs to another config; "
                         "train the run again")
    return info.id, state


def _reopen(store: RunStore, run_id: str, state: TrainState) -> None:
    """Queue the run again in place, its history cut back to the checkpoint's epochs (rows of
    those epochs the store missed are filled in from the checkpoint)."""
    stat = process_stat(os.getpid())  # this process trains it: recover() must see it alive
    with store._connect(write=True) as conn:
        row = store._row(conn, run_id)
        if row["status"] not in RESUMABLE:  # changed since resumable_state looked
            raise StoreError(f"run {run_id} is {row['status']}; it cannot resume now")
        conn.execute("DELETE FROM history WHERE run_id = ? AND epoch > ?", (run_id, state.epoch))
        have = {r[0] for r in conn.execute("SELECT epoch FROM history WHERE run_id = ?",
                                           (run_id,))}
        for h in state.history:
            if h["epoch"] not in have:
                metrics = {k: float(v) for k, v in h.items() if k not in ("epoch", "step")}
                conn.execute("INSERT INTO history (run_id, epoch, step, time, metrics) "
                             "VALUES (?, ?, ?, ?, ?)",
                             (run_id, int(h["epoch"]), int(h["step"]), time.time(),
                              json.dumps(metrics)))
        store._set(conn, run_id, status="queued", error=None, finished=None, pid=os.getpid(),
                   pid_start=stat[1] if stat else None, cancel_requested=0)


def resume_run(store: RunStore, run_id: str, *,
               callbacks: Sequence[Callback] = ()) -> tuple[str, TrainResult]:
    """Train a failed, killed or cancelled run on from its last checkpoint, in this process.

    Returns:
        ``(run_id, result)``: the full id, and the :class:`TrainResult` of the whole run.

    Raises:
        RunNotFound: no run has that id.
        StoreError: the run cannot resume (see :func:`resumable_state`).
    """
    from genlab.jobs import execute_run

    full_id, state = resumable_state(store, run_id)
    RunConfig.from_dict(store.get(full_id).config)  # a config this genlab can still read
    _reopen(store, full_id, state)
    return full_id, execute_run(store, full_id, callbacks=callbacks, resume=state)
