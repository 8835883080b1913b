"""The state file: which runs are archived, which failed and why, which wait (SQLite, WAL).

The output files are the truth: a run whose final `<run_id>.ndjson` exists is done, and a
run the state calls done whose file is missing is harvested again. The state adds what
the files cannot say (failures and their reasons, attempts, how each run was harvested,
runs discovery saw still running), and lets stdout-mode and incremental jobs skip what
is archived. One process at a time: an exclusive lock (`state_file.StateLock`, a flock
the kernel releases even after SIGKILL) guards the file; the worker holds it for its
whole life.

SQLite's errors become ours by their result code (`state_errors.py`): a full disk or a
read-only filesystem is an outage (`StateUnavailable`), a damaged file is `StateCorrupt`.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from .errors import StateError
from .state_errors import from_os_error, from_sqlite_error
from .state_file import STATE_FILE_NAME as STATE_FILE_NAME
from .state_file import StateLock

if TYPE_CHECKING:  # only a type here: `harvester verify` needs no HTTP stack
    from .scheduler import RunOutcome

SCHEMA_VERSION = 2
#: Why a run a killed job left `running` is failed, as the next job to open the state says.
KILLED = "cut short: the job running it was killed before it could record why (SIGKILL?)"

_META = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
_RUNS = """
CREATE TABLE runs (
    run_id     INTEGER PRIMARY KEY,
    status     TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed', 'waiting')),
    attempts   INTEGER NOT NULL DEFAULT 0,
    reason     TEXT,
    path       TEXT,
    records    INTEGER,
    complete   INTEGER,
    updated_at REAL NOT NULL,
    test_id    INTEGER,
    project_id INTEGER,
    selector   TEXT,
    harvest    TEXT
)"""
_V1_COLUMNS = "run_id, status, attempts, reason, path, records, complete, updated_at"


@dataclass(frozen=True)
class RunState:
    run_id: int
    status: str
    attempts: int
    reason: str | None
    path: str | None


@dataclass(frozen=True)
class WaitingRun:
    """A run discovery saw still running or processing, and the selector that found it."""

    run_id: int
    reason: str
    test_id: int | None
    project_id: int | None
    selector: str


class HarvestState:
    """Open with `HarvestState.open(path)`; use as a context manager to close it (and
    release the lock, unless it was lent by the caller)."""

    def __init__(self, path: Path, db: sqlite3.Connection, lock: StateLock, owns: bool) -> None:
        self.path = path
        self._db = db
        self._lock = lock
        self._owns_lock = owns
        #: Runs this job recorded as running and has not seen end (`cut_short`).
        self._running: set[int] = set()

    @classmethod
    def open(cls, path: str | Path, lock: StateLock | None = None) -> HarvestState:
        """Take the lock (or use `lock`, already held) and open the database."""
        path = Path(path)
        held = lock if lock is not None else StateLock.acquire(path)
        try:
            db = _connect(path)
        except BaseException:
            if lock is None:
                held.release()
            raise
        state = cls(path, db, held, owns=lock is None)
        state._left_by_a_killed_job()
        return state

    def __enter__(self) -> HarvestState:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            with self._guard("closing it"):
                self._db.close()
        finally:
            if self._owns_lock:
                self._lock.release()

    @contextmanager
    def _guard(self, doing: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise from_sqlite_error(exc, self.path, doing) from None

    # --- reading --------------------------------------------------------------------

    def get(self, run_id: int) -> RunState | None:
        with self._guard("reading it"):
            row = self._db.execute(
                "SELECT run_id, status, attempts, reason, path FROM runs WHERE run_id = ?",
                (run_id,),
            ).fetchone()
        return RunState(*row) if row else None

    def done_runs(self, run_ids: Iterable[int]) -> set[int]:
        with self._guard("reading it"):
            rows = self._db.execute(
                "SELECT run_id FROM runs WHERE status = 'done'"
                " AND run_id IN (SELECT value FROM json_each(?))",
                (orjson.dumps(list(run_ids)),),
            )
            return {row[0] for row in rows}

    def harvested_how(self, run_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """The summary's `harvest` block of each done run that has one recorded."""
        with self._guard("reading it"):
            rows = self._db.execute(
                "SELECT run_id, harvest FROM runs WHERE status = 'done' AND harvest IS NOT NULL"
                " AND run_id IN (SELECT value FROM json_each(?))",
                (orjson.dumps(list(run_ids)),),
            ).fetchall()
        return {run_id: orjson.loads(how) for run_id, how in rows}

    def waiting(self, projects: Sequence[int], tests: Sequence[int]) -> list[WaitingRun]:
        """Runs left waiting by a job whose selectors these projects or tests cover."""
        with self._guard("reading it"):
            rows = self._db.execute(
                "SELECT run_id, reason, test_id, project_id, selector FROM runs"
                " WHERE status = 'waiting' AND (test_id IN (SELECT value FROM json_each(?))"
                " OR project_id IN (SELECT value FROM json_each(?))) ORDER BY run_id",
                (orjson.dumps(list(tests)), orjson.dumps(list(projects))),
            ).fetchall()
        return [WaitingRun(*row) for row in rows]

    # --- writing --------------------------------------------------------------------

    def remember_waiting(self, runs: Iterable[WaitingRun]) -> None:
        """Runs to check again on later jobs, whatever their --since/--until. A run
        archived already stays done."""
        rows = [
            (w.run_id, w.reason, w.test_id, w.project_id, w.selector, time.time()) for w in runs
        ]
        with self._guard("recording waiting runs"), self._db:
            self._db.executemany(
                "INSERT INTO runs (run_id, status, reason, test_id, project_id, selector,"
                " updated_at) VALUES (?, 'waiting', ?, ?, ?, ?, ?)"
                " ON CONFLICT (run_id) DO UPDATE SET status = 'waiting', reason = excluded.reason,"
                " test_id = excluded.test_id, project_id = excluded.project_id,"
                " selector = excluded.selector, updated_at = excluded.updated_at"
                " WHERE runs.status != 'done'",
                rows,
            )

    # as a scheduler observer

    def run_started(self, run_id: int) -> None:
        with self._guard(f"recording that run {run_id} started"), self._db:
            self._db.execute(
                "INSERT INTO runs (run_id, status, attempts, updated_at)"
                " VALUES (?, 'running', 1, ?)"
                " ON CONFLICT (run_id) DO UPDATE SET status = 'running',"
                " attempts = attempts + 1, reason = NULL, updated_at = excluded.updated_at",
                (run_id, time.time()),
            )
        self._running.add(run_id)

    def run_ended(self, outcome: RunOutcome) -> None:
        self._running.discard(outcome.run_id)
        counts = outcome.summary.get("counts", {})
        how = outcome.summary.get("harvest")
        with self._guard(f"recording that run {outcome.run_id} ended"), self._db:
            self._db.execute(
                "UPDATE runs SET status = ?, reason = ?, path = ?, records = ?, complete = ?,"
                " harvest = ?, updated_at = ? WHERE run_id = ?",
                (
                    "done" if outcome.ok else "failed",
                    outcome.reason,
                    outcome.path,
                    sum(counts.values()) if outcome.ok else None,
                    int(bool(outcome.summary.get("complete", False))),
                    orjson.dumps(how).decode() if how is not None else None,
                    time.time(),
                    outcome.run_id,
                ),
            )

    def _left_by_a_killed_job(self) -> None:
        """Runs still `running` when a job opens the state were left by one that died
        without a word (SIGKILL, the OOM killer, a power cut): this job holds the lock, so
        none is in flight. Failed with why, as `cut_short` would have, so that `running`
        means in flight while this job lives. Best effort: a state that cannot be written
        now says so at the first run this job records."""
        with contextlib.suppress(StateError), self._guard("recording runs a killed job left"):
            with self._db:
                self._db.execute(
                    "UPDATE runs SET status = 'failed', reason = ?, updated_at = ?"
                    " WHERE status = 'running'",
                    (KILLED, time.time()),
                )

    def cut_short(self, reason: str) -> None:
        """The job ended with runs it started unfinished (a closed stdout, a stop): they
        are failed, with why, not left `running` for `harvester status` to misreport. Not
        done, so the next job harvests them again."""
        cut, self._running = sorted(self._running), set()
        if not cut:
            return
        with self._guard("recording the runs the job cut short"), self._db:
            self._db.executemany(
                "UPDATE runs SET status = 'failed', reason = ?, updated_at = ?"
                " WHERE run_id = ? AND status = 'running'",
                [(reason, time.time(), run_id) for run_id in cut],
            )

    def forget(self, run_id: int) -> None:
        """The state said done but the file is gone, or a waiting run no longer exists."""
        with self._guard(f"forgetting run {run_id}"), self._db:
            self._db.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))


