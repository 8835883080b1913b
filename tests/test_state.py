"""The state file (issue 14): each SQLite failure is named for what it is, with its own
exit status; a version-1 file is migrated in place."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import pytest

from harvester.cli import main
from harvester.errors import StateCorrupt, StateError, StateUnavailable
from harvester.job import harvest_job
from harvester.scheduler import RunOutcome, RunTarget
from harvester.simulator.cloud import SimCloud
from harvester.simulator.server import Simulator
from harvester.state import SCHEMA_VERSION, STATE_FILE_NAME, HarvestState, WaitingRun
from harvester.state_errors import from_os_error, from_sqlite_error
from tests.fs_helpers import fill, remount
from tests.harvest_helpers import settings_for

V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (
    run_id     INTEGER PRIMARY KEY,
    status     TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    attempts   INTEGER NOT NULL DEFAULT 0,
    reason     TEXT,
    path       TEXT,
    records    INTEGER,
    complete   INTEGER,
    updated_at REAL NOT NULL
);
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO runs VALUES (7, 'done', 1, NULL, '/a/7.ndjson', 10, 1, 1.0);
INSERT INTO runs VALUES (8, 'failed', 2, 'not found: gone', NULL, NULL, 0, 2.0);
"""


def harvest_args(out: Path, *extra: str) -> list[str]:
    return ["harvest", "--token", "t", "--base-url", "http://127.0.0.1:9", "--run", "1",
            "--out", str(out), *extra]  # fmt: skip


def test_a_garbage_state_file_is_damaged_exit_2_with_what_to_do(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / STATE_FILE_NAME).write_bytes(b"this is not sqlite" * 100)
    assert main(harvest_args(tmp_path)) == 2
    err = capfd.readouterr().err
    [line] = [line for line in err.splitlines() if "state file" in line]
    assert "Traceback" not in err and "move it aside" in line
    assert "is not a harvester state file (not an SQLite database; it begins b'this" in line
    assert not (tmp_path / f"{STATE_FILE_NAME}.lock").exists()  # nothing made beside it


