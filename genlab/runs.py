"""The run store: one SQLite file (``<home>/genlab.db``) plus one artifact folder per run.

The CLI, background workers and the Streamlit server's threads share the store at once, so each
thread opens its own connection (WAL mode, a busy timeout) and each write is one short
``BEGIN IMMEDIATE`` transaction. sqlite3 failures leave the public methods as a one-line
:class:`~genlab.errors.StoreError`. :meth:`RunStore.recover` fails runs whose worker died, judging
liveness by pid *and* process start time, so a reused pid or an unreaped zombie counts as dead.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from genlab.errors import RunNotFound, StoreError
from genlab.owners import Actor, check_may_modify
from genlab.paths import genlab_home
from genlab.procs import pid_alive, process_stat
from genlab.run_schema import (  # noqa: F401  (re-exported: the store's public shapes)
    _HASH_INDEX,
    _JSON_FIELDS,
    _SCHEMA,
    ACTIVE,
    SCHEMA_VERSION,
    STATUSES,
    RunInfo,
    _slug,
)

_BUSY_TIMEOUT_S = 10.0
_STARTUP_GRACE_S = 30.0  # a queued run without a pid may have a worker that is still starting


def _worker_alive(row: sqlite3.Row, now: float) -> bool:
    """Whether the run's worker lives: its pid exists, started when recorded and is no zombie."""
    if row["pid"] is None:  # a queued run's worker may still be starting
        return row["status"] == "queued" and now - row["created"] < _STARTUP_GRACE_S
    return pid_alive(row["pid"], row["pid_start"])


