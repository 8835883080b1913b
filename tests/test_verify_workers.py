"""`harvester verify`'s worker processes: files scanned ahead in forked processes (the
line parsing holds the GIL, so threads parsed one file at a time) give the rows one
process gives, in the same order; a worker that dies costs no row; ^C ends the command
and its workers, with no traceback from them."""

from __future__ import annotations

import errno
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from harvester import verify as verify_module
from harvester.cli import main
from harvester.cpus import usable_cpus
from harvester.manifest import seal
from harvester.verify import verify
from tests.process_helpers import ROOT

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forked workers")

LINE = b'{"type":"metric","test_run_id":1,"data":{"id":"a"}}\n'


def lines_of(run_id: int) -> int:
    """A run's lines: its file past `SCANNED_AHEAD_FROM`, so scanned ahead by a worker."""
    return verify_module.SCANNED_AHEAD_FROM // len(LINE) + run_id


def archive_of(where: Path, runs: int) -> Path:
    """`runs` sealed runs, then one corrupt, one truncated and one orphan file."""
    where.mkdir()
    for run_id in range(1, runs + 1):
        (where / f"{run_id}.ndjson").write_bytes(LINE * lines_of(run_id))
        assert seal(where, run_id, 0o600)
    bad = LINE.replace(b"metric", b"metrik")  # the same size
    (where / "2.ndjson").write_bytes(bad * lines_of(2))
    with (where / "3.ndjson").open("r+b") as cut:
        cut.truncate(10)
    (where / "9.ndjson.orig").write_bytes(b"x")
    return where


#: The test process's pid: `_dying_scan` kills a worker, never this process.
PARENT = os.getpid()
_real_scan = verify_module._scan


def _dying_scan(path: Path) -> object:
    """A worker's scan that dies (as the kernel's OOM killer would kill it) on run 4."""
    if os.getpid() != PARENT and path.name == "4.ndjson":
        os._exit(9)
    return _real_scan(path)


def test_worker_processes_give_the_rows_one_process_gives_in_order(tmp_path: Path) -> None:
    archive = archive_of(tmp_path / "archive", 6)
    alone = list(verify(archive, workers=1))
    rows = verify(archive, workers=2)
    first = next(rows)
    assert len(multiprocessing.active_children()) == 2  # scanned ahead by processes
    assert [first, *rows] == alone
    assert not multiprocessing.active_children()  # ended with the command
    found = {row["file"]: row["status"] for row in alone}
    assert (found["2.ndjson"], found["3.ndjson"], found["9.ndjson.orig"]) == (
        "corrupt",
        "truncated",
        "orphan",
    )


def test_small_files_are_scanned_in_turn_not_handed_to_workers(tmp_path: Path) -> None:
    """A worker's hand-over cost more than a small file's scan (20,000 runs of 1 KB: 10.7 s
    in workers, 9.5 s in threads, 4.2 s in turn)."""
    archive = tmp_path / "archive"
    archive.mkdir()
    for run_id in (1, 2, 3):
        (archive / f"{run_id}.ndjson").write_bytes(LINE)
        assert seal(archive, run_id, 0o600)
    rows = verify(archive, workers=2)
    first = next(rows)
    assert not multiprocessing.active_children()
    assert [first, *rows] == list(verify(archive, workers=1))


def test_a_worker_that_dies_costs_no_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = archive_of(tmp_path / "archive", 8)
    alone = list(verify(archive, workers=1))
    monkeypatch.setattr(verify_module, "_scan", _dying_scan)  # (the workers fork after it)
    assert list(verify(archive, workers=2)) == alone
    assert not multiprocessing.active_children()


