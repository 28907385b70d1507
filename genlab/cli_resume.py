"""The CLI's ``runs resume`` command: continue a failed, killed or cancelled run from its last
checkpoint (:mod:`genlab.resume`), in the foreground like ``genlab train``."""

from __future__ import annotations

import argparse

from genlab.cli_output import loss_unit, print_json, run_json
from genlab.runs import RunStore


def add_resume_parser(runs_sub) -> None:
    """Add ``genlab runs resume`` to the ``runs`` subcommands."""
    p = runs_sub.add_parser(
        "resume",
        help="continue a failed, killed or cancelled run from its last checkpoint",
        description="Train a run that stopped early on from the checkpoint its last finished "
        "epoch left: weights, optimizer, random states and, for DP runs, the privacy "
        "accountant, so the result (ε included) is the one an uninterrupted run gives.",
    )
    p.add_argument("run", help="a run id or a unique prefix of one")
    p.add_argument("--evaluate", action="store_true",
                   help="then fill the whole record (performance, interpretability, the "
                   "membership audit, cost), as a sweep does")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_resume)


def cmd_resume(args: argparse.Namespace) -> int:
    from genlab.progress import ProgressBar
    from genlab.resume import resume_run

    store = RunStore()
    callbacks = [] if args.quiet else [ProgressBar(desc=f"resume {args.run}")]
    run_id, result = resume_run(store, args.run, callbacks=callbacks)
    if args.evaluate:
        from genlab.evaluate import evaluate_run

        evaluate_run(store, run_id)
    info = store.get(run_id)
    if args.json:
        print_json(run_json(info))
        return 0
    eps = (result.privacy or {}).get("epsilon")
    print(f"{run_id}: resumed and finished {result.epochs} epochs on {result.device}; "
          f"test loss {result.test_loss:.2f} {loss_unit(info)}"
          + ("" if eps is None else f"; ε = {eps:.4g} at δ = {result.privacy['delta']:g}"))
    return 0
