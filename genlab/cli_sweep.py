"""The CLI's ``sweep`` command: a grid of runs trained and evaluated by the local workers or
on Ray (``--executor ray``, :mod:`genlab.ray_executor`)."""

from __future__ import annotations

import argparse
import math
import sys

from genlab.cli_output import print_json, run_json
from genlab.config import parse_set_options
from genlab.errors import ConfigError
from genlab.runs import RunStore
from genlab.sweep import (
    DEFAULT_LIMIT,
    SweepItem,
    SweepSpec,
    failures,
    parse_epsilons,
    parse_models,
    parse_seeds,
    run_sweep,
)


def add_sweep_parser(sub) -> None:
    """Add ``genlab sweep`` to the command's subparsers."""
    s = sub.add_parser(
        "sweep",
        help="train and evaluate a grid of runs (models × ε × seeds)",
        description="Train every model at every ε and seed, each run evaluated on all three "
        "axes by a background worker. Runs that are already done are reused, failed ones are "
        "retried in place, so running the same sweep again only does what is missing. "
        "Exits 1 when a run failed (the others are kept).",
    )
    s.add_argument("--dataset", default="digits", help="digits, mnist5k, sprites or a path")
    s.add_argument("--models", required=True, help="comma-separated, e.g. vae,mixture")
    s.add_argument("--epsilons", default="inf",
                   help="comma-separated DP budgets; inf means no DP (default: inf)")
    s.add_argument("--seeds", default="0", help="comma-separated, e.g. 0,1,2 (default: 0)")
    s.add_argument("--epochs", type=int, default=None,
                   help="epochs of every run (default: each model's own for the dataset)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a setting for every run (a model setting, lr or batch_size)")
    s.add_argument("--jobs", type=int, default=None,
                   help="runs in flight at once (default: GENLAB_JOBS_PER_DEVICE, 1; with "
                   "--executor ray, twice the cluster's CPUs)")
    s.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: background workers on this machine (default); ray: one Ray "
                   "task per run, results written here (pip install 'genlab[ray]')")
    s.add_argument("--ray-address", metavar="ADDR",
                   help="the Ray cluster to use (auto, HOST:PORT or ray://HOST:PORT); "
                   "default: start a local Ray instance")
    s.add_argument("--ray-retries", type=int, default=0, metavar="N",
                   help="rerun a run whose Ray worker died up to N times (default 0: failed)")
    s.add_argument("--max-runs", type=int, default=DEFAULT_LIMIT,
                   help=f"refuse a grid with more runs than this (default {DEFAULT_LIMIT})")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_sweep)


def spec_from_args(args: argparse.Namespace) -> SweepSpec:
    """The sweep the command line describes; ConfigError for a bad value."""
    return SweepSpec(
        dataset=args.dataset,
        models=parse_models(args.models),
        epsilons=parse_epsilons(args.epsilons),
        seeds=parse_seeds(args.seeds),
        epochs=args.epochs,
        overrides=tuple(parse_set_options(args.set).items()),
        limit=args.max_runs,
    )


def cmd_sweep(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    if args.executor != "ray" and (args.ray_address or args.ray_retries):
        option = "--ray-address" if args.ray_address else "--ray-retries"
        raise ConfigError(f"{option} only applies with --executor ray")
    store = RunStore()
    bar = None
    if not args.quiet:
        from tqdm.auto import tqdm

        bar = tqdm(total=spec.size, desc="sweep", unit="run", file=sys.stderr, disable=None,
                   dynamic_ncols=True)

    def on_progress(settled: int, total: int, item: SweepItem) -> None:
        if bar is not None:
            bar.update(settled - bar.n)
            bar.set_postfix_str(f"{item.run_id} {item.state}")

    try:
        if args.executor == "ray":
            from genlab.ray_executor import run_ray_sweep

            run_ids = run_ray_sweep(store, spec, on_progress=on_progress, jobs=args.jobs,
                                    address=args.ray_address, retries=args.ray_retries)
        else:
            run_ids = run_sweep(store, spec, on_progress=on_progress, jobs=args.jobs)
    finally:
        if bar is not None:
            bar.close()
    failed = failures(store, run_ids)
    runs = [store.get(run_id) for run_id in run_ids]
    if args.json:
        print_json({"runs": [run_json(info) for info in runs], "sweep": spec.to_dict(),
                    "failed": failed})
        return 1 if failed else 0
    print(f"{'run':<28} {'ε':>6} {'seed':>4} {'status':<9} {'fd':>8} {'interp':>7} {'mia auc':>8}")
    for info in runs:
        eps = (info.config.get("privacy") or {}).get("epsilon")
        rec = info.record
        print(
            f"{info.id:<28} {'∞' if eps is None else f'{eps:g}':>6} "
            f"{info.config['train']['seed']:>4} {info.status:<9} "
            f"{_num(rec.get('performance', {}).get('fd')):>8} "
            f"{_num(rec.get('interpretability', {}).get('score')):>7} "
            f"{_num(rec.get('privacy', {}).get('mia_auc')):>8}"
        )
    for f in failed:
        print(f"failed: {f['run_id']} ({f['status']}): {f['error']}", file=sys.stderr)
    print(f"{len(runs) - len(failed)} of {len(runs)} runs done; fd is measured in genlab's "
          "reference classifier features, not Inception")
    return 1 if failed else 0


def _num(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.3g}"
