"""Runs made from other runs: compressed (``genlab compress``) and fused (``genlab fuse``).

Such a run is an ordinary run in the store, with its own id, weights and three-axis record, plus
a row in the ``lineage`` table that links it to its parents:

``lineage(run_id, method, spec, parents, details, created)``: ``method`` is the family that
rebuilds the model (``prune``, ``int8``, ``fp16``, ``average``, ``ensemble``), ``spec`` what the
user asked for (``prune:0.5``), ``parents`` the parents' ids (JSON), ``details`` what the method
did (which layers it pruned or quantized, the privacy composition; JSON). The row goes when its
run is deleted (a foreign key); deleting a parent keeps the child, whose weights are its own.
The same link is copied into the run's record as a ``lineage`` block, so the CLI's JSON, the
exports and the Trade-offs page show it without the store.

A derived run's config is its parents' (the architecture and data it was built for); its
``config_hash`` is left empty, so a sweep never mistakes it for a trained run of that config.

The privacy of a derived run is traced to its **trained roots**: the runs that actually trained
on data. Compressing is post-processing (Dwork & Roth 2014, Proposition 2.1), so a compressed run
has its parent's roots; a fusion has the union of its parents' roots, each counted once.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genlab.errors import StoreError
from genlab.runs import RunInfo, RunStore

# How each method family is rebuilt: the module whose ``load_derived`` does it.
LOADERS = {"prune": "genlab.compress", "int8": "genlab.compress", "fp16": "genlab.compress",
           "average": "genlab.fusion", "ensemble": "genlab.fusion"}

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS lineage (run_id TEXT PRIMARY KEY REFERENCES runs(id) "
    "ON DELETE CASCADE, method TEXT NOT NULL, spec TEXT NOT NULL, parents TEXT NOT NULL, "
    "details TEXT NOT NULL DEFAULT '{}', created REAL NOT NULL)"
)


@dataclass(frozen=True)
class Lineage:
    """How a run was made from others.

    Attributes:
        run_id: the derived run.
        method: the family that rebuilds it (a key of :data:`LOADERS`).
        spec: the method as the user gave it, e.g. ``prune:0.5``.
        parents: the runs it was made from, in order.
        details: what the method did, JSON-able.
    """

    run_id: str
    method: str
    spec: str
    parents: tuple[str, ...]
    details: dict[str, Any] = field(default_factory=dict)

    def block(self) -> dict[str, Any]:
        """The record's ``lineage`` block."""
        return {"method": self.method, "spec": self.spec, "parents": list(self.parents),
                "details": self.details}


def _table(store: RunStore) -> None:
    # The link table is additive (the runs table's schema is unchanged), so it is created on
    # first use in any store, old ones included; a store that has it is only read. RunStore's
    # per-thread connection is reused.
    if getattr(store, "_lineage_table", False):
        return
    with store._connect() as conn:
        exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                              "name = 'lineage'").fetchone()
        if not exists:
            conn.execute(_SCHEMA)
    store._lineage_table = True


def lineage_of(store: RunStore, run_id: str) -> Lineage | None:
    """The lineage of ``run_id`` (a full id), or ``None`` for a run that was trained."""
    _table(store)
    with store._connect() as conn:
        row = conn.execute("SELECT * FROM lineage WHERE run_id = ?", (run_id,)).fetchone()
    if row is None:
        return None
    return Lineage(row["run_id"], row["method"], row["spec"], tuple(json.loads(row["parents"])),
                   json.loads(row["details"]))


def children_of(store: RunStore, run_id: str) -> list[str]:
    """The ids of the runs made from ``run_id``, oldest first."""
    _table(store)
    with store._connect() as conn:
        rows = conn.execute("SELECT run_id, parents FROM lineage ORDER BY created").fetchall()
    return [r["run_id"] for r in rows if run_id in json.loads(r["parents"])]


def create_derived_run(
    store: RunStore, *, parents: list[RunInfo], method: str, spec: str, config: dict,
    details: dict[str, Any], model: str | None = None,
) -> str:
    """Add a running derived run, linked to ``parents``; returns its id.

    The caller writes its weights and then calls :func:`finish_derived_run` (or
    ``store.fail``). The run is claimed by this process, so a crash leaves it failed.
    """
    first = parents[0]
    run_id = store.create_run(model=model or first.model, dataset=first.dataset, config=config,
                              owner=first.owner, config_hash=None)
    link = Lineage(run_id, method, spec, tuple(p.id for p in parents), details)
    _table(store)
    with store._connect(write=True) as conn:
        conn.execute(
            "INSERT INTO lineage (run_id, method, spec, parents, details, created) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (run_id, method, spec, json.dumps(list(link.parents)), json.dumps(details),
             time.time()),
        )
    store.claim(run_id, pid=os.getpid())
    store.update_record(run_id, "lineage", link.block())
    return run_id


