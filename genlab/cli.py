"""The ``genlab`` command line: train, inspect and export runs.

With ``--json`` a command prints one JSON object on stdout (shapes in DESIGN.md). Bad input prints
one line on stderr and exits with status 2; nothing in the store is lost.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from genlab.cli_axes import cmd_audit, cmd_budget, cmd_explain
from genlab.cli_derive import add_derive_parsers
from genlab.cli_output import loss_unit, print_json, run_json
from genlab.cli_report import add_report_parser
from genlab.cli_resume import add_resume_parser
from genlab.cli_sweep import add_sweep_parser
from genlab.config import ACCOUNTANTS, DEVICES, make_run_config, parse_set_options
from genlab.errors import ConfigError, GenlabError
from genlab.fidelity import FD_NOTE
from genlab.runs import RunStore

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, like every other genlab error."""

    def error(self, message: str):  # noqa: D102
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _privacy_settings(args: argparse.Namespace) -> dict[str, Any] | None:
    """The PrivacyConfig fields from ``--dp`` and its options; ``None`` without DP."""
    given = {
        "epsilon": args.epsilon,
        "noise_multiplier": args.noise_multiplier,
        "delta": args.delta,
        "max_grad_norm": args.max_grad_norm,
        "accountant": args.accountant,
    }
    given = {k: v for k, v in given.items() if v is not None}
    if not args.dp and not given:
        return None
    if not args.dp and not {"epsilon", "noise_multiplier"} & set(given):
        option = "--" + next(iter(given)).replace("_", "-")
        raise ConfigError(f"{option} only applies to a DP run; add --dp --epsilon E")
    return given


