"""The worker's side of a Ray sweep: one run trained and evaluated in a scratch store, returned
whole to the driver (:mod:`genlab.ray_executor`).

:func:`run_task` runs the very code a local worker runs (:func:`genlab.jobs.execute_run`, then
:func:`genlab.jobs.evaluate_main`), but against a throw-away store in a temporary folder, so
nothing on the worker's node needs the driver's store or files. What the driver keeps comes
back in the return value: the summary, the per-epoch history, the record, any evaluation error
and every artifact (config, weights, sample grid, audit images) as bytes.

Caches that are worth keeping between tasks (the reference classifiers, the audit's reference
models, parsed datasets) live in one folder per node: ``$GENLAB_RAY_HOME``, by default
``<tmp>/genlab-ray-<uid>``. They are deterministic, so a node that trains its own gives the
numbers the driver's machine would.

Nothing here imports Ray: the task is a plain function that Ray ships by reference, so every
node needs genlab installed (with the same torch).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from genlab.checkpoint import WEIGHTS_FILE
from genlab.config import RunConfig
from genlab.errors import GenlabError
from genlab.procs import EVALUATE_ERROR
from genlab.runs import RunStore

# worker bookkeeping and files half written by a killed process, not the run's artifacts
KEPT_OUT = (".log", ".pid", ".error", ".tmp", ".partial")


def worker_home() -> Path:
    """This node's genlab home for caches shared by every task it runs."""
    default = Path(tempfile.gettempdir()) / f"genlab-ray-{os.getuid()}"
    home = Path(os.environ.get("GENLAB_RAY_HOME") or default)
    home.mkdir(parents=True, exist_ok=True)
    return home


def trained_run(store: RunStore, run_id: str) -> dict[str, Any]:
    """What an evaluation-only task needs of a finished run (driver side): its weights, the
    other artifacts, summary and formal privacy block."""
    info = store.get(run_id)
    folder = store.artifacts_dir(info.id)
    files = {p.name: p.read_bytes() for p in folder.iterdir()
             if p.is_file() and not p.name.endswith(KEPT_OUT)}
    if WEIGHTS_FILE not in files:
        raise GenlabError(f"run {info.id} finished without {WEIGHTS_FILE}; train it again")
    return {"artifacts": files, "summary": info.summary,
            "privacy": info.record.get("privacy"), "started": info.started}


def _one_line(err: BaseException) -> str:
    text = str(err) if isinstance(err, GenlabError) else f"{type(err).__name__}: {err}"
    return " ".join(text.split())


def run_task(config: dict, *, evaluate: bool, trained: dict | None = None,
             threads: int = 1) -> dict[str, Any]:
    """Train (unless ``trained`` is given) and evaluate one run; the body of a Ray task.

    Args:
        config: the run's :meth:`RunConfig.to_dict`.
        evaluate: fill the whole record (performance, interpretability, audit, cost).
        trained: a finished run to evaluate only (see :func:`trained_run`).
        threads: torch's CPU threads, the CPUs Ray gave the task.

    Returns:
        ``{"summary", "history", "record", "artifacts", "evaluate_error", "started"}``, or
        ``{"error": one line}`` when training failed. A cancel (``ray.cancel``) raises
        KeyboardInterrupt out of here, which Ray reports to the driver.
    """
    import torch

    from genlab import jobs

    torch.set_num_threads(threads)
    home = worker_home()
    os.environ["GENLAB_HOME"] = str(home)  # caches go to the node's home, runs to scratch
    scratch = Path(tempfile.mkdtemp(prefix="run-", dir=home))
    try:
        store = RunStore(scratch, recover=False)
        cfg = RunConfig.from_dict(config)
        run_id = store.create_run(model=cfg.model, dataset=cfg.data.name, config=config,
                                  config_hash=cfg.config_hash())
        folder = store.artifacts_dir(run_id)
        started = time.time()
        if trained is None:
            try:
                jobs.execute_run(store, run_id)
            except Exception as err:  # recorded there; a cancel (KeyboardInterrupt) goes on up
                return {"error": _one_line(err)}
        else:
            started = trained.get("started") or started
            for name, data in trained["artifacts"].items():
                (folder / name).write_bytes(data)
            store.claim(run_id)
            store.finish(run_id, summary=trained["summary"])
            if trained.get("privacy"):
                store.update_record(run_id, "privacy", trained["privacy"])
        evaluate_error = None
        if evaluate and jobs.evaluate_main(store, run_id) != 0:
            evaluate_error = (folder / EVALUATE_ERROR).read_text().strip()
        info = store.get(run_id)
        given = trained["artifacts"] if trained else {}
        artifacts = {p.name: p.read_bytes() for p in folder.iterdir()
                     if p.is_file() and not p.name.endswith(KEPT_OUT) and p.name not in given}
        return {
            "summary": info.summary,
            "history": store.history(run_id),
            "record": info.record,
            "artifacts": artifacts,
            "evaluate_error": evaluate_error,
            "started": started,
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