class RunStore:
    """The runs, their history and artifact folders under one genlab home.

    Args:
        home: The genlab home folder; defaults to :func:`genlab.paths.genlab_home`.
        recover: Mark runs whose worker process died as failed on opening.

    Raises:
        StoreError: The database is corrupt, locked past the timeout, or from a newer genlab.
    """

    def __init__(self, home: str | Path | None = None, *, recover: bool = True) -> None:
        self.home = Path(home).expanduser().resolve() if home is not None else genlab_home()
        self.home.mkdir(parents=True, exist_ok=True)
        self.db_path = self.home / "genlab.db"
        self._local = threading.local()
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                conn.execute("BEGIN IMMEDIATE")  # then re-read: another process may have won
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise StoreError(f"{self.db_path} comes from a newer genlab; upgrade genlab")
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute(_HASH_INDEX)  # added after version 1; a no-op once it exists
        if recover:
            self.recover()

    def _error(self, exc: sqlite3.Error) -> StoreError:
        text, path = str(exc).lower(), self.db_path
        if "locked" in text or "busy" in text:
            return StoreError(f"the run store {path} is locked by another process; try again")
        if "not a database" in text or "malformed" in text or "encrypted" in text:
            return StoreError(
                f"{path} is not a genlab run store (the file is corrupt); "
                "move it aside or point GENLAB_HOME to another folder"
            )
        return StoreError(f"the run store {path} failed: {exc}")

    @contextmanager
    def _connect(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """This thread's own connection; with ``write`` the block is one immediate transaction.

        Not one connection per call: closing the last one checkpoints the WAL (~20 ms a write).
        """
        local = self._local
        try:
            if getattr(local, "pid", None) != os.getpid():  # a new thread, or a forked child
                local.pid = os.getpid()
                local.conn = sqlite3.connect(
                    self.db_path, timeout=_BUSY_TIMEOUT_S, isolation_level=None
                )  # timeout: busy_timeout
                local.conn.row_factory = sqlite3.Row
                local.conn.execute("PRAGMA foreign_keys = ON")
                local.conn.execute("PRAGMA synchronous = NORMAL")  # safe with WAL
            conn = local.conn
            if write:
                conn.execute("BEGIN IMMEDIATE")
            yield conn
            if conn.in_transaction:
                conn.execute("COMMIT")
        except BaseException as exc:
            with suppress(sqlite3.Error, AttributeError):
                local.conn.rollback()
            if isinstance(exc, sqlite3.Error):
                local.pid = None  # reconnect on the next call
                with suppress(sqlite3.Error, AttributeError):
                    local.conn.close()
                raise self._error(exc) from None
            raise

    def _row(self, conn: sqlite3.Connection, run_id: str) -> sqlite3.Row:
        """The row of a full id or a unique prefix of one."""
        row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is not None:
            return row
        rows = conn.execute(
            "SELECT * FROM runs WHERE ? != '' AND substr(id, 1, ?) = ? ORDER BY id LIMIT 5",
            (run_id, len(run_id), run_id),
        ).fetchall()
        if not rows:
            raise RunNotFound(f"unknown run {run_id!r}; `genlab runs list` shows the runs")
        if len(rows) > 1:
            names = ", ".join(r["id"] for r in rows)
            raise StoreError(f"run prefix {run_id!r} is ambiguous ({names}); give more characters")
        return rows[0]

    @staticmethod
    def _set(conn: sqlite3.Connection, full_id: str, **values: object) -> None:
        values["updated"] = time.time()
        columns = ", ".join(f"{name} = ?" for name in values)
        conn.execute(f"UPDATE runs SET {columns} WHERE id = ?", (*values.values(), full_id))

    def _update(self, run_id: str, **values: object) -> None:
        with self._connect(write=True) as conn:
            self._set(conn, self._row(conn, run_id)["id"], **values)

    def artifacts_dir(self, run_id: str) -> Path:
        """The run's artifact folder ``<home>/runs/<run_id>/``, created on demand."""
        if not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*", run_id):
            raise StoreError(f"{run_id!r} is not a run id; `genlab runs list` shows the runs")
        path = self.home / "runs" / run_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def create_run(
        self,
        *,
        model: str,
        dataset: str,
        config: dict,
        owner: str | None = None,
        config_hash: str | None = None,
        status: str = "queued",
    ) -> str:
        """Add a run and return its new id, e.g. ``vae-digits-3fa2c1``.

        Args:
            model: Registry name of the model.
            dataset: Dataset name or path (a path shortens to its basename inside the id).
            config: The full run config, JSON-able.
            owner: Who submitted it (a user or session name).
            config_hash: Hash of the config, to find identical runs.
            status: The first status, one of :data:`STATUSES`.
        """
        if status not in STATUSES:
            raise StoreError(f"unknown run status '{status}'; use one of {', '.join(STATUSES)}")
        now = time.time()
        with self._connect(write=True) as conn:
            run_id, taken = "", "SELECT 1 FROM runs WHERE id = ?"
            while not run_id or conn.execute(taken, (run_id,)).fetchone():
                run_id = f"{_slug(model)}-{_slug(dataset)}-{secrets.token_hex(3)}"
            conn.execute(
                "INSERT INTO runs (id, model, dataset, status, config, owner, created, updated,"
                " config_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, model, dataset, status, json.dumps(config), owner, now, now, config_hash),
            )
        return run_id

    def get(self, run_id: str) -> RunInfo:
        """The run with this id or unique prefix; RunNotFound if none, StoreError if several."""
        with self._connect() as conn:
            return RunInfo._from_row(self._row(conn, run_id))

    def list(
        self,
        *,
        status: str | None = None,
        model: str | None = None,
        dataset: str | None = None,
        limit: int | None = None,
    ) -> list[RunInfo]:
        """Runs matching every given filter, newest first."""
        given = {"status": status, "model": model, "dataset": dataset}
        given = {name: value for name, value in given.items() if value is not None}
        where = "".join(f" AND {name} = ?" for name in given)
        sql = f"SELECT * FROM runs WHERE 1{where} ORDER BY created DESC, rowid DESC LIMIT ?"
        with self._connect() as conn:  # LIMIT -1: no limit
            rows = conn.execute(sql, [*given.values(), -1 if limit is None else limit]).fetchall()
        return [RunInfo._from_row(row) for row in rows]

    def find_by_hash(self, config_hash: str) -> list[RunInfo]:
        """Every run of the config with this :meth:`RunConfig.config_hash`, oldest first."""
        sql = "SELECT * FROM runs WHERE config_hash = ? ORDER BY created, rowid"
        with self._connect() as conn:
            return [RunInfo._from_row(row) for row in conn.execute(sql, (config_hash,))]

    def requeue(self, run_id: str) -> None:
        """Reset a failed or cancelled run to a fresh queued run in place: same id and config,
        no history, record, summary, error, worker or artifacts; ``created`` becomes now, so the
        new worker gets its start-up grace. StoreError for a run in any other status."""
        now = time.time()
        with self._connect(write=True) as conn:
            row = self._row(conn, run_id)
            if row["status"] not in ("failed", "cancelled"):
                raise StoreError(f"run '{row['id']}' is {row['status']}; only a failed or "
                                 "cancelled run can be queued again")
            conn.execute("DELETE FROM history WHERE run_id = ?", (row["id"],))
            self._set(conn, row["id"], status="queued", record="{}", summary="{}", error=None,
                      created=now, started=None, finished=None, progress=0.0, pid=None,
                      pid_start=None, cancel_requested=0)
        shutil.rmtree(self.home / "runs" / row["id"], ignore_errors=True)

    def claim(self, run_id: str, *, pid: int | None = None, started: float | None = None) -> None:
        """Mark an active run running in process ``pid`` (default: this one) since ``started``
        (default: now), else StoreError."""
        pid = os.getpid() if pid is None else pid
        stat = process_stat(pid)
        with self._connect(write=True) as conn:
            row = self._row(conn, run_id)
            if row["status"] not in ACTIVE:
                raise StoreError(f"run '{row['id']}' is {row['status']}; it cannot start again")
            self._set(
                conn,
                row["id"],
                status="running",
                started=time.time() if started is None else started,
                pid=pid,
                pid_start=stat[1] if stat else None,
            )

    def set_pid(self, run_id: str, pid: int) -> None:
        """Record the worker process that owns a queued run."""
        stat = process_stat(pid)
        self._update(run_id, pid=pid, pid_start=stat[1] if stat else None)

    def log(
        self,
        run_id: str,
        *,
        epoch: int,
        step: int,
        metrics: dict[str, float],
        progress: float | None = None,
    ) -> None:
        """Append one history row and, if given, set the progress (0..1)."""
        now = time.time()
        row_metrics = json.dumps({name: float(value) for name, value in metrics.items()})
        with self._connect(write=True) as conn:
            full_id = self._row(conn, run_id)["id"]
            conn.execute(
                "INSERT INTO history (run_id, epoch, step, time, metrics) VALUES (?, ?, ?, ?, ?)",
                (full_id, int(epoch), int(step), now, row_metrics),
            )
            if progress is not None:
                self._set(conn, full_id, progress=min(max(float(progress), 0.0), 1.0))

    def set_progress(self, run_id: str, progress: float) -> None:
        """Set the run's progress (clipped to 0..1) without adding a history row."""
        self._update(run_id, progress=min(max(float(progress), 0.0), 1.0))

    def history(self, run_id: str) -> list[dict]:
        """The run's history rows in order, each ``{"epoch", "step", "time", **metrics}``."""
        with self._connect() as conn:
            full_id = self._row(conn, run_id)["id"]
            sql = "SELECT epoch, step, time, metrics FROM history WHERE run_id = ? ORDER BY seq"
            rows = conn.execute(sql, (full_id,)).fetchall()
        return [{"epoch": r[0], "step": r[1], "time": r[2], **json.loads(r[3])} for r in rows]

    def finish(self, run_id: str, *, summary: dict) -> None:
        """Mark the run finished with its final training figures."""
        self._update(
            run_id,
            status="finished",
            progress=1.0,
            finished=time.time(),
            summary=json.dumps(summary),
        )

    def fail(self, run_id: str, error: str) -> None:
        """Mark the run failed with a one-line error."""
        self._update(run_id, status="failed", error=error, finished=time.time())

    def mark_cancelled(self, run_id: str) -> None:
        """Mark the run cancelled (its worker stopped, or it never started)."""
        self._update(run_id, status="cancelled", cancel_requested=1, finished=time.time())

    def request_cancel(self, run_id: str, *, actor: Actor | None = None) -> str:
        """Ask an active run to stop and return its status; a no-op for a run that ended.
        OwnershipError if ``actor`` is neither its owner nor the teacher (see genlab.owners)."""
        with self._connect(write=True) as conn:
            row = self._row(conn, run_id)
            check_may_modify(row["id"], row["owner"], actor, "cancel")
            if row["status"] in ACTIVE:
                self._set(conn, row["id"], cancel_requested=1)
            return row["status"]

    def cancel_requested(self, run_id: str) -> bool:
        """Whether someone asked this run to stop."""
        return self.get(run_id).cancel_requested

    def update_record(self, run_id: str, block: str, values: dict) -> None:
        """Replace one block of the run's record (e.g. ``"performance"``), keeping the others."""
        with self._connect(write=True) as conn:
            row = self._row(conn, run_id)
            record = {**json.loads(row["record"]), block: values}
            self._set(conn, row["id"], record=json.dumps(record))

    def delete(self, run_id: str, *, actor: Actor | None = None) -> None:
        """Remove the run, its history and artifact folder; StoreError while its worker lives,
        OwnershipError if ``actor`` is neither its owner nor the teacher (see genlab.owners)."""
        with self._connect(write=True) as conn:
            row = self._row(conn, run_id)
            check_may_modify(row["id"], row["owner"], actor, "delete")
            if row["status"] in ACTIVE and _worker_alive(row, time.time()):
                raise StoreError(
                    f"run '{row['id']}' is {row['status']} (worker pid {row['pid']}); "
                    "cancel it and wait for it to stop before deleting it"
                )
            conn.execute("DELETE FROM runs WHERE id = ?", (row["id"],))
        shutil.rmtree(self.home / "runs" / row["id"], ignore_errors=True)

    def recover(self) -> list[str]:
        """Mark every active run whose worker process died as failed; return their ids."""
        now = time.time()
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM runs WHERE status IN (?, ?)", ACTIVE).fetchall()
        sql = (
            "UPDATE runs SET status = 'failed', error = ?, finished = ?, updated = ?"
            " WHERE id = ? AND status IN ('queued', 'running') AND pid IS ?"
        )
        failed = []
        for row in (row for row in rows if not _worker_alive(row, now)):
            error = (
                f"worker process {row['pid']} died before the run finished"
                if row["pid"]
                else f"no worker process started within {_STARTUP_GRACE_S:.0f} s"
            )
            with self._connect(write=True) as conn:  # the WHERE skips runs that changed meanwhile
                if conn.execute(sql, (error, now, now, row["id"], row["pid"])).rowcount:
                    failed.append(row["id"])
        return failed

    def export(self, fmt: str = "json") -> str:
        """All runs as CSV or JSON text (see :func:`genlab.export.export_runs`)."""
        from genlab.export import export_runs

        return export_runs(self.list(), fmt)
