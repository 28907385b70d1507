"""Synthetic but real-shaped runs for the Trade-offs tests: a real run store filled through its own
API (create_run, finish, update_record) with records shaped like ``genlab train --evaluate``'s, so
nothing trains.

The numbers follow the story a sweep tells (more privacy, lower CAS and attack AUC) plus seeded
noise, so the Pareto front, the seed spreads and the curves are non-trivial.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np

from genlab.cli_output import finite, run_json
from genlab.config import make_run_config
from genlab.runs import RunStore

SEEDS = (0, 1, 2)
EPSILONS = (1.0, 3.0, 8.0, math.inf)
MODELS = {"vae": 0.55, "gan": 0.7, "mixture": 0.35}  # model -> CAS without DP
ACCOUNTANT_DELTA = 1e-5


def record_for(model: str, eps: float, seed: int, *, interpretability: bool = True) -> dict:
    """A record with every block ``genlab train --evaluate`` writes, values from the story."""
    rng = np.random.default_rng(zlib.crc32(f"{model} {eps} {seed}".encode()))
    strength = 1.0 if math.isinf(eps) else eps / (eps + 2.0)  # 0 (private) .. 1 (no DP)
    cas = MODELS[model] * (0.45 + 0.55 * strength) + rng.normal(0, 0.02)
    auc = 0.5 + 0.12 * strength * (MODELS[model] + 0.3) + rng.normal(0, 0.005)
    record = {
        "performance": {"fd": 400 - 200 * cas + rng.normal(0, 5), "precision": 0.5 + cas / 2,
                        "recall": cas / 2, "density": 0.8 * cas, "coverage": 0.9 * cas,
                        "cas": cas, "cas_labels": "reference-classifier", "cas_real": 0.99,
                        "nll_bpd": None if model == "gan" else 0.9 - 0.2 * cas,
                        "feature_space": "reference-cnn-v2", "k": 5, "n_generated": 1000,
                        "n_real": 359},
        "privacy": {"epsilon": None, "delta": None, "accountant": None,
                    "mia_auc": auc, "mia_tpr_at_1pct_fpr": max(0.0, (auc - 0.5) / 4),
                    "mia_tpr_at_0_1pct_fpr": None,
                    "epsilon_lower_bound": max(0.0, 6 * (auc - 0.52)),
                    "dcr_ratio": 1.02 - 0.2 * strength, "mia_attack": "reference",
                    "attacks": {"loss": {"auc": auc - 0.01}, "reference": {"auc": auc}},
                    "audit": {"n_members": 359, "n_nonmembers": 359, "score_draws": 8,
                              "delta": 1e-5, "confidence": 0.95, "seed": 0,
                              "reference_note": None}},
        "cost": {"train_seconds": (25.0 if math.isfinite(eps) else 4.0) * (1 + rng.random()),
                 "samples_per_second": 1500.0, "params": 288769, "device": "cpu"},
    }
    if interpretability:
        faith, stab = 0.9 - 0.1 * strength + rng.normal(0, 0.01), 0.95
        mig = None if model == "mixture" else 0.02 + 0.05 * (1 - strength)
        parts = [v for v in (faith, stab, mig) if v is not None]
        record["interpretability"] = {"faithfulness": faith, "stability": stab, "mig": mig,
                                      "score": sum(parts) / len(parts), "infidelity": 0.3,
                                      "sensitivity_max": 0.05, "method": "ig"}
    if math.isfinite(eps):
        record["privacy"].update(epsilon=eps * 0.9997, delta=ACCOUNTANT_DELTA, accountant="prv",
                                 target_epsilon=eps, noise_multiplier=1.0 / eps,
                                 accountant_fallback=None)
    return record


def add_run(store: RunStore, model: str, eps: float, seed: int, *, status: str = "finished",
            record: dict | None = None) -> str:
    """One run through the store's own API; returns its id."""
    privacy = None if math.isinf(eps) else {"epsilon": eps}
    cfg = make_run_config(model, "digits", epochs=2, seed=seed, privacy=privacy)
    run_id = store.create_run(model=model, dataset="digits", config=cfg.to_dict(),
                              config_hash=cfg.config_hash())
    if status != "finished":
        store.fail(run_id, "synthetic failure")
        return run_id
    store.finish(run_id, summary={"epochs": 2, "train_seconds": 3.0, "device": "cpu"})
    for block, values in (record or {}).items():
        store.update_record(run_id, block, values)
    return run_id


def fill_store(home: Path) -> dict[tuple[str, float, int], str]:
    """Every model at every ε with every seed, plus the odd cases: ``gan`` at ε = 3 has one
    seed only (sd is NaN), ``mixture`` at ε = 8 lacks the interpretability block, a failed run
    and a finished run without a record. Returns ``{(model, ε, seed): run id}`` of the
    finished runs with records."""
    store = RunStore(home)
    ids = {}
    for model in MODELS:
        for eps in EPSILONS:
            for seed in SEEDS:
                if model == "gan" and eps == 3.0 and seed > 0:
                    continue
                interp = not (model == "mixture" and eps == 8.0)
                ids[model, eps, seed] = add_run(store, model, eps, seed,
                                                record=record_for(model, eps, seed,
                                                                  interpretability=interp))
    add_run(store, "vae", 1.0, 7, status="failed")
    add_run(store, "vae", 2.0, 0, record={})  # finished, never evaluated
    return ids


def write_demo(path: Path, home: Path) -> Path:
    """A demo records file in the ``assets/demo/records.json`` format, from a store's runs."""
    runs = [run_json(r) for r in RunStore(home).list(status="finished") if r.record]
    meta = {"device": "Test GPU 9000", "date": "2031-02-03", "torch": "2.13.0",
            "command": "make demo"}
    path.write_text(json.dumps(finite({"meta": meta, "runs": runs}), indent=1))
    return path