def finish_derived_run(store: RunStore, run_id: str, *, summary: dict,
                       privacy: dict[str, Any]) -> None:
    """Mark a derived run finished with its summary and its formal privacy block."""
    store.finish(run_id, summary=summary)
    store.update_record(run_id, "privacy", privacy)


def load_derived(link: Lineage, model, cfg, path: Path):
    """Rebuild a derived run's model: ``model`` is a fresh one of its config; returns the
    model with the run's weights loaded (possibly a different module, e.g. an ensemble).

    Raises:
        StoreError: the method is unknown to this genlab (a newer one made the run).
    """
    import importlib

    if link.method not in LOADERS:
        raise StoreError(f"run {link.run_id} was made by '{link.method}', which this genlab "
                         f"cannot load (known: {', '.join(LOADERS)}); upgrade genlab")
    return importlib.import_module(LOADERS[link.method]).load_derived(link, model, cfg, path)


# ----------------------------------------------------------------------------- privacy roots
def trained_roots(store: RunStore, info: RunInfo) -> list[dict[str, Any]]:
    """The trained runs behind ``info``, each once, with their formal (ε, δ, accountant).

    ``epsilon`` is ``None`` for a root trained without DP (ε = ∞). A derived run's roots were
    stored when it was made, so they survive the deletion of its parents.
    """
    link = lineage_of(store, info.id)
    if link is not None:
        return list(link.details.get("privacy_roots") or [])
    privacy = info.record.get("privacy") or {}
    dp = bool(info.config.get("privacy"))
    return [{"run_id": info.id,
             "epsilon": privacy.get("epsilon") if dp else None,
             "delta": privacy.get("delta") if dp else None,
             "accountant": privacy.get("accountant") if dp else None}]


def union_roots(groups: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The roots of several runs, each trained run once (the first time it appears)."""
    seen: dict[str, dict[str, Any]] = {}
    for roots in groups:
        for root in roots:
            seen.setdefault(root["run_id"], root)
    return list(seen.values())


# ----------------------------------------------------------------------------- artifacts
@torch.no_grad()
def mean_loss(model, split) -> float:
    """Mean per-sample ``eval_loss`` over a split with the Trainer's fixed noise, so a derived
    run's train and test losses compare with its parent's."""
    from genlab.train import EVAL_SEED

    total = 0.0
    device = model.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(EVAL_SEED)
        for i in range(0, len(split.x), 500):
            xb, yb = split.x[i : i + 500].to(device), split.y[i : i + 500].to(device)
            total += float(model.eval_loss(xb, yb).sum())
    return total / max(len(split.x), 1)


def write_derived_artifacts(store: RunStore, run_id: str, config: dict, model, *,
                            seed: int = 0, **save_options) -> Path:
    """Config, weights (``save_options`` go to :func:`genlab.checkpoint.save_weights`) and a
    sample grid in the derived run's folder; returns the weights file."""
    from genlab.checkpoint import WEIGHTS_FILE, save_weights
    from genlab.jobs import SAMPLE_GRID
    from genlab.viz import image_grid, save_png

    folder = store.artifacts_dir(run_id)
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    path = save_weights(model, folder / WEIGHTS_FILE, **save_options)
    samples = model.sample(64, generator=torch.Generator().manual_seed(seed))
    save_png(image_grid(samples, nrow=8, scale=2), folder / SAMPLE_GRID)
    return path


def derived_summary(parent: RunInfo, model, data, **extra: Any) -> dict[str, Any]:
    """The parent's training summary with this model's own train and test losses."""
    summary = {k: v for k, v in parent.summary.items() if k != "privacy"}
    return {**summary, "parent_train_loss": parent.summary.get("train_loss"),
            "parent_test_loss": parent.summary.get("test_loss"),
            "train_loss": mean_loss(model, data.train), "test_loss": mean_loss(model, data.test),
            **extra}
