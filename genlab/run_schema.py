"""What a stored run is: its statuses, the SQLite schema of the run store, and :class:`RunInfo`.

:mod:`genlab.runs` holds the store itself; this module holds the shapes it reads and writes, so
code that only looks at runs (pages, exports, the sweep planner) needs no store internals.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path

STATUSES = ("queued", "running", "finished", "failed", "cancelled")
ACTIVE = ("queued", "running")

SCHEMA_VERSION = 1
_JSON_FIELDS = ("config", "record", "summary")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, model TEXT NOT NULL, dataset TEXT NOT NULL, status TEXT NOT NULL,
    config TEXT NOT NULL, record TEXT NOT NULL DEFAULT '{}', summary TEXT NOT NULL DEFAULT '{}',
    error TEXT, owner TEXT, created REAL NOT NULL, updated REAL NOT NULL, started REAL,
    finished REAL, progress REAL NOT NULL DEFAULT 0, pid INTEGER, pid_start INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0, config_hash TEXT);
CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    epoch INTEGER NOT NULL, step INTEGER NOT NULL, time REAL NOT NULL, metrics TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS history_run ON history(run_id, seq);
"""
_HASH_INDEX = "CREATE INDEX IF NOT EXISTS runs_config_hash ON runs(config_hash)"


@dataclass(frozen=True)
class RunInfo:
    """One run as stored: identity, status, config, record and timing."""

    id: str
    model: str
    dataset: str
    status: str
    config: dict
    record: dict
    summary: dict
    error: str | None
    owner: str | None
    created: float
    updated: float
    started: float | None
    finished: float | None
    progress: float
    pid: int | None
    cancel_requested: bool
    config_hash: str | None

    def to_dict(self) -> dict:
        """A JSON-able copy of every field."""
        return asdict(self)

    @classmethod
    def _from_row(cls, row: sqlite3.Row) -> RunInfo:
        values = {name: row[name] for name in cls.__dataclass_fields__}
        values.update({name: json.loads(row[name]) for name in _JSON_FIELDS})
        return cls(**{**values, "cancel_requested": bool(row["cancel_requested"])})


def _slug(name: str) -> str:
    """``data/My-Faces.npz`` -> ``my_faces``: a name safe inside a run id."""
    if "/" in name or "\\" in name or Path(name).suffix:
        name = Path(name.replace("\\", "/")).stem
    return re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_") or "data"
