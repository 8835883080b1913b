"""The state file: which runs are archived, which failed and why (SQLite, WAL).

The output files are the truth: a run whose final `<run_id>.ndjson` exists is done, and a
run the state calls done whose file is missing is harvested again. The state adds what
the files cannot say (failures and their reasons, attempts, when), and lets stdout-mode
and incremental jobs skip what is archived. One process at a time: an exclusive lock
(flock, released by the kernel even after SIGKILL) guards the file.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .errors import StateError
from .scheduler import RunOutcome

SCHEMA_VERSION = 1
STATE_FILE_NAME = ".harvester-state.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id     INTEGER PRIMARY KEY,
    status     TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    attempts   INTEGER NOT NULL DEFAULT 0,
    reason     TEXT,
    path       TEXT,
    records    INTEGER,
    complete   INTEGER,
    updated_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class RunState:
    run_id: int
    status: str
    attempts: int
    reason: str | None
    path: str | None


class HarvestState:
    """Open with `HarvestState.open(path)`; use as a context manager to release the lock."""

    def __init__(self, path: Path, db: sqlite3.Connection, lock: IO[bytes]) -> None:
        self.path = path
        self._db = db
        self._lock = lock

    @classmethod
    def open(cls, path: str | Path) -> HarvestState:
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = _acquire_lock(path)
        except OSError as exc:
            raise StateError(f"cannot use state file {path}: {exc.strerror}") from None
        try:
            db = _connect(path)
        except BaseException:
            lock.close()
            raise
        return cls(path, db, lock)

    def __enter__(self) -> HarvestState:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()
        self._lock.close()

    # --- reading --------------------------------------------------------------------

    def get(self, run_id: int) -> RunState | None:
        row = self._db.execute(
            "SELECT run_id, status, attempts, reason, path FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        return RunState(*row) if row else None

    def done_runs(self, run_ids: Iterable[int]) -> set[int]:
        wanted = list(run_ids)
        done: set[int] = set()
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT run_id FROM runs WHERE status = 'done' AND run_id IN ({marks})", chunk
            )
            done.update(row[0] for row in rows)
        return done

    # --- writing (as a scheduler observer) ------------------------------------------

    def run_started(self, run_id: int) -> None:
        with self._db:
            self._db.execute(
                "INSERT INTO runs (run_id, status, attempts, updated_at)"
                " VALUES (?, 'running', 1, ?)"
                " ON CONFLICT (run_id) DO UPDATE SET status = 'running',"
                " attempts = attempts + 1, reason = NULL, updated_at = excluded.updated_at",
                (run_id, time.time()),
            )

    def run_ended(self, outcome: RunOutcome) -> None:
        counts = outcome.summary.get("counts", {})
        with self._db:
            self._db.execute(
                "UPDATE runs SET status = ?, reason = ?, path = ?, records = ?, complete = ?,"
                " updated_at = ? WHERE run_id = ?",
                (
                    "done" if outcome.ok else "failed",
                    outcome.reason,
                    outcome.path,
                    sum(counts.values()) if outcome.ok else None,
                    int(bool(outcome.summary.get("complete", False))),
                    time.time(),
                    outcome.run_id,
                ),
            )

    def forget(self, run_id: int) -> None:
        """The state said done but the file is gone: the file wins."""
        with self._db:
            self._db.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))


def _acquire_lock(path: Path) -> IO[bytes]:
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    lock = os.fdopen(fd, "r+b")
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise StateError(
            f"another harvester is already using the state file {path}; wait for it to "
            "finish, or give this one its own --state (and --out)"
        ) from None
    return lock


def _connect(path: Path) -> sqlite3.Connection:
    fresh = not path.exists()
    if fresh:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    try:
        db = sqlite3.connect(path, isolation_level="DEFERRED")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.executescript(_SCHEMA)
        _check_version(db, path)
    except sqlite3.DatabaseError as exc:
        raise StateError(
            f"state file {path} is not a harvester state database ({exc}); move it aside "
            "or point --state elsewhere"
        ) from None
    return db


def _check_version(db: sqlite3.Connection, path: Path) -> None:
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        with db:
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
        return
    if row[0] != str(SCHEMA_VERSION):
        raise StateError(
            f"state file {path} has schema version {row[0]}, this harvester uses "
            f"{SCHEMA_VERSION}; move the file aside (the output files stay valid) or use --state"
        )
