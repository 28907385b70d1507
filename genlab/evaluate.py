"""One call that fills a run's three-axis record (DESIGN.md, "The three-axis record").

It fills ``performance``, ``interpretability`` (faithfulness, stability and MIG; see
:mod:`genlab.interpret.scores`), ``privacy`` (the membership audit, beside the formal ε that
training wrote), ``cost`` and ``efficiency`` (weights on disk, sampling latency, nonzero
parameters; see :mod:`genlab.efficiency`). Sample counts and seeds are fixed and written into
the record, so evaluating the same run twice gives the same numbers (the sampling latency
apart: it is a timing).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from genlab.checkpoint import WEIGHTS_FILE, load_run_model
from genlab.efficiency import efficiency_block
from genlab.errors import StoreError
from genlab.precision import parameter_counts
from genlab.runs import RunStore

N_GENERATED = 1000  # generated samples compared against the real test split
EVAL_SEED = 0
NLL_K = 16  # importance samples for the VAE's likelihood bound (see VAE.nll)


def _samples_per_second(model, *, n: int = 256, repeats: int = 3) -> float:
    """Best-of-``repeats`` sampling throughput, images per second, on the model's device."""
    best = float("inf")
    for i in range(repeats):
        gen = torch.Generator().manual_seed(i)
        start = time.perf_counter()
        model.sample(n, generator=gen)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return n / best


def cost_block(model, summary: dict[str, Any]) -> dict[str, Any]:
    """What the run cost: training time, sampling speed, size and device."""
    return {
        "train_seconds": summary.get("train_seconds"),
        "samples_per_second": _samples_per_second(model),
        "params": parameter_counts(model)[0],  # int8 weights included
        "device": summary.get("device"),
    }


EXPOSED_GRID = "audit_exposed.png"


def _finished(store: RunStore, run_id: str):
    info = store.get(run_id)
    if info.status != "finished":
        raise StoreError(
            f"run {info.id} is {info.status}, not finished; evaluate it once it has finished"
        )
    return info


def audit_run(
    store: RunStore, run_id: str, *, reference: bool = True, callbacks=()
) -> dict[str, Any]:
    """Run the membership audit on a finished run and merge it into the record's privacy block.

    The formal fields training wrote (ε, δ, σ, q, steps, accountant) are kept; a run trained
    without DP gets ``epsilon: None`` (no guarantee, ε = ∞). The most exposed members, each
    beside its nearest generated sample, are saved as ``audit_exposed.png`` in the run's folder.

    Raises:
        RunNotFound: no run has that id.
        StoreError: the run has not finished.
    """
    from genlab.privacy.audit import membership_audit
    from genlab.viz import image_grid, save_png

    info = _finished(store, run_id)
    model, cfg, data = load_run_model(store, info.id)
    result = membership_audit(model, cfg, data, reference=reference, callbacks=callbacks)
    formal = info.record.get("privacy") or {"epsilon": None, "delta": None, "accountant": None}
    block = {
        **{k: formal.get(k) for k in ("epsilon", "delta", "accountant")},
        **formal,
        **result.record,
    }
    store.update_record(info.id, "privacy", block)
    pairs = result.exposed_pairs
    if len(pairs):
        grid = image_grid(pairs.flatten(0, 1), nrow=2 * min(4, len(pairs)), scale=3)
        save_png(grid, store.artifacts_dir(info.id) / EXPOSED_GRID)
    return block


def evaluate_run(
    store: RunStore,
    run_id: str,
    *,
    n_generated: int = N_GENERATED,
    seed: int = EVAL_SEED,
    audit: bool = True,
    reference: bool = True,
) -> dict[str, dict[str, Any]]:
    """Compute and store the record blocks of a finished run; returns the whole record.

    Raises:
        RunNotFound: no run has that id.
        StoreError: the run has not finished (it has no weights to evaluate).
    """
    from genlab.fidelity import performance_block
    from genlab.interpret import interpretability_block

    info = _finished(store, run_id)
    model, cfg, data = load_run_model(store, info.id)
    d = cfg.data
    performance = performance_block(
        model,
        data,
        n_generated=n_generated,
        seed=seed,
        split_seed=d.seed,
        holdout_fraction=d.holdout_fraction,
        test_fraction=d.test_fraction,
        nll_k=NLL_K,
    )
    store.update_record(info.id, "performance", performance)
    store.update_record(info.id, "interpretability", interpretability_block(model, data, seed=seed))
    store.update_record(info.id, "cost", cost_block(model, info.summary))
    weights = store.artifacts_dir(info.id) / WEIGHTS_FILE
    store.update_record(info.id, "efficiency", efficiency_block(model, weights))
    if audit:
        audit_run(store, info.id, reference=reference)
    return store.get(info.id).record