class _NoSemaphores:
    """A process pool where POSIX semaphores are missing (no /dev/shm): refused at once."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise NotImplementedError("This Python build lacks multiprocessing.synchronize")


class _NoFork(ProcessPoolExecutor):
    """A process pool whose workers cannot start (a process limit: fork's EAGAIN)."""

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")


@pytest.mark.parametrize("pool", [_NoSemaphores, _NoFork])
def test_where_no_worker_process_can_start_threads_scan_ahead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pool: type
) -> None:
    archive = archive_of(tmp_path / "archive", 4)
    alone = list(verify(archive, workers=1))
    monkeypatch.setattr(verify_module, "ProcessPoolExecutor", pool)
    rows = verify(archive, workers=2)
    first = next(rows)
    assert not multiprocessing.active_children()
    assert any(t.name.startswith("ThreadPoolExecutor") for t in threading.enumerate())
    assert [first, *rows] == alone


def test_the_command_uses_the_cpus_it_may_run_on() -> None:
    assert usable_cpus() == len(os.sched_getaffinity(0))


SLOW_WORKERS = """
import os, sys, time
from harvester import verify
from harvester.cli import main

PARENT = os.getpid()
real = verify._scan

def slow(path):
    if os.getpid() != PARENT and path.name == "1.ndjson":
        time.sleep(1)  # ^C comes while one worker scans this file, the other waits
    return real(path)

verify._scan = slow
sys.exit(main(["verify", sys.argv[1], "--output", "json"]))
"""


def started_with_workers(archive: Path) -> tuple[subprocess.Popen[bytes], list[int]]:
    """`harvester verify` whose workers scan run 1 slowly, once both workers are there."""
    command = subprocess.Popen(
        [sys.executable, "-c", SLOW_WORKERS, str(archive)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, as a terminal's job
    )
    workers: list[int] = []
    deadline = time.monotonic() + 20
    while len(workers) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
        children = Path(f"/proc/{command.pid}/task/{command.pid}/children")
        workers = [int(pid) for pid in children.read_text().split()]
    assert len(workers) == 2, "no workers started"
    return command, workers


def running(pid: int) -> bool:
    """Whether `pid` is there and not a zombie (an ended process not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def test_ctrl_c_ends_verify_and_its_workers_without_their_tracebacks(tmp_path: Path) -> None:
    archive = archive_of(tmp_path / "archive", 6)
    command, workers = started_with_workers(archive)
    time.sleep(0.3)  # (one scans run 1, the other has scanned the rest: it waits)
    os.killpg(command.pid, signal.SIGINT)  # what ^C sends: the whole group
    _, stderr = command.communicate(timeout=20)
    assert command.returncode == 130
    assert b"harvester: interrupted" in stderr
    assert b"Traceback" not in stderr and b"KeyboardInterrupt" not in stderr
    for pid in workers:  # waited for: none left running, or a zombie
        assert not Path(f"/proc/{pid}").exists()


def test_workers_end_when_verify_is_killed(tmp_path: Path) -> None:
    """kill -9 (or SIGTERM, whose default action is as abrupt): each worker, blocked on its
    queue, which its own copy of the pipe kept open, waited for ever."""
    archive = archive_of(tmp_path / "archive", 6)
    command, workers = started_with_workers(archive)
    command.kill()
    command.communicate(timeout=20)
    deadline = time.monotonic() + 10
    while any(map(running, workers)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(map(running, workers))


def test_the_command_holds_no_row_it_has_written(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every row was held until the last file was scanned: an archive of 100,000 runs
    made 200,000 rows in memory before the first was printed."""

    def many(directory: str, *, workers: int) -> Iterator[dict[str, Any]]:
        for run_id in range(100_000):
            yield {"test_run_id": run_id, "file": f"{run_id}.ndjson", "status": "ok",
                   "detail": "1 bytes"}  # fmt: skip

    monkeypatch.setattr(verify_module, "verify", many)
    with open(os.devnull, "w") as devnull:
        monkeypatch.setattr(sys, "stdout", devnull)
        tracemalloc.start()
        try:
            assert main(["verify", "archive", "--output", "json"]) == 0
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 2_000_000  # held, the rows took ~40 MB
