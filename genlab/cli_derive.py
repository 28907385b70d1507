"""The CLI's ``compress`` and ``fuse`` commands: new runs made from finished ones.

Each makes a new run linked to its parents (:mod:`genlab.lineage`) and then evaluates it on all
three axes plus efficiency, like ``genlab evaluate`` (``--no-evaluate`` skips that). ``--json``
prints the new run in the DESIGN.md shape, its ``lineage`` block included.
"""

from __future__ import annotations

import argparse

from genlab.cli_output import loss_unit, print_json, run_json
from genlab.runs import RunStore


def _evaluate(store: RunStore, run_id: str, args: argparse.Namespace) -> None:
    if args.no_evaluate:
        return
    from genlab.evaluate import evaluate_run

    evaluate_run(store, run_id, reference=not args.no_reference)


def _size(info) -> str:
    eff = info.record.get("efficiency") or {}
    if not eff:
        return "not evaluated"
    return (f"{eff['size_bytes']:,} bytes, {eff['params_nonzero']:,} of {eff['params_total']:,} "
            f"parameters nonzero, {eff['sample_seconds'] * 1000:.1f} ms for {eff['sample_n']} "
            "samples")


def _epsilon(info) -> str:
    eps = (info.record.get("privacy") or {}).get("epsilon")
    return "∞ (no DP)" if eps is None else f"{eps:.4g}"


def cmd_compress(args: argparse.Namespace) -> int:
    from genlab.compress import compress_run, parse_method

    parse_method(args.method)  # a bad method is one line, before the run is even looked up
    store = RunStore()
    new_id = compress_run(store, store.get(args.run).id, args.method)
    _evaluate(store, new_id, args)
    info = store.get(new_id)
    if args.json:
        print_json(run_json(info))
        return 0
    s = info.summary
    print(f"{new_id}: {info.record['lineage']['spec']} of {info.record['lineage']['parents'][0]}; "
          f"test loss {s['test_loss']:.2f} (parent {s['parent_test_loss']:.2f}) "
          f"{loss_unit(info)}; "
          f"ε {_epsilon(info)}")
    details = info.record["lineage"]["details"]
    if "quantized" in details:  # say what is int8 and what stayed float
        q = details["quantized"]
        floats = ", ".join(f"{kind} {n:,}" for kind, n in details["float32"].items())
        print(f"  int8: {len(q['layers'])} Linear layers ({q['weights']:,} weights); "
              f"float32: {floats or 'nothing'}")
    elif "float16_layers" in details:
        rounded = details["rounded_only"]
        print(f"  float16: {len(details['float16_layers'])} layers"
              + (f"; rounded to float16 only: {', '.join(rounded)}" if rounded else ""))
    print(f"  efficiency: {_size(info)}")
    return 0


def cmd_fuse(args: argparse.Namespace) -> int:
    from genlab.fusion import METHODS, fuse_runs

    if args.method not in METHODS:  # one line before any run is looked up
        from genlab.errors import ConfigError

        raise ConfigError(f"unknown fusion method {args.method!r}; use {' or '.join(METHODS)}")
    store = RunStore()
    new_id = fuse_runs(store, [store.get(r).id for r in args.runs], args.method)
    _evaluate(store, new_id, args)
    info = store.get(new_id)
    if args.json:
        print_json(run_json(info))
        return 0
    note = info.record["privacy"]["composition"]["note"]
    print(f"{new_id}: {args.method} of {', '.join(info.record['lineage']['parents'])}; test loss "
          f"{info.summary['test_loss']:.2f} {loss_unit(info)}; ε {_epsilon(info)} "
          f"({note})")
    print(f"  efficiency: {_size(info)}")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-evaluate", action="store_true",
                   help="only make the run; evaluate it later with genlab evaluate")
    p.add_argument("--no-reference", action="store_true",
                   help="audit with the global-threshold attack only (no reference model)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def add_derive_parsers(sub) -> None:
    """Add ``compress`` and ``fuse`` to the ``genlab`` subcommands."""
    c = sub.add_parser(
        "compress", help="prune, quantize (int8) or halve (fp16) a finished run into a new run",
        description="Make a compressed copy of a finished run as a new run linked to it, then "
        "evaluate it. prune:S zeroes the fraction S of smallest weights in every conv and "
        "Linear layer; int8 quantizes the Linear layers (torch.ao dynamic quantization); fp16 "
        "stores and computes in half precision. The formal ε is the parent's "
        "(post-processing).")
    c.add_argument("run", help="a run id or a unique prefix of one")
    c.add_argument("--method", required=True, help="prune:S (0 < S < 1), int8 or fp16")
    _common(c)
    c.set_defaults(func=cmd_compress)

    f = sub.add_parser(
        "fuse", help="average or ensemble finished runs of one architecture into a new run",
        description="Fuse runs of the same model, model settings and data split into a new run, "
        "then evaluate it. average: the mean of their weights; ensemble: a uniform mixture "
        "that draws each image from a random member. ε composes: the sum over the trained "
        "runs (Dwork & Roth 2014, Thm 3.16), ∞ if any has no DP.")
    f.add_argument("runs", nargs="+", help="two or more run ids (or unique prefixes)")
    f.add_argument("--method", required=True, help="average or ensemble")
    _common(f)
    f.set_defaults(func=cmd_fuse)