# ----------------------------------------------------------------------------- commands
def cmd_train(args: argparse.Namespace) -> int:
    from genlab.jobs import execute_run
    from genlab.progress import ProgressBar
    from genlab.train import check_run

    cfg = make_run_config(
        args.model,
        args.dataset,
        epochs=args.epochs,
        seed=args.seed,
        data_seed=args.data_seed,
        device=args.device,
        overrides=parse_set_options(args.set),
        privacy=_privacy_settings(args),
        fast_path=args.fast_path,
    )
    check_run(cfg)  # bad data or settings fail here, before a run is recorded
    store = RunStore()
    run_id = store.create_run(
        model=cfg.model, dataset=cfg.data.name, config=cfg.to_dict(), config_hash=cfg.config_hash()
    )
    callbacks = [] if args.quiet else [ProgressBar(desc=run_id)]
    execute_run(store, run_id, callbacks=callbacks)
    if args.evaluate:
        from genlab.evaluate import evaluate_run

        evaluate_run(store, run_id)
    info = store.get(run_id)
    if args.json:
        print_json(run_json(info))
    else:
        s = info.summary
        print(
            f"{run_id}: {s['epochs']} epochs on {s['device']} in {s['train_seconds']:.1f} s; "
            f"train loss {s['train_loss']:.2f}, test loss {s['test_loss']:.2f} "
            f"{loss_unit(info)}"
        )
        print(f"artifacts: {store.artifacts_dir(run_id)}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from genlab.evaluate import evaluate_run

    store = RunStore()
    run_id = store.get(args.run).id
    record = evaluate_run(store, run_id, reference=not args.no_reference)
    if args.json:
        print_json(run_json(store.get(run_id)))
    else:
        for block, values in record.items():
            print(f"{block}:")
            for key, value in values.items():
                shown = f"{value:.4g}" if isinstance(value, float) else value
                print(f"  {key:<20} {shown}")
        print(FD_NOTE)
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    store = RunStore()
    if args.runs_cmd == "list":
        runs = store.list(status=args.status, model=args.model, dataset=args.dataset)
        if args.json:
            print_json({"runs": [run_json(r) for r in runs]})
        elif not runs:
            print("no runs yet; start one with: genlab train --dataset digits --model vae")
        else:
            print(f"{'run':<28} {'status':<10} {'epochs':>6} {'test loss':>10}  created")
            for r in runs:
                test = r.summary.get("test_loss")
                created = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created))
                print(
                    f"{r.id:<28} {r.status:<10} {r.config.get('train', {}).get('epochs', ''):>6} "
                    f"{'' if test is None else f'{test:.2f}':>10}  {created}"
                )
    elif args.runs_cmd == "show":
        info = store.get(args.run)
        out = {**run_json(info), "history": store.history(info.id)}
        if args.json:
            print_json(out)
        else:
            print(json.dumps(out, indent=2, default=float))
    elif args.runs_cmd == "export":
        text = store.export(args.format)
        if args.out:
            with open(args.out, "w", encoding="utf-8") as fh:
                fh.write(text)
            print(f"wrote {len(store.list())} runs to {args.out}", file=sys.stderr)
        else:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
    elif args.runs_cmd == "delete":
        info = store.get(args.run)
        store.delete(info.id)
        if args.json:
            print_json({"deleted": info.id})
        else:
            print(f"deleted {info.id}")
    return 0


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from genlab.data import DATASETS
    from genlab.models import model_names

    p = _Parser(prog="genlab", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a model and store the run")
    t.add_argument(
        "--dataset",
        default="digits",
        help=f"{', '.join(DATASETS)}, or a path to a .npz file or an IDX folder",
    )
    t.add_argument("--model", default="vae", help=f"one of: {', '.join(model_names())}")
    t.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="passes over the train split (default: the model's own for the dataset)",
    )
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--data-seed", type=int, default=None,
                   help="the split's seed, if not --seed: runs that differ only in --seed can "
                   "then share their members (as genlab fuse needs)")
    t.add_argument("--device", default="auto", choices=DEVICES)
    t.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="a model setting (e.g. latent_dim=8, beta=4) or lr / batch_size",
    )
    t.add_argument(
        "--evaluate",
        action="store_true",
        help="fill the record's performance and cost blocks after training (fd is measured in "
        "the reference classifier's features, not Inception)",
    )
    t.add_argument(
        "--no-fast-path",
        dest="fast_path",
        action="store_false",
        help="train with the plain loop: no fused optimizer, CUDA graph, thread fitting or "
        "one-pass DP step (same settings and ε, slower)",
    )
    t.add_argument("--json", action="store_true", help="print one JSON object")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    dp = t.add_argument_group(
        "differential privacy", "DP-SGD with Opacus; --epsilon or --noise-multiplier turns it on"
    )
    dp.add_argument("--dp", action="store_true", help="train with DP-SGD")
    dp.add_argument("--epsilon", type=float, help="target ε the run ends at (smaller: private)")
    dp.add_argument("--noise-multiplier", type=float, help="σ instead of a target ε")
    dp.add_argument("--delta", type=float, help="δ, below 1/N (default 1e-5)")
    dp.add_argument("--max-grad-norm", type=float, help="per-image clipping norm C (default 1)")
    dp.add_argument("--accountant", choices=ACCOUNTANTS, help="prv (default) or rdp")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser(
        "evaluate",
        help="fill a finished run's record (performance, interpretability, privacy audit, cost)",
        description="Compute a finished run's record. " + FD_NOTE,
    )
    e.add_argument("run", help="a run id or a unique prefix of one")
    e.add_argument("--no-reference", action="store_true",
                   help="audit with the global-threshold attack only (no reference model)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=cmd_evaluate)

    a = sub.add_parser(
        "audit",
        help="membership-inference audit of a finished run",
        description="Attack a finished run: can its scores tell members from non-members? "
        "Reports AUC, TPR at low FPR, an empirical lower bound on ε and the DCR ratio.",
    )
    a.add_argument("run", help="a run id or a unique prefix of one")
    a.add_argument(
        "--no-reference",
        action="store_true",
        help="skip the reference-calibrated attack (it trains a second model)",
    )
    a.add_argument("--json", action="store_true", help="print one JSON object")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    a.set_defaults(func=cmd_audit)

    x = sub.add_parser(
        "explain",
        help="attribution heatmaps of a finished run as a PNG",
        description="Explain a finished run with Captum: test images beside their attributions "
        "(red raises the target, blue lowers it).",
    )
    x.add_argument("run", help="a run id or a unique prefix of one")
    x.add_argument(
        "--method",
        default="ig",
        help="ig (Integrated Gradients), saliency, gradshap, deeplift, occlusion or smoothgrad",
    )
    x.add_argument(
        "--target",
        default="default",
        help="default (the model's own: elbo, logit or loglik), latent:K, decoder:REGION, "
        "generator:REGION or component:K; REGION is center, top, bottom, left, right, all "
        "or r0:r1,c0:c1",
    )
    x.add_argument("--n", type=int, default=16, help="test images to explain")
    x.add_argument("--steps", type=int, default=32, help="Integrated Gradients steps")
    x.add_argument("--seed", type=int, default=0, help="which images, and the methods' noise")
    x.add_argument("--out", default="explain.png", help="the PNG to write")
    x.add_argument("--json", action="store_true", help="print one JSON object")
    x.set_defaults(func=cmd_explain)

    b = sub.add_parser(
        "budget",
        help="plan a DP budget: σ from ε or ε from σ",
        description="Give either --sigma or --epsilon; the other one comes back, with the "
        "ε-against-epochs curve. q = 1/ceil(N/B), as in training.",
    )
    b.add_argument("--n", type=int, required=True, help="training images N")
    b.add_argument("--batch-size", type=int, required=True, help="expected batch size B")
    b.add_argument("--epochs", type=int, required=True)
    b.add_argument("--sigma", type=float, help="noise multiplier σ")
    b.add_argument("--epsilon", type=float, help="target ε")
    b.add_argument("--delta", type=float, default=1e-5, help="δ, below 1/N (default 1e-5)")
    b.add_argument("--accountant", choices=ACCOUNTANTS, default="prv")
    b.add_argument("--compare", action="store_true", help="also give ε under both accountants")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=cmd_budget)

    add_sweep_parser(sub)

    r = sub.add_parser("runs", help="list, show, export, delete or resume stored runs")
    rs = r.add_subparsers(dest="runs_cmd", required=True, parser_class=_Parser)
    ls = rs.add_parser("list", help="all runs, newest first")
    ls.add_argument("--status")
    ls.add_argument("--model")
    ls.add_argument("--dataset")
    ls.add_argument("--json", action="store_true")
    sh = rs.add_parser("show", help="one run with its history")
    sh.add_argument("run")
    sh.add_argument("--json", action="store_true")
    ex = rs.add_parser("export", help="every run as CSV or JSON")
    ex.add_argument("--format", choices=("csv", "json"), default="json")
    ex.add_argument("--out", help="write to this file instead of stdout")
    de = rs.add_parser("delete", help="delete a run and its artifacts")
    de.add_argument("run")
    de.add_argument("--json", action="store_true")
    add_resume_parser(rs)
    r.set_defaults(func=cmd_runs)

    add_report_parser(sub)
    add_derive_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from genlab.fastpath import training_threads
    from genlab.threads import cpu_threads

    parser = build_parser()
    args = parser.parse_args(argv)
    # the free cores only: two threads on a busy 2-core CPU wait on each other
    with cpu_threads(training_threads()):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        return args.func(args)
    except GenlabError as err:
        print(f"genlab: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("genlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`genlab runs list | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:
        if os.environ.get("GENLAB_DEBUG"):
            raise
        print(
            f"genlab: internal error: {type(err).__name__}: {err} "
            "(set GENLAB_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
