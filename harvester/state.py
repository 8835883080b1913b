"""The state file: which runs are archived, which failed and why, which wait (SQLite, WAL).

The output files are the truth: a run whose final `<run_id>.ndjson` exists is done, and a
run the state calls done whose file is missing is harvested again. The state adds what
the files cannot say (failures and their reasons, attempts, how each run was harvested,
runs discovery saw still running), and lets stdout-mode and incremental jobs skip what
is archived. One process at a time: an exclusive lock (flock, released by the kernel
even after SIGKILL) guards the file; the worker holds it for its whole life.

SQLite's errors become ours by their result code (`state_errors.py`): a full disk or a
read-only filesystem is an outage (`StateUnavailable`), a damaged file is `StateCorrupt`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import stat
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson

from .errors import StateError
from .state_errors import from_os_error, from_sqlite_error

if TYPE_CHECKING:  # only a type here: `harvester verify` needs no HTTP stack
    from .scheduler import RunOutcome

SCHEMA_VERSION = 2
STATE_FILE_NAME = ".harvester-state.sqlite"
#: Why a run a killed job left `running` is failed, as the next job to open the state says.
KILLED = "cut short: the job running it was killed before it could record why (SIGKILL?)"
#: Seconds a job waits for a state lock that is taken: `harvester status` holds it for an
#: instant (`StateLock.held`), and a job starting then must not be refused for that.
LOCK_PATIENCE = 0.5

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


class StateLock:
    """The exclusive lock beside a state file, held until `release()`. Opened read-only,
    so holding it between a worker's cycles does not keep a filesystem from going
    read-only (that is an outage to wait out, not something to block)."""

    def __init__(self, path: Path, handle: IO[bytes]) -> None:
        self.path = path
        self._handle = handle

    @classmethod
    def acquire(cls, path: Path) -> StateLock:
        refuse_foreign(path)  # before a lock file is made beside someone's file
        lock_path = path.with_name(path.name + ".lock")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = os.fdopen(os.open(lock_path, os.O_RDONLY | os.O_CREAT, 0o600), "rb")
        except OSError as exc:
            raise from_os_error(exc, path, "taking its lock") from None
        if not _lock_within(handle.fileno(), LOCK_PATIENCE):
            handle.close()
            raise StateError(
                f"another harvester is already using the state file {path}; wait for it to "
                "finish, or give this one its own --state (and --out)"
            )
        return cls(path, handle)

    @staticmethod
    def held(path: Path) -> bool:
        """Whether a live job (or worker) holds the lock of the state file `path` now: the
        kernel drops a flock with its process, so a job killed with SIGKILL holds none.
        Asked by taking a shared lock and dropping it at once (a job starting meanwhile
        waits, `LOCK_PATIENCE`); a lock file that cannot be read says "held", so nothing
        is called stale on a guess. Never creates the lock file."""
        lock_path = path.with_name(path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDONLY)
        except FileNotFoundError:
            return False  # no job ever locked it
        except OSError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:  # BlockingIOError: a job holds it
            return True
        finally:
            os.close(fd)  # (releases the shared lock, if taken)
        return False

    def release(self) -> None:
        self._handle.close()


def _lock_within(fd: int, seconds: float) -> bool:
    """Take the exclusive flock on `fd`, waiting up to `seconds` for it."""
    deadline = time.monotonic() + seconds
    while True:
        with contextlib.suppress(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


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


#: The first bytes of every SQLite database file.
SQLITE_MAGIC = b"SQLite format 3\x00"


def refuse_foreign(path: Path) -> None:
    """A file that is no SQLite database at all is more likely someone's file given as
    --state (a runs file?) than a damaged state: it is refused untouched, and the message
    says both. An empty file, or one SQLite may have begun, is left to SQLite. Something
    that is no regular file is refused first: a FIFO would be waited on for ever (its
    opening blocks, deaf to SIGTERM), a directory said only "unable to open"."""
    kind = _not_a_file(path)
    if kind is not None:
        raise StateError(f"{path} is {kind}, not a state file: give --state a file's path")
    try:
        with path.open("rb") as fh:
            head = fh.read(len(SQLITE_MAGIC))
    except OSError:
        return  # missing (created later), or unreadable: the lock or SQLite says why
    if head and not SQLITE_MAGIC.startswith(head):
        raise StateError(
            f"{path} is not a harvester state file (not an SQLite database; it begins "
            f"{head!r}): give --state a path of its own, or if it is a damaged state "
            "file, move it aside and run again (the archived files are the truth)"
        )


def _not_a_file(path: Path) -> str | None:
    """What `path` is when it is there and no regular file (symlinks followed), else None."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None  # missing (created later), or unreadable: the lock or SQLite says why
    if stat.S_ISREG(mode):
        return None
    return (
        "a directory"
        if stat.S_ISDIR(mode)
        else "a FIFO"
        if stat.S_ISFIFO(mode)
        else ("not a regular file")
    )


def _connect(path: Path) -> sqlite3.Connection:
    if not path.exists():
        try:
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as exc:
            raise from_os_error(exc, path, "creating it") from None
    try:
        db = sqlite3.connect(path, isolation_level="DEFERRED")
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
