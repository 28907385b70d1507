"""The HTML trade-offs report (``genlab report``, and the Trade-offs page's download).

One self-contained file: plotly.js is embedded once in the head and the page loads nothing from a
network (no ``<script src>``, no stylesheet links), so it opens offline and can be mailed around.
It holds the title and date, the genlab and torch versions and the devices the runs trained on,
per dataset the Trade-offs figures (:mod:`genlab.tradeoff_plots`), the runs table, and "How each
figure was measured", written from the records themselves (the accountant and δ they name, the
audit's sizes).
"""

from __future__ import annotations

import html
import importlib.metadata
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path

import pandas as pd
import plotly
import plotly.graph_objects as go

import genlab
from genlab.errors import GenlabError
from genlab.fidelity import FD_NOTE
from genlab.runs import RunInfo, RunStore
from genlab.tradeoff_plots import (
    epsilon_curves_figure,
    parallel_figure,
    pareto_figure,
    scatter_matrix_figure,
)
from genlab.tradeoffs import format_epsilon, runs_frame, seed_summary

TABLE_COLUMNS = {  # runs table: column -> heading
    "id": "run", "model": "model", "dataset": "dataset", "seed": "seed", "epsilon": "ε",
    "performance.cas": "CAS", "performance.fd": "FD", "interpretability.score": "interp. score",
    "privacy.mia_auc": "attack AUC", "privacy.mia_tpr_at_1pct_fpr": "TPR@1%FPR",
    "privacy.epsilon_lower_bound": "empirical ε ≥", "cost.train_seconds": "train s",
    "efficiency.size_bytes": "bytes", "derived": "made by", "parent": "from",
}
_PLOT_CONFIG = {"displaylogo": False, "responsive": True}
_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } .meta { color: #555; } .demo { background: #fff4d6;
     border-left: 4px solid #f2a541; padding: 0.6em 1em; }
table { border-collapse: collapse; font-size: 0.9em; } th, td { padding: 3px 8px;
        border-bottom: 1px solid #ddd; text-align: right; } th { background: #f3f4f8; }
td:first-child, th:first-child { text-align: left; font-family: monospace; }
.figure { margin: 1.5em 0; } dt { font-weight: 600; margin-top: 0.8em; }
"""


class ReportError(GenlabError):
    """The report cannot be made: no runs to show, or the output cannot be written."""


def report_runs(store: RunStore, *, run_ids: Sequence[str] | None = None,
                dataset: str | None = None) -> list[RunInfo]:
    """The runs a report shows: the given ids (unique prefixes work), else every finished run
    with a record; ``dataset`` narrows either.

    Raises:
        RunNotFound: an id matches no run.
        ReportError: a given run has not finished, or nothing is left to report.
    """
    if run_ids:
        runs = [store.get(run_id) for run_id in run_ids]
        unfinished = [r for r in runs if r.status != "finished"]
        if unfinished:
            r = unfinished[0]
            raise ReportError(f"run {r.id} is {r.status}; a report shows finished runs only")
        runs = list({r.id: r for r in runs}.values())
    else:
        runs = [r for r in store.list(status="finished") if r.record]
    if dataset is not None:
        runs = [r for r in runs if r.dataset == dataset]
    if not runs:
        where = f" on dataset '{dataset}'" if dataset else ""
        raise ReportError(f"no finished runs with a record{where} to report; train some with "
                          "`genlab train --evaluate` (or `genlab sweep`)")
    return runs


# ----------------------------------------------------------------------------- notes
def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def measurement_notes(runs: Iterable[RunInfo]) -> list[tuple[str, str]]:
    """``(heading, HTML text)`` pairs saying how each figure's numbers were measured, with the
    accountants, δ and audit sizes taken from the runs' records."""
    runs = list(runs)
    privacy = [r.record.get("privacy") or {} for r in runs]
    accountants = Counter((p.get("accountant"), p.get("delta")) for r, p in zip(runs, privacy)
                          if r.config.get("privacy") and p.get("epsilon") is not None)
    fallbacks = sum(1 for p in privacy if p.get("accountant_fallback"))
    audits = Counter((p["audit"].get("n_members"), p["audit"].get("n_nonmembers"),
                      p["audit"].get("confidence")) for p in privacy if p.get("audit"))
    attacks = Counter(name for p in privacy for name in p.get("attacks", {}))
    spaces = sorted({str((r.record.get("performance") or {}).get("feature_space"))
                     for r in runs if r.record.get("performance")})
    used = "; ".join(f"{(acc or '?').upper()} accountant at δ = {delta:g} "
                     f"({_count(n, 'run')})" for (acc, delta), n in sorted(
                         accountants.items(), key=lambda kv: str(kv[0])))
    eps = (f"ε comes from Opacus's privacy accountant, as recorded by each DP run: "
           f"{html.escape(used or 'no DP run in this report')}. ")
    if fallbacks:
        eps += (f"For {_count(fallbacks, 'run')} PRV could not answer and the RDP accountant "
                "(looser, still valid) gave ε. ")
    eps += ("A run trained without DP has no guarantee: ε = ∞, drawn as “∞ (no DP)” past a "
            "break at the right of the ε axis.")
    sizes = "; ".join(f"{m} members and {n} non-members at {c:.0%} confidence"
                      f" ({_count(k, 'run')})" for (m, n, c), k in audits.items()) or "no audits"
    attack_names = ", ".join(sorted(attacks)) or "none"
    return [
        ("Points and error bars",
         "Each point is a group of runs whose configs differ only by their seeds; it sits at the "
         "mean over those seeds, and its error bars reach one standard deviation (ddof = 1) each "
         "way. A group with one seed has no error bar. Ringed points are Pareto-optimal: no "
         "other group is at least as good on both axes and better on one."),
        ("Performance: FD, PRDC, CAS, NLL",
         f"{html.escape(FD_NOTE)} <b>FD is not Inception FID</b>: it is the Fréchet distance in "
         f"the penultimate-layer features of genlab's reference classifier (a small CNN trained "
         f"on the dataset's train split; feature space {html.escape(', '.join(spaces) or '?')}). "
         "Precision, recall, density and coverage (PRDC, Naeem et al. 2020, k = 5) use the same "
         "features. CAS is the accuracy on real test images of a classifier trained only on "
         "generated samples. NLL is the test negative log-likelihood in bits per dimension (the "
         "ELBO bound for VAEs)."),
        ("Privacy: the formal ε", eps),
        ("Privacy: the membership attack",
         "The members are a random subset of the train split, as large as the holdout split; "
         "the non-members are the holdout split, which no model trains on "
         f"({html.escape(sizes)}). Attacks run: {html.escape(attack_names)}. The <b>LOSS "
         "attack</b> puts one global threshold on the model's membership score score(x) (the "
         "negative ELBO, the NLL or the discriminator logit). The <b>reference-calibrated "
         "attack</b> subtracts the score of a reference model with the same config trained on "
         "disjoint data. The headline AUC and TPR at 1% FPR come from the stronger attack. "
         "The <b>empirical ε lower bound</b> turns the attack's TPR and FPR, each replaced by "
         "its Clopper-Pearson confidence end, into a bound that holds with 95% confidence "
         "(Bonferroni-split across the attacks; the threshold is chosen on one half of the "
         "data and evaluated on the other). It must never exceed the accountant's ε. The DCR "
         "ratio is the median distance of generated samples to their closest train image "
         "divided by that to the closest holdout image; below 1 hints at memorisation."),
        ("Interpretability",
         "Faithfulness is a deletion test for Integrated Gradients (removing the top-attributed "
         "pixels against random ones; 0.5 = no better than random); stability is "
         "1 / (1 + Captum's sensitivity_max); MIG is the mutual information gap against the "
         "known factors or the class label; the score is the mean of the available components, "
         "all in [0, 1] with higher better."),
        ("Cost",
         "Training time is wall-clock seconds on the run's device; sampling speed is the best "
         "of three timed batches of 256 images."),
    ]


# ----------------------------------------------------------------------------- the page
def _versions(runs: list[RunInfo]) -> str:
    try:
        torch = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch = "not installed"
    devices = Counter(str((r.record.get("cost") or {}).get("device") or r.summary.get("device")
                          or "unknown") for r in runs)
    on = ", ".join(f"{d} ({_count(n, 'run')})" for d, n in devices.most_common())
    return (f"genlab {genlab.__version__} · torch {torch} · plotly {plotly.__version__} · "
            f"runs trained on: {on}")


def _figure_html(fig: go.Figure) -> str:
    return ('<div class="figure">' + fig.to_html(full_html=False, include_plotlyjs=False,
                                                 config=_PLOT_CONFIG) + "</div>")


def runs_table_html(runs: list[RunInfo]) -> str:
    """The runs as an HTML table: id, model, dataset, seed, ε and the headline metrics."""
    frame = runs_frame(runs)[list(TABLE_COLUMNS)].sort_values(["dataset", "model", "epsilon"])
    frame["epsilon"] = frame["epsilon"].map(format_epsilon)
    shown = frame.rename(columns=TABLE_COLUMNS)
    formatters = {c: (lambda v: "—" if pd.isna(v) else f"{v:.3g}")
                  for c in shown.columns if shown[c].dtype.kind == "f"}
    return shown.to_html(index=False, escape=True, formatters=formatters, na_rep="—",
                         border=0)


def build_report(runs: Sequence[RunInfo], *, title: str = "genlab trade-offs report",
                 meta: dict | None = None, now: datetime | None = None) -> str:
    """The report as one self-contained HTML page.

    Args:
        runs: The runs to show (one section of figures per dataset).
        title: The page's title.
        meta: For demo records: ``device`` and ``date`` they were computed on, shown in a banner.
        now: The report's date (default: now).

    Raises:
        ReportError: no runs.
    """
    runs = list(runs)
    if not runs:
        raise ReportError("no runs to report")
    date = (now or datetime.now()).strftime("%Y-%m-%d %H:%M")
    parts = [f"<h1>{html.escape(title)}</h1>",
             f'<p class="meta">Made {date} · {html.escape(_versions(runs))} · '
             f"{_count(len(runs), 'run')}</p>"]
    if meta:
        parts.append(f'<p class="demo">Demo data computed on {html.escape(str(meta.get("device")))}'
                     f' on {html.escape(str(meta.get("date")))}.</p>')
    frame = runs_frame(runs)
    for dataset in sorted(frame["dataset"].unique()):
        summary = seed_summary(frame[frame["dataset"] == dataset])
        parts.append(f"<h2>{html.escape(dataset)}: {_count(len(summary), 'group')} of runs</h2>")
        for fig in (pareto_figure(summary), epsilon_curves_figure(summary),
                    scatter_matrix_figure(summary), parallel_figure(summary)):
            parts.append(_figure_html(fig))
    parts += ["<h2>The runs</h2>", runs_table_html(runs), "<h2>How each figure was measured</h2>",
              "<dl>" + "".join(f"<dt>{html.escape(h)}</dt><dd>{text}</dd>"
                               for h, text in measurement_notes(runs)) + "</dl>"]
    plotly_js = plotly.offline.get_plotlyjs()
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style>"
            f'<script type="text/javascript">{plotly_js}</script></head>\n<body>\n'
            + "\n".join(parts) + "\n</body></html>\n")


def write_report(runs: Sequence[RunInfo], out: str | Path, **options) -> Path:
    """Write :func:`build_report` to ``out`` and return its path.

    Raises:
        ReportError: no runs, or ``out`` cannot be written (a folder, a missing folder, no
            permission).
    """
    path = Path(out)
    text = build_report(runs, **options)
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as err:
        raise ReportError(f"cannot write the report to {path}: {err.strerror or err}") from None
    return path


def summary_line(runs: Sequence[RunInfo], path: Path) -> str:
    """What ``genlab report`` prints: where the report went and what it holds."""
    datasets = sorted({r.dataset for r in runs})
    eps = sorted({e for e in runs_frame(runs)["epsilon"] if not math.isnan(e)})
    return (f"wrote {path}: {_count(len(runs), 'run')} on {', '.join(datasets)} "
            f"(ε: {', '.join(format_epsilon(e) for e in eps)})")
