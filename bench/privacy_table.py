"""The privacy results table: finished, evaluated runs side by side on the three axes.

Usage::

    .venv/bin/python bench/privacy_table.py --home /path/to/home RUN_ID ... [--note TEXT]

Each run must be finished and evaluated (``genlab evaluate``). The store is only read. Writes
``bench/results/privacy_table.json`` (one row per run, every figure as the record holds it) and
prints the markdown table the README shows: the formal ε, each attack's AUC, the stronger
attack's TPR at 1% FPR, the empirical ε lower bound, ``dcr_ratio``, CAS, FD (in the reference
classifier's features), training time and the interpretability score.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "privacy_table.json"


def row(info) -> dict:
    """The figures of one run's record that the table shows."""
    record = info.record
    privacy, perf = record["privacy"], record["performance"]
    attacks = {name: attack["auc"] for name, attack in (privacy.get("attacks") or {}).items()}
    target = (info.config.get("privacy") or {}).get("epsilon")
    return {
        "run": info.id, "model": info.model, "dataset": info.dataset,
        "seed": info.config["train"]["seed"],
        "epsilon_target": target, "epsilon": privacy.get("epsilon"),
        "delta": privacy.get("delta"), "accountant": privacy.get("accountant"),
        "attack_auc": attacks, "mia_attack": privacy.get("mia_attack"),
        "mia_auc": privacy["mia_auc"], "mia_tpr_at_1pct_fpr": privacy["mia_tpr_at_1pct_fpr"],
        "epsilon_lower_bound": privacy["epsilon_lower_bound"], "dcr_ratio": privacy["dcr_ratio"],
        "cas": perf.get("cas"), "fd": perf.get("fd"),
        "train_seconds": record["cost"]["train_seconds"],
        "interpretability_score": record["interpretability"].get("score"),
        "finished": dt.datetime.fromtimestamp(info.finished, dt.timezone.utc).isoformat()
        if info.finished else None,
    }


def markdown(rows: list[dict]) -> str:
    def num(value, digits=3):
        return "—" if value is None else f"{value:.{digits}f}"

    lines = ["| model | ε | attacks (AUC) | TPR at 1% FPR | ε lower bound | dcr_ratio | CAS | FD "
             "| train s | interp. score |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        eps = "∞" if r["epsilon"] is None else f"{r['epsilon']:.3f}"
        attacks = ", ".join(f"{name} {auc:.3f}" for name, auc in r["attack_auc"].items())
        lines.append(
            f"| `{r['model']}` | {eps} | {attacks} | {num(r['mia_tpr_at_1pct_fpr'])} | "
            f"{num(r['epsilon_lower_bound'], 2)} | {num(r['dcr_ratio'])} | {num(r['cas'])} | "
            f"{num(r['fd'], 1)} | {r['train_seconds']:,.0f} | {num(r['interpretability_score'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run ids (or unique prefixes)")
    parser.add_argument("--home", type=Path, required=True, help="the genlab home holding them")
    parser.add_argument("--note", default="", help="how and where the runs were made")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    from genlab.runs import RunStore

    store = RunStore(args.home, recover=False)
    infos = [store.get(run_id) for run_id in args.runs]
    unready = [i.id for i in infos if i.status != "finished" or "privacy" not in i.record]
    if unready:
        parser.error(f"not finished and evaluated: {', '.join(unready)}")
    rows = sorted(map(row, infos), key=lambda r: (  # per model: no DP first, then ε falling
        r["model"], r["epsilon_target"] is not None, -(r["epsilon_target"] or 0)))
    doc = {"what": __doc__.split("\n\n")[0], "note": args.note, "rows": rows,
           "written": dt.datetime.now(dt.timezone.utc).isoformat(),
           "written_on": platform.platform()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(markdown(rows))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
