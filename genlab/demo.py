"""The demo records shipped in ``assets/demo/records.json``: a real sweep, labelled as a demo.

A first visit to the Trade-offs page, before anyone has trained anything, shows these records
under a banner that names the machine and the date they were computed on. ``make demo`` rebuilds
them with ``python -m genlab.demo``: the sweep below runs in a temporary genlab home (the user's
own runs are never touched), every run is evaluated on all three axes by the sweep's workers, and
the records are written with the device, torch version, date and command.

Nothing here is hand-written or edited: the file is whatever the sweep measured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

import genlab
from genlab.cli_output import finite, run_json
from genlab.runs import RunStore
from genlab.sweep import SweepSpec, failures, run_sweep

ASSET = Path(__file__).resolve().parents[1] / "assets" / "demo" / "records.json"

# digits (1,797 8x8 images) keeps the sweep to minutes on a 2-core CPU (380 s on 2026-12-01: 12
# runs, each trained and evaluated with the full audit); two families that lose different things
# under DP (a latent model and a plain likelihood), two seeds for the error bars.
DEMO_SPEC = SweepSpec(
    dataset="digits",
    models=("vae", "mixture"),
    epsilons=(math.inf, 8.0, 1.0),
    seeds=(0, 1),
)


def device_name() -> str:
    """The accelerator's name, or the CPU's model and core count."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} cores (CPU only)"


def build_demo(spec: SweepSpec = DEMO_SPEC, *, home: Path | None = None) -> dict:
    """Run ``spec`` in ``home`` (a fresh temporary folder by default); return the demo document.

    Raises:
        GenlabError: a run failed; the demo is never written with holes in it.
    """
    with tempfile.TemporaryDirectory(prefix="genlab-demo-") as tmp:
        home = Path(home or tmp)
        os.environ["GENLAB_HOME"] = str(home)  # the sweep's workers inherit it
        store = RunStore(home)
        start = time.perf_counter()
        run_ids = run_sweep(store, spec, on_progress=_progress)
        seconds = time.perf_counter() - start
        failed = failures(store, run_ids)
        if failed:
            from genlab.errors import GenlabError

            raise GenlabError(f"{len(failed)} demo runs failed, first: {failed[0]}")
        runs = [finite({**run_json(info), "created": info.created, "finished": info.finished})
                for info in map(store.get, run_ids)]
    meta = {
        "demo": True,
        "note": "Demo data: a real sweep computed by `make demo`, shipped so the Trade-offs "
        "page is not empty on a first visit. Your own runs replace it.",
        "device": device_name(),
        "torch": torch.__version__,
        "genlab": genlab.__version__,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"),
        "command": "genlab sweep " + _sweep_args(spec),
        "wall_seconds": round(seconds, 1),
        "sweep": spec.to_dict(),
    }
    return {"meta": meta, "runs": runs}


def _sweep_args(spec: SweepSpec) -> str:
    eps = ",".join("inf" if math.isinf(e) else f"{e:g}" for e in spec.epsilons)
    return (f"--dataset {spec.dataset} --models {','.join(spec.models)} --epsilons {eps} "
            f"--seeds {','.join(map(str, spec.seeds))}")


def _progress(settled: int, total: int, item) -> None:
    print(f"demo: {settled}/{total} runs settled ({item.config.model}, "
          f"seed {item.config.train.seed})", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genlab.demo",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ASSET, help=f"where to write (default {ASSET})")
    args = parser.parse_args(argv)
    document = build_demo()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=1) + "\n")
    meta = document["meta"]
    print(f"wrote {len(document['runs'])} demo runs to {args.out} "
          f"({meta['wall_seconds']:.0f} s on {meta['device']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
