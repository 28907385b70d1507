"""``genlab fuse``: one model from several finished runs, stored as a new run linked to them.

- ``average`` — weight averaging: every floating-point tensor of the state dict is the mean of
  the runs' tensors (integer tensors such as step counters must agree and are kept). Averaging
  runs trained from different initialisations need not give a good model: nothing aligns their
  hidden units, so this is a measurement, not a recipe (model soups, Wortsman et al. 2022, work
  from one shared pretrained start).
- ``ensemble`` — a sampling ensemble (:class:`genlab.ensemble.Ensemble`): a uniform mixture that
  draws each image from a randomly chosen member.

Both need runs of one **architecture** (the same model and model config) trained on the same
**data** (the same dataset, split seed and split fractions, so every parent's members are the
fused run's members and the audit asks the right question); anything else is refused with one
message that names the difference. Runs may differ in their training seed, epochs, learning rate
or privacy. The fused run's privacy composes its parents' (:mod:`genlab.privacy.composition`):
the sum of the ε (and of the δ) of the distinct trained runs behind it, ∞ if any had no DP.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from genlab.checkpoint import load_run_model, load_weights
from genlab.errors import ConfigError, StoreError
from genlab.lineage import (
    create_derived_run,
    derived_summary,
    finish_derived_run,
    lineage_of,
    trained_roots,
    union_roots,
    write_derived_artifacts,
)
from genlab.privacy.composition import compose_basic
from genlab.runs import RunInfo, RunStore

METHODS = ("average", "ensemble")
FUSIBLE = (None, "prune", "average")  # lineages whose weights are one plain float32 model


def _setting(config: dict, block: str, key: str) -> Any:
    return (config.get(block) or {}).get(key)


def check_fusible(parents: list[RunInfo], store: RunStore) -> None:
    """Refuse runs that cannot be fused, with one message naming the first difference.

    Raises:
        ConfigError: fewer than two distinct runs, different models, model settings or data.
        StoreError: a run is unfinished, or is int8, fp16 or an ensemble.
    """
    ids = [p.id for p in parents]
    if len(set(ids)) < 2:
        raise ConfigError("fusing needs at least two different runs (got "
                          f"{', '.join(dict.fromkeys(ids))})")
    for p in parents:
        if p.status != "finished":
            raise StoreError(f"run {p.id} is {p.status}, not finished; fuse it once it has "
                             "finished")
        link = lineage_of(store, p.id)
        if link is not None and link.method not in FUSIBLE:
            raise StoreError(f"run {p.id} was made by {link.spec}; fuse full-precision runs "
                             "(trained, pruned or averaged ones)")
    first = parents[0]
    for other in parents[1:]:
        a, b = first.config, other.config
        if a.get("model") != b.get("model"):
            raise ConfigError(f"cannot fuse runs of different architectures: {first.id} is a "
                              f"{a.get('model')}, {other.id} is a {b.get('model')}")
        ma, mb = a.get("model_config") or {}, b.get("model_config") or {}
        for key in sorted(set(ma) | set(mb)):
            if ma.get(key) != mb.get(key):
                raise ConfigError(
                    f"cannot fuse runs of different architectures: {key} is {ma.get(key)!r} in "
                    f"{first.id} and {mb.get(key)!r} in {other.id}")
        da, db = a.get("data") or {}, b.get("data") or {}
        for key in sorted(set(da) | set(db)):
            if da.get(key) != db.get(key):
                what = {"name": "dataset", "seed": "split seed"}.get(key, key)
                hint = ("; their members differ, so train them with the same --data-seed"
                        if key == "seed" else "")
                raise ConfigError(
                    f"cannot fuse runs trained on different data: the {what} is "
                    f"{da.get(key)!r} in {first.id} and {db.get(key)!r} in {other.id}{hint}")


def average_state(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The mean of several state dicts, key by key (float32 arithmetic for float tensors).

    Raises:
        ConfigError: an integer tensor (a counter, a mask) differs between them.
    """
    out = {}
    for key, first in states[0].items():
        values = [s[key] for s in states]
        if first.is_floating_point():
            out[key] = torch.stack([v.float() for v in values]).mean(dim=0).to(first.dtype)
        elif all(torch.equal(first, v) for v in values[1:]):
            out[key] = first.clone()
        else:
            raise ConfigError(f"cannot average {key}: it is an integer tensor that differs "
                              "between the runs")
    return out


def _ensemble(members):
    from genlab.ensemble import Ensemble

    return Ensemble(members).eval()


def load_derived(link, model, cfg, path):
    """Rebuild a fused run (:func:`genlab.lineage.load_derived`): an averaged run is a plain
    model of its config; an ensemble holds ``details["members"]`` fresh models of it."""
    if link.method == "average":
        return load_weights(model, path)
    from genlab.models import build

    shape, classes = model.shape, model.num_classes
    members = [model] + [build(cfg.model, shape=shape, num_classes=classes,
                               config=cfg.model_config)
                         for _ in range(int(link.details["members"]) - 1)]
    return load_weights(_ensemble(members), path)


def fuse_runs(store: RunStore, run_ids: list[str], method: str) -> str:
    """Fuse finished runs into a new linked run; returns its id (evaluate it afterwards).

    Raises:
        ConfigError: an unknown method, or runs that cannot be fused (see
            :func:`check_fusible`).
        StoreError: an unknown, unfinished or non-fusible run.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown fusion method {method!r}; use {' or '.join(METHODS)}")
    parents = [store.get(run_id) for run_id in run_ids]
    check_fusible(parents, store)
    start = time.perf_counter()
    loaded = [load_run_model(store, p.id) for p in parents]
    models = [m for m, _, _ in loaded]
    _, cfg, data = loaded[0]
    if method == "average":
        fused = models[0]
        fused.load_state_dict(average_state([m.state_dict() for m in models]))
        details: dict[str, Any] = {"rule": "mean of every floating-point tensor"}
    else:
        fused = _ensemble(models)
        details = {"members": len(models), "weights": "uniform", "combine": fused.config.combine}
    fused.eval()
    privacy = compose_basic(union_roots([trained_roots(store, p) for p in parents]))
    details["privacy_roots"] = privacy["composition"]["parts"]
    config = dict(parents[0].config)
    if privacy["epsilon"] is None:
        config.pop("privacy", None)  # a parent without DP: the fused run has no guarantee
    new_id = create_derived_run(store, parents=parents, method=method, spec=method,
                                config=config, details=details)
    try:
        write_derived_artifacts(store, new_id, config, fused, seed=cfg.train.seed,
                                metadata={"genlab_method": method,
                                          "genlab_parents": ",".join(p.id for p in parents)})
        train_seconds = sum(p.summary.get("train_seconds") or 0.0 for p in parents)
        extra = {"privacy": privacy} if privacy["epsilon"] is not None else {}
        summary = derived_summary(parents[0], fused, data, **extra, train_seconds=train_seconds,
                                  fuse_seconds=time.perf_counter() - start,
                                  parents_test_loss=[p.summary.get("test_loss")
                                                     for p in parents])
        finish_derived_run(store, new_id, summary=summary, privacy=privacy)
    except BaseException as err:
        store.fail(new_id, f"{type(err).__name__}: {err}")
        raise
    return new_id
