"""How fast is the interpretability axis on finished runs?

Two figures per run, against issue 6's targets on a laptop-class CPU:

- the Explain page's attribution: Integrated Gradients (32 steps) for 16 test images on the
  model's default target, what the page computes on a cache miss (at most 1 s);
- the record's ``interpretability`` block (faithfulness, stability, MIG, infidelity), what
  ``genlab evaluate`` and the page's button compute (at most 60 s).

Usage::

    GENLAB_HOME=/path/to/home python bench/interpret_latency.py            # every finished run
    python bench/interpret_latency.py --home /path/to/home --dataset mnist5k
    python bench/interpret_latency.py --home /path/to/home RUN_ID ...

The store is only read (it is opened without recovery and nothing is written to it). Writes
``bench/results/interpret_latency.json`` and prints one line per run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from genlab.checkpoint import load_run_model
from genlab.interpret import example_inputs, explain, interpretability_block
from genlab.runs import RunStore

RESULTS = Path(__file__).resolve().parent / "results" / "interpret_latency.json"
N_IMAGES, STEPS, REPEATS = 16, 32, 3
TARGETS = {"attribution_seconds": 1.0, "block_seconds": 60.0}
KEPT = ("faithfulness", "deletion_contrast", "stability", "mig", "score", "infidelity",
        "sensitivity_max", "ig_relative_delta")


def _sync(model) -> None:
    if model.device.type == "cuda":
        torch.cuda.synchronize()


def time_attribution(model, data) -> list[float]:
    """Seconds for IG on 16 test images, after one small warm-up call."""
    x = example_inputs(model, data, n=N_IMAGES)
    explain(model, x[:2], method="ig", n_steps=4)
    seconds = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        explain(model, x, method="ig", n_steps=STEPS)
        _sync(model)
        seconds.append(time.perf_counter() - start)
    return seconds


def bench_run(store: RunStore, run_id: str) -> dict:
    model, cfg, data = load_run_model(store, run_id)
    attribution = time_attribution(model, data)
    start = time.perf_counter()
    block = interpretability_block(model, data)
    _sync(model)
    block_seconds = time.perf_counter() - start
    result = {
        "run": run_id, "model": cfg.model, "dataset": cfg.data.name, "shape": list(model.shape),
        "device": str(model.device),
        "attribution_seconds": statistics.median(attribution),
        "attribution_all_seconds": attribution, "block_seconds": block_seconds,
        "block": {k: block.get(k) for k in KEPT},
    }
    print(f"{run_id}: IG {N_IMAGES}x{STEPS} {result['attribution_seconds']:.2f} s "
          f"(median of {REPEATS}), block {block_seconds:.1f} s, "
          f"faithfulness {block['faithfulness']:.2f}, score {block['score']:.2f}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help="run ids (default: every finished run)")
    parser.add_argument("--home", default=os.environ.get("GENLAB_HOME"),
                        help="the genlab home to read (default: $GENLAB_HOME)")
    parser.add_argument("--dataset", help="only runs on this dataset")
    args = parser.parse_args(argv)
    if not args.home:
        parser.error("give --home or set GENLAB_HOME")
    store = RunStore(args.home, recover=False)
    run_ids = args.runs or [r.id for r in store.list(status="finished", limit=None)
                            if args.dataset in (None, r.dataset)]
    if not run_ids:
        parser.error(f"no finished runs to time in {args.home}")
    load_before = os.getloadavg()
    runs = [bench_run(store, run_id) for run_id in run_ids]
    device = runs[0]["device"]
    worst = {key: max(r[key] for r in runs) for key in TARGETS}
    result = {
        "what": f"IG ({STEPS} steps) on {N_IMAGES} test images, median of {REPEATS}, and the "
                "interpretability block, per finished run",
        "targets": TARGETS,
        "worst": worst,
        "within_targets": all(v <= TARGETS[k] for k, v in worst.items()),
        "runs": runs,
        "home": str(Path(args.home).resolve()),
        "device": device,
        "device_name": torch.cuda.get_device_name(device)
        if device.startswith("cuda") else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "attribution_threads": 1,  # genlab.interpret runs on one CPU thread (genlab.threads)
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"worst: attribution {worst['attribution_seconds']:.2f} s (target "
          f"{TARGETS['attribution_seconds']:g} s), block {worst['block_seconds']:.1f} s (target "
          f"{TARGETS['block_seconds']:g} s); written to {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
