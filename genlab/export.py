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


# ----------------------------------------------------------------------------- reading back
_RUN_DEFAULTS = {"status": "finished", "config": {}, "record": {}, "summary": {}, "error": None,
                 "owner": None, "created": 0.0, "updated": 0.0, "started": None,
                 "finished": None, "progress": 1.0, "pid": None, "cancel_requested": False,
                 "config_hash": None}


def run_from_json(obj: dict) -> RunInfo:
    """A :class:`RunInfo` from one exported run: a ``genlab runs export --format json`` entry
    (``id`` and every field) or a ``--json`` run object (``run_id``, model, dataset, config,
    summary, record); missing fields get neutral defaults (finished, created at 0).

    Raises:
        StoreError: not a run object (no id, model or dataset).
    """
    if not isinstance(obj, dict):
        raise StoreError(f"a run must be a JSON object (got {type(obj).__name__})")
    known = RunInfo.__dataclass_fields__
    values = {**_RUN_DEFAULTS, **{k: v for k, v in obj.items() if k in known}}
    values["id"] = obj.get("id", obj.get("run_id"))
    missing = [k for k in ("id", "model", "dataset") if not values.get(k)]
    if missing:
        raise StoreError(f"a run object lacks {', '.join(missing)} (keys: {', '.join(obj)})")
    for name in ("config", "record", "summary"):
        values[name] = values[name] or {}
    return RunInfo(**values)


def read_records(text: str) -> tuple[dict, list[RunInfo]]:
    """``(meta, runs)`` from a records file's text: ``{"meta": {...}, "runs": [run objects]}``
    (the demo format), ``{"runs": [...]}`` (``genlab runs list --json``) or a bare array (``genlab
    runs export --format json``).

    Raises:
        StoreError: not JSON, or not one of those shapes.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise StoreError(f"the records are not valid JSON: {err}") from None
    if isinstance(data, list):
        data = {"runs": data}
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise StoreError('records must be {"meta": {...}, "runs": [...]} or a list of runs')
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    return meta, [run_from_json(obj) for obj in data["runs"]]
