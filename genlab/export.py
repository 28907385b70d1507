"""Exporting runs as CSV (one flat row per run) or JSON."""

from __future__ import annotations

import csv
import io
import json

from genlab.errors import StoreError
from genlab.runs import RunInfo

_CSV_FIELDS = (
    "id",
    "model",
    "dataset",
    "status",
    "created",
    "updated",
    "started",
    "finished",
    "progress",
    "error",
    "owner",
    "pid",
    "cancel_requested",
    "config_hash",
)


def export_runs(runs: list[RunInfo], fmt: str = "json") -> str:
    """All runs as text: ``"json"`` (an array of run dicts) or ``"csv"`` (one row per run).

    CSV columns are the run fields, then ``config.<key>`` (nested keys joined by dots),
    ``summary.<key>`` and ``<block>.<key>`` for each record block (e.g. ``performance.fd``).
    """
    if fmt not in ("csv", "json"):
        raise StoreError(f"unknown export format '{fmt}'; use csv or json")
    if fmt == "json":
        return json.dumps([run.to_dict() for run in runs], indent=2)
    rows, columns = [], dict.fromkeys(_CSV_FIELDS)
    for run in runs:
        row = {name: getattr(run, name) for name in _CSV_FIELDS}
        row.update(_flatten(run.config, "config."))
        row.update(_flatten(run.summary, "summary."))
        row.update(_flatten(run.record, ""))
        columns.update(dict.fromkeys(row))
        rows.append(row)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _flatten(values: dict, prefix: str) -> dict:
    """``{"a": {"b": 1}, "c": [1]}`` -> ``{"<prefix>a.b": 1, "<prefix>c": "[1]"}``."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, list) else value
    return flat