#: Seconds a statement waits for a SQLite lock another program holds before the state is
#: "busy" (an outage to the worker, which tries again at its next cycle): sqlite3's own.
BUSY_TIMEOUT = 5.0


def _connect(path: Path) -> sqlite3.Connection:
    if not path.exists():
        try:
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as exc:
            raise from_os_error(exc, path, "creating it") from None
    try:
        db = sqlite3.connect(path, isolation_level="DEFERRED", timeout=BUSY_TIMEOUT)
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            _upgrade(db, path)
        except BaseException:
            db.close()
            raise
    except sqlite3.Error as exc:
        raise from_sqlite_error(exc, path, "opening it") from None
    return db


def _upgrade(db: sqlite3.Connection, path: Path) -> None:
    """Create the schema in a new file; migrate a version-1 file in place (the runs
    table gains the columns for waiting runs and how each run was harvested)."""
    db.execute(_META)
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    version = row[0] if row else None
    if version == str(SCHEMA_VERSION):
        return
    if version not in (None, "1"):
        raise StateError(
            f"state file {path} has schema version {version}, this harvester uses "
            f"{SCHEMA_VERSION}; move the file aside (the output files stay valid) or use --state"
        )
    db.execute("BEGIN IMMEDIATE")
    try:
        if version == "1":
            db.execute("ALTER TABLE runs RENAME TO runs_v1")
        db.execute(_RUNS)
        if version == "1":
            db.execute(f"INSERT INTO runs ({_V1_COLUMNS}) SELECT {_V1_COLUMNS} FROM runs_v1")
            db.execute("DROP TABLE runs_v1")
        db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )
        db.commit()
    except BaseException:
        db.rollback()
        raise
