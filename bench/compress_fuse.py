"""What compression and fusion do to each axis: the measurements behind the README's table.

Steps (each skipped when its run already exists in the home, so an interrupted run resumes):

1. train the default ``mnist5k`` VAE and GAN (``genlab train --dataset mnist5k --model M
   --seed 0``) and evaluate them (full audit, reference model included);
2. compress each with ``prune:0.5``, ``int8`` and ``fp16`` and evaluate the new runs;
3. train the default ``digits`` VAE at seeds 0 and 1 on one split (``--data-seed 0``), without DP
   and with DP at ε = 4, evaluate them, fuse each pair by ``average`` and by ``ensemble`` and
   evaluate the fused runs.

Usage (heavy: tens of minutes on a 2-core CPU; run it under the shared lock)::

    .venv/bin/python bench/compress_fuse.py --home /tmp/some_home

Writes ``bench/results/compress_fuse.json`` (every record's headline figures, with the machine,
torch version, date and load average) and prints the tables as Markdown.

The record's sampling latency is timed during each run's own evaluation, minutes apart, so on a
shared machine it follows the load of that moment. ``--latency`` (light: a few seconds of CPU)
times every run of the home again, interleaved: ``ROUNDS`` rounds, each run once per round in
turn (``SAMPLE_N`` images, median of the efficiency block's repeats), so all see the same load;
it adds ``latency_interleaved`` (the median over rounds, per run) to the results file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from pathlib import Path

import torch

from genlab import jobs
from genlab.checkpoint import load_run_model
from genlab.compress import compress_run
from genlab.config import make_run_config
from genlab.demo import device_name
from genlab.efficiency import sampling_latency
from genlab.evaluate import evaluate_run
from genlab.fusion import fuse_runs
from genlab.runs import RunStore

RESULTS = Path(__file__).resolve().parent / "results" / "compress_fuse.json"
METHODS = ("prune:0.5", "int8", "fp16")
FIGURES = {  # column -> (block, key)
    "fd": ("performance", "fd"), "cas": ("performance", "cas"),
    "interp": ("interpretability", "score"), "faithfulness": ("interpretability", "faithfulness"),
    "stability": ("interpretability", "stability"), "mig": ("interpretability", "mig"),
    "mia_auc": ("privacy", "mia_auc"), "emp_eps": ("privacy", "epsilon_lower_bound"),
    "dcr_ratio": ("privacy", "dcr_ratio"), "epsilon": ("privacy", "epsilon"),
    "size_bytes": ("efficiency", "size_bytes"), "latency_s": ("efficiency", "sample_seconds"),
    "params_nonzero": ("efficiency", "params_nonzero"),
    "params_total": ("efficiency", "params_total"),
}


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path(
        "/proc/loadavg").exists() else "unknown"


def train(store: RunStore, steps: dict, name: str, model: str, dataset: str, *, seed: int = 0,
          data_seed: int | None = None, privacy: dict | None = None) -> str:
    if name not in steps:
        cfg = make_run_config(model, dataset, seed=seed, data_seed=data_seed, privacy=privacy)
        run_id = store.create_run(model=model, dataset=dataset, config=cfg.to_dict(),
                                  config_hash=cfg.config_hash())
        jobs.execute_run(store, run_id)
        steps[name] = run_id
    return steps[name]


def evaluated(store: RunStore, run_id: str, log: dict) -> None:
    if "efficiency" not in store.get(run_id).record or "mia_auc" not in (
            store.get(run_id).record.get("privacy") or {}):
        start, before = time.perf_counter(), load()
        evaluate_run(store, run_id)
        log[run_id] = {"evaluate_seconds": time.perf_counter() - start, "load_before": before,
                       "load_after": load()}


def figures(store: RunStore, run_id: str) -> dict:
    info = store.get(run_id)
    out = {"run_id": run_id, "model": info.model, "dataset": info.dataset,
           "made_by": (info.record.get("lineage") or {}).get("spec"),
           "parents": (info.record.get("lineage") or {}).get("parents"),
           "test_loss": info.summary.get("test_loss")}
    for column, (block, key) in FIGURES.items():
        out[column] = (info.record.get(block) or {}).get(key)
    return out


def _fmt(v, digits=3) -> str:
    if v is None:
        return "—"
    return f"{v:,}" if isinstance(v, int) else f"{v:.{digits}g}"


AXIS_KEYS = ("fd", "cas", "interp", "mia_auc", "emp_eps", "dcr_ratio")


def _delta(child: dict, parents: list[dict], key: str) -> str:
    """The child's value minus its parents' mean (one parent: minus the parent's)."""
    values = [p.get(key) for p in parents]
    if child.get(key) is None or any(v is None for v in values):
        return "—"
    return f"{child[key] - sum(values) / len(values):+.3g}"


def markdown(rows: dict[str, dict], pairs: list[tuple[str, list[str]]],
             latency: dict[str, float] | None = None) -> str:
    """One line per run: a parent with its own figures, a derived run with the change in each
    axis against its parent (a fused run: against its parents' mean). ``latency`` (seconds per
    run id) replaces the records' own timings, e.g. the interleaved ones."""
    head = ("| run | ε | size (bytes) | latency, 64 samples (ms) | params nonzero / total | fd | "
            "cas | interp. score | mia_auc | empirical ε | dcr_ratio |")
    lines = [head, "|" + "---|" * 11]
    for child, parents in pairs:
        c = rows[child]
        name = f"{c['model']} {c['dataset']} {c['made_by'] or 'trained'} `{child}`"
        values = ([_delta(c, [rows[p] for p in parents], k) for k in AXIS_KEYS] if parents
                  else [_fmt(c[k]) for k in AXIS_KEYS])
        eps = "∞" if c["epsilon"] is None else f"{c['epsilon']:.3g}"
        seconds = (latency or {}).get(child, c["latency_s"])
        lines.append(f"| {name} | {eps} | {_fmt(c['size_bytes'])} | "
                     f"{seconds * 1000:.1f} | {_fmt(c['params_nonzero'])} / "
                     f"{_fmt(c['params_total'])} | " + " | ".join(values) + " |")
    return "\n".join(lines)


ROUNDS = 5


def interleaved_latency(store: RunStore, run_ids: list[str]) -> dict:
    """Median sampling latency per run over ``ROUNDS`` interleaved rounds (module docstring)."""
    models = {run_id: load_run_model(store, run_id)[0] for run_id in run_ids}
    times: dict[str, list[float]] = {run_id: [] for run_id in run_ids}
    before = load()
    for _ in range(ROUNDS):
        for run_id, model in models.items():
            times[run_id].append(sampling_latency(model))
    return {"rounds": ROUNDS, "load_before": before, "load_after": load(),
            "date": dt.datetime.now().isoformat(timespec="seconds"),
            "seconds": {run_id: sorted(t)[len(t) // 2] for run_id, t in times.items()},
            "all": times}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", required=True, help="the genlab home to work in")
    parser.add_argument("--latency", action="store_true",
                        help="only re-time every run's sampling, interleaved (light)")
    parser.add_argument("--table", action="store_true",
                        help="only print the table of the results file (interleaved latency "
                        "where measured)")
    args = parser.parse_args(argv)
    home = Path(args.home)
    os.environ["GENLAB_HOME"] = str(home)
    store = RunStore(home)
    if args.table:
        doc = json.loads(RESULTS.read_text())
        rows = {r["run_id"]: r for r in doc["runs"]}
        latency = (doc.get("latency_interleaved") or {}).get("seconds")
        print(markdown(rows, [(c, list(p)) for c, p in doc["pairs"]], latency))
        return 0
    if args.latency:
        doc = json.loads(RESULTS.read_text())
        doc["latency_interleaved"] = interleaved_latency(store, [r["run_id"] for r in doc["runs"]])
        RESULTS.write_text(json.dumps(doc, indent=1, default=float))
        for row in doc["runs"]:
            ms = doc["latency_interleaved"]["seconds"][row["run_id"]] * 1000
            print(f"{row['run_id']:<22} {row['made_by'] or 'trained':<10} {ms:8.1f} ms")
        return 0
    steps_file = home / "compress_fuse_steps.json"
    steps = json.loads(steps_file.read_text()) if steps_file.exists() else {}
    log: dict = steps.setdefault("_log", {})

    def save() -> None:
        steps_file.write_text(json.dumps(steps, indent=1))

    started = {"date": dt.datetime.now().isoformat(timespec="seconds"), "load": load()}
    pairs = []
    for model in ("vae", "gan"):
        parent = train(store, steps, f"{model}-mnist5k", model, "mnist5k")
        save()
        evaluated(store, parent, log)
        pairs.append((parent, []))
        for method in METHODS:
            key = f"{model}-mnist5k {method}"
            if key not in steps:
                steps[key] = compress_run(store, parent, method)
                save()
            evaluated(store, steps[key], log)
            pairs.append((steps[key], [parent]))
        save()
    for tag, privacy in (("nodp", None), ("dp4", {"epsilon": 4.0})):
        a = train(store, steps, f"vae-digits-{tag}-s0", "vae", "digits", seed=0, data_seed=0,
                  privacy=privacy)
        b = train(store, steps, f"vae-digits-{tag}-s1", "vae", "digits", seed=1, data_seed=0,
                  privacy=privacy)
        save()
        for run_id in (a, b):
            evaluated(store, run_id, log)
            pairs.append((run_id, []))
        for method in ("average", "ensemble"):
            key = f"vae-digits-{tag} {method}"
            if key not in steps:
                steps[key] = fuse_runs(store, [a, b], method)
                save()
            evaluated(store, steps[key], log)
            pairs.append((steps[key], [a, b]))
        save()
    rows = {run_id: figures(store, run_id) for run_id, _ in pairs}
    doc = {"machine": device_name(), "platform": platform.platform(), "torch": torch.__version__,
           "threads": torch.get_num_threads(), "started": started,
           "finished": {"date": dt.datetime.now().isoformat(timespec="seconds"), "load": load()},
           "evaluations": log, "runs": list(rows.values()), "pairs": pairs}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=1, default=float))
    print(markdown(rows, pairs))
    print(f"\n{doc['machine']}, torch {doc['torch']}, {doc['threads']} thread(s); started "
          f"{started['date']} (load {started['load']}), finished {doc['finished']['date']} "
          f"(load {doc['finished']['load']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
