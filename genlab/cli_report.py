"""The CLI's ``report`` command: the trade-offs of stored runs as one self-contained HTML file."""

from __future__ import annotations

import argparse
import sys

from genlab.cli_output import print_json
from genlab.runs import RunStore


def cmd_report(args: argparse.Namespace) -> int:
    from genlab.report import report_runs, summary_line, write_report

    store = RunStore()
    runs = report_runs(store, run_ids=args.runs, dataset=args.dataset)
    path = write_report(runs, args.out)
    if args.json:
        print_json({"out": str(path), "runs": [r.id for r in runs],
                    "datasets": sorted({r.dataset for r in runs})})
    else:
        print(summary_line(runs, path), file=sys.stderr)
    return 0


def add_report_parser(sub) -> None:
    """The ``report`` subcommand, on the ``genlab`` subparsers ``sub``."""
    r = sub.add_parser(
        "report",
        help="the trade-offs of stored runs as one self-contained HTML file",
        description="Write the Trade-offs figures (Pareto view, curves against ε, scatter "
        "matrix, parallel coordinates), the runs table and how each figure was measured into "
        "one HTML file that opens offline. fd is measured in the reference classifier's "
        "features, not Inception.",
    )
    r.add_argument("--runs", nargs="+", metavar="ID",
                   help="these runs (ids or unique prefixes; default: every finished run with a "
                        "record)")
    r.add_argument("--dataset", help="only runs on this dataset")
    r.add_argument("--out", required=True, help="the HTML file to write, e.g. report.html")
    r.add_argument("--json", action="store_true", help="print one JSON object")
    r.set_defaults(func=cmd_report)