def test_someone_elses_file_as_state_is_refused_untouched(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs.txt"  # --state where --runs-file was meant
    runs.write_bytes(b"101\n102\n")
    assert main(harvest_args(tmp_path / "out", "--state", str(runs))) == 2
    err = capfd.readouterr().err
    assert f"{runs} is not a harvester state file" in err and "give --state a path" in err
    assert runs.read_bytes() == b"101\n102\n" and sorted(tmp_path.iterdir()) == [
        tmp_path / "out",
        runs,
    ]


def test_a_full_disk_at_start_is_exit_1_and_says_so(
    tiny_fs: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    state = tiny_fs / "state.sqlite"
    HarvestState.open(state).close()
    fill(tiny_fs)
    assert main(harvest_args(tmp_path / "out", "--state", str(state))) == 1
    err = capfd.readouterr().err
    [line] = [line for line in err.splitlines() if "state file" in line]
    assert "the disk is full" in line and str(state) in line and "Traceback" not in err


class FillOnStart:
    """An observer that fills the disk as the first run starts: the state's own writes
    during the job meet a full disk."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.filler: Path | None = None

    def run_started(self, run_id: int) -> None:
        self.filler = self.filler or fill(self.directory)

    def run_ended(self, outcome: RunOutcome) -> None:
        pass


async def test_a_state_write_on_a_full_disk_during_the_job_is_our_error(
    simulator: Simulator, cloud: SimCloud, tiny_fs: Path, tmp_path: Path
) -> None:
    settings = settings_for(simulator, tmp_path, state=str(tiny_fs / "state.sqlite"))
    filler = FillOnStart(tiny_fs)
    with pytest.raises(StateUnavailable, match="the disk is full .while recording that run"):
        await harvest_job(settings, [RunTarget(min(cloud.runs))], observers=[filler])
    assert filler.filler is not None
    filler.filler.unlink()  # space again: the same job now goes through
    result = await harvest_job(settings, [RunTarget(min(cloud.runs))])
    assert not result.report.failed and (tmp_path / f"{min(cloud.runs)}.ndjson").exists()


def test_a_version_1_file_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE_NAME
    with sqlite3.connect(path) as db:
        db.executescript(V1_SCHEMA)
    db.close()
    with HarvestState.open(path) as state:
        assert state.done_runs([7, 8, 9]) == {7}
        failed = state.get(8)
        assert failed is not None and failed.reason == "not found: gone"
        state.remember_waiting([WaitingRun(9, "processing", 720001, 3458575, "project 3458575")])
        assert [w.run_id for w in state.waiting([3458575], [])] == [9]
    with sqlite3.connect(path) as db:
        version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    db.close()
    assert version == (str(SCHEMA_VERSION),)


def test_a_newer_schema_is_refused_with_exit_2(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / STATE_FILE_NAME
    with sqlite3.connect(path) as db:
        db.executescript(V1_SCHEMA.replace("'schema_version', '1'", "'schema_version', '99'"))
    db.close()
    assert main(harvest_args(tmp_path)) == 2
    assert "has schema version 99" in capfd.readouterr().err


def sqlite_error(code: int, message: str) -> sqlite3.Error:
    exc = sqlite3.OperationalError(message)
    exc.sqlite_errorcode = code
    return exc


def test_each_sqlite_result_code_gets_its_own_error(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE_NAME
    cases = {
        sqlite3.SQLITE_FULL: (StateUnavailable, "the disk is full"),
        sqlite3.SQLITE_IOERR_WRITE: (StateUnavailable, "I/O error while writing"),
        sqlite3.SQLITE_CORRUPT: (StateCorrupt, "is damaged"),
        sqlite3.SQLITE_NOTADB: (StateCorrupt, "is damaged"),
        sqlite3.SQLITE_BUSY: (StateUnavailable, "another program holds a SQLite lock"),
        sqlite3.SQLITE_READONLY: (StateError, "cannot be written"),
        sqlite3.SQLITE_CANTOPEN: (StateError, "cannot open state file"),
        sqlite3.SQLITE_ERROR: (StateError, "is not a harvester state database"),
    }
    for code, (kind, words) in cases.items():
        error = from_sqlite_error(sqlite_error(code, "boom"), path, "writing")
        assert type(error) is kind and words in str(error), code
    assert StateUnavailable.exit_code == 1 and StateCorrupt.exit_code == 2
    full = from_os_error(OSError(errno.ENOSPC, "No space left"), path, "x")
    assert isinstance(full, StateUnavailable) and "the disk is full" in str(full)
    readonly = from_os_error(OSError(errno.EROFS, "Read-only file system"), path, "x")
    assert isinstance(readonly, StateUnavailable) and "read-only" in str(readonly)
    eio = from_os_error(OSError(errno.EIO, "Input/output error"), path, "x")
    assert isinstance(eio, StateUnavailable) and "I/O error" in str(eio)
    denied = from_os_error(OSError(errno.EACCES, "Permission denied"), path, "x")
    assert type(denied) is StateError and "Permission denied" in str(denied)


def test_an_io_error_on_a_full_or_read_only_filesystem_is_named_for_it(tiny_fs: Path) -> None:
    path = tiny_fs / STATE_FILE_NAME
    filler = fill(tiny_fs)
    error = from_sqlite_error(sqlite_error(sqlite3.SQLITE_IOERR_SHMSIZE, "x"), path, "opening")
    assert "the disk is full" in str(error)
    filler.unlink()
    assert remount(tiny_fs, "ro")
    error = from_sqlite_error(sqlite_error(sqlite3.SQLITE_CANTOPEN, "x"), path, "opening")
    assert isinstance(error, StateUnavailable) and "read-only" in str(error)
