"""--format points writes each run's files from a child process (`writeproc`): the same
bytes, sizes, sha256 and counts as the write stack in this process, and every failure of
the child (a full disk, a file it cannot open, its death) fails the run, never silently."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import pickle
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, cast

import orjson
import pytest

from harvester import writechild, writeproc, writerpool
from harvester.cli import main
from harvester.packed import pack_series, series_texts
from harvester.records import encode
from harvester.runfiles import KINDS as FORMAT_KINDS
from harvester.runfiles import RunFiles
from harvester.simulator.generated import generate_cloud
from harvester.writeproc import ChildRunFiles, WriterProcess

KINDS = ("points.ndjson", "meta.ndjson")


def run_lines(run_id: int = 1) -> list[bytes]:
    """A generated run's records, as the writer hands them on (a batch a record type)."""
    cloud = generate_cloud(runs=1, metrics=6, points=30, seed=3)
    run = next(iter(cloud.runs.values()))
    metrics = run.metrics()
    series = [run.serie(str(m["id"]), None) for m in metrics]
    return [encode("metric", run_id, metrics), encode("series", run_id, series),
            encode("summary", run_id, [{"complete": True}])]  # fmt: skip


@pytest.fixture
def child() -> Iterator[WriterProcess]:
    process = WriterProcess()
    yield process
    process.close()


def temp_paths(where: Path, run_id: int, kinds: tuple[str, ...] = KINDS) -> dict[str, Path]:
    paths = {kind: where / f"{run_id}.{kind}" for kind in kinds}
    for path in paths.values():
        path.touch()
    return paths


@pytest.mark.parametrize(
    ("fmt", "codec"),
    [("points", "none"), ("points", "zstd"), ("points", "gzip"), ("parquet", "zstd")],
)
def test_the_child_writes_the_same_files_as_the_write_stack_in_this_process(
    child: WriterProcess, tmp_path: Path, fmt: str, codec: str
) -> None:
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    kinds = FORMAT_KINDS[fmt]
    lines = run_lines()
    here = {kind: io.BytesIO() for kind in kinds}
    local = RunFiles(1, fmt, codec, None, cast(dict[str, BinaryIO], here))
    paths = temp_paths(tmp_path, 1, kinds)
    remote = ChildRunFiles(child, 1, fmt, codec, None, paths)
    for data in lines:
        local.write(data)
        if not remote.write_nowait(data):  # a full queue: wait for room
            remote.write(data)
    local.finish()
    remote.finish()
    counts = {"metric": 6, "series": 6, "summary": 1}
    for kind in kinds:
        assert paths[kind].read_bytes() == here[kind].getvalue() != b""
        assert remote.written(kind) == local.written(kind)
    assert remote.counts(counts) == local.counts(counts)
    assert remote.counts(counts)[kinds[0]]["point"] == 6 * 30


def test_a_batch_of_more_texts_than_one_writev_takes_reaches_the_child_whole(
    child: WriterProcess, tmp_path: Path
) -> None:
    """A points batch goes as each serie's text, a view of the answer (`packed.SeriesTexts`):
    1,500 series are more pieces than one `writev` takes (`IOV_MAX`), and the child reads
    them into its reused buffer; the points file is the one written in this process."""
    cloud = generate_cloud(runs=1, metrics=6, points=5, seed=3)
    run = next(iter(cloud.runs.values()))
    metrics = run.metrics()
    series = [run.serie(str(metrics[i % 6]["id"]), None) for i in range(1_500)]
    batch = series_texts(orjson.dumps({"k6-serie": series}))
    assert batch is not None and len(batch.values) > writeproc.IOV_MAX
    assert batch.nbytes > writechild._ReusedBuffer.SMALLEST  # read into the kept buffer
    here = {kind: io.BytesIO() for kind in KINDS}
    local = RunFiles(1, "points", "none", None, cast(dict[str, BinaryIO], here))
    paths = temp_paths(tmp_path, 1)
    remote = ChildRunFiles(child, 1, "points", "none", None, paths)
    for data in (encode("metric", 1, metrics), batch, batch):
        local.write(data)
        remote.write(data)
    local.finish()
    remote.finish()
    assert paths["points.ndjson"].read_bytes() == here["points.ndjson"].getvalue()
    assert remote.written("points.ndjson") == local.written("points.ndjson")
    assert here["points.ndjson"].getvalue().count(b"\n") == 2 * 1_500 * 5


def test_the_child_runs_the_parent_s_writer_not_a_harvester_package_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -m` puts the working directory first on the path: the child imported a
    `harvester` package found there (another checkout, or anything planted) instead of
    the one the parent runs."""
    planted = tmp_path / "cwd" / "harvester"
    planted.mkdir(parents=True)
    (planted / "__init__.py").write_text("")
    ran = tmp_path / "planted-ran"
    (planted / "writechild.py").write_text(f"open({str(ran)!r}, 'w').close()\n")
    monkeypatch.chdir(planted.parent)
    process = WriterProcess()
    try:
        files = ChildRunFiles(process, 1, "points", "none", None, temp_paths(tmp_path, 1))
        files.write(run_lines()[0])
        files.finish()
    finally:
        process.close()
    assert not ran.exists()
    assert files.written("meta.ndjson")[0] == (tmp_path / "1.meta.ndjson").stat().st_size > 0


def test_a_full_disk_in_the_child_fails_the_run_at_its_finish(
    child: WriterProcess, tmp_path: Path
) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    paths = {"points.ndjson": Path("/dev/full"), "meta.ndjson": tmp_path / "meta"}
    paths["meta.ndjson"].touch()
    files = ChildRunFiles(child, 1, "points", "none", None, paths)
    for data in run_lines():
        files.write(data)
    with pytest.raises(OSError) as failed:
        files.finish()
    assert failed.value.errno == errno.ENOSPC
    # The child goes on with the other runs.
    ok = ChildRunFiles(child, 2, "points", "none", None, temp_paths(tmp_path, 2))
    ok.write(run_lines(2)[0])
    ok.finish()
    assert ok.written("meta.ndjson")[0] == (tmp_path / "2.meta.ndjson").stat().st_size > 0


def test_a_file_the_child_cannot_open_fails_the_run_at_its_finish(
    child: WriterProcess, tmp_path: Path
) -> None:
    paths = {kind: tmp_path / "gone" / kind for kind in KINDS}
    files = ChildRunFiles(child, 1, "points", "none", None, paths)
    files.write(run_lines()[0])
    with pytest.raises(OSError) as failed:
        files.finish()
    assert failed.value.errno == errno.ENOENT


def test_a_discarded_run_is_dropped_and_the_others_go_on(
    child: WriterProcess, tmp_path: Path
) -> None:
    dropped = ChildRunFiles(child, 1, "points", "zstd", None, temp_paths(tmp_path, 1))
    kept = ChildRunFiles(child, 2, "points", "zstd", None, temp_paths(tmp_path, 2))
    dropped.write(run_lines(1)[0])
    kept.write(run_lines(2)[0])
    dropped.discard()
    kept.finish()
    assert kept.counts({"metric": 6})["meta.ndjson"] == {"metric": 6}


def test_a_child_that_died_fails_every_run_after_it(tmp_path: Path) -> None:
    child = WriterProcess()
    try:
        files = ChildRunFiles(child, 1, "points", "none", None, temp_paths(tmp_path, 1))
        child._proc.kill()
        child._proc.wait()
        # How it ended is said (the kernel's OOM killer sends SIGKILL): not a bare
        # EOFError('Ran out of input') or a broken pipe.
        stopped = "the writer process stopped: killed by SIGKILL"
        with pytest.raises(OSError, match=stopped):
            for data in run_lines() * 50:  # the pipe takes some before it breaks
                files.write(data)
            files.finish()
        with pytest.raises(OSError, match=stopped):
            ChildRunFiles(child, 2, "points", "none", None, temp_paths(tmp_path, 2))
        files.discard()  # nothing to drop: the child is gone
    finally:
        child.close()


def test_a_child_that_failed_says_its_exit_status(tmp_path: Path) -> None:
    """A child ended by an error of its own (its traceback goes to stderr) is named by its
    exit status, for the user to look above."""
    child = WriterProcess()
    try:
        files = ChildRunFiles(child, 1, "points", "none", None, temp_paths(tmp_path, 1))
        child._pipe.write(b"not a pickled request")  # what the child cannot read: it fails
        child._pipe.flush()
        child._proc.wait()
        with pytest.raises(OSError, match=r"stopped: exited with status 1 \(its error is above\)"):
            for data in run_lines() * 50:
                files.write(data)
            files.finish()
    finally:
        child.close()


def test_runs_left_open_are_closed_when_the_pipe_closes(tmp_path: Path) -> None:
    child = WriterProcess()
    files = ChildRunFiles(child, 1, "points", "gzip", None, temp_paths(tmp_path, 1))
    files.write(run_lines()[0])
    child.close()
    assert child._proc.returncode == 0
    assert os.path.exists(tmp_path / "1.meta.ndjson")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_the_stop_signals_are_the_parents_to_handle_not_the_childs(
    child: WriterProcess, tmp_path: Path, sig: signal.Signals
) -> None:
    """^C, SIGTERM and a closed terminal reach the whole process group; the harvester
    finishes its runs in flight, so its writer must outlive them."""
    files = ChildRunFiles(child, 1, "points", "none", None, temp_paths(tmp_path, 1))
    files.write(run_lines()[0])
    files.finish()  # the child is up (its handlers set) before the signal comes
    child._proc.send_signal(sig)
    again = ChildRunFiles(child, 2, "points", "none", None, temp_paths(tmp_path, 2))
    again.write(run_lines(2)[0])
    again.finish()  # a child the signal ended answers nothing: this raises
    assert again.written("meta.ndjson")[0] > 0 and child._proc.poll() is None


def test_the_queue_for_the_child_is_bounded_by_bytes_not_by_requests(tmp_path: Path) -> None:
    """A run's small requests (its metrics, its summary) queue beside its big batches: the
    queue takes `QUEUED_BYTES` of them, not two, so the child finds work waiting while the
    event loop is busy; past that, `write_nowait` declines and the caller waits."""
    child = WriterProcess()
    try:
        files = ChildRunFiles(child, 1, "points", "none", None, temp_paths(tmp_path, 1))
        files.write(run_lines()[0])
        files.finish()  # the child is up
        files = ChildRunFiles(child, 2, "points", "none", None, temp_paths(tmp_path, 2))
        child._proc.send_signal(signal.SIGSTOP)  # the child reads nothing more
        small = run_lines(2)[0]
        queued = 0
        while files.write_nowait(small):
            queued += len(small)
        # The pipe took its share; the queue held up to its bound (in bytes) besides.
        assert queued >= writeproc.QUEUED_BYTES - len(small)
        child._proc.send_signal(signal.SIGCONT)
        files.write(small)
        files.finish()
        lines = queued // len(small) + 1
        assert files.counts({"metric": 6 * lines})["meta.ndjson"]["metric"] == 6 * lines
        assert (tmp_path / "2.meta.ndjson").read_bytes() == small * lines
    finally:
        child._proc.send_signal(signal.SIGCONT)
        child.close()


def test_a_packed_batch_takes_the_queue_s_room_of_the_lines_it_stands_for(
    tmp_path: Path,
) -> None:
    """A batch packed for Parquet is counted in the queue as its lines' bytes, not its
    values' (8 bytes a point, ~1/6 of them): counted so, the queue held ~6x as much of
    the child's work when it was behind, each run of it open in the child."""
    cloud = generate_cloud(runs=1, metrics=40, points=240, seed=3)
    run = next(iter(cloud.runs.values()))
    series = [run.serie(str(m["id"]), None) for m in run.metrics()]
    packed = pack_series(orjson.dumps({"k6-serie": series}))
    assert packed is not None and packed.text_bytes > 4 * packed.nbytes
    child = WriterProcess()
    try:
        kinds = FORMAT_KINDS["parquet"]
        files = ChildRunFiles(child, 1, "parquet", "none", None, temp_paths(tmp_path, 1, kinds))
        child._proc.send_signal(signal.SIGSTOP)  # the child reads nothing more
        while files.write_nowait(packed):
            pass
        with child._room:  # (the feeding thread may be taking some meanwhile)
            queued = sum(r is not None and r.op == "packed" for r in child._queue)
            assert child._queued == queued * packed.text_bytes <= writeproc.QUEUED_BYTES
        assert queued * packed.nbytes < writeproc.QUEUED_BYTES // 4
    finally:
        child._proc.send_signal(signal.SIGCONT)
        child.close()


def test_writeback_hints_run_beside_the_child_s_work_and_before_its_files_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child's main thread builds, hashes and writes the lines; the kernel's writeback
    hints (~1 ms a MB) go to a thread of their own, and a run's files close only once its
    hint is done (a hint on a closed descriptor could reach another file)."""
    from harvester import pagecache

    seen: list[tuple[str, bool]] = []

    def slow_hint(fh: BinaryIO) -> None:
        time.sleep(0.05)  # still under way when the run finishes
        seen.append((threading.current_thread().name, fh.closed))

    monkeypatch.setattr(pagecache, "start_writeback", slow_hint)
    paths = temp_paths(tmp_path, 1)
    run = writechild._open(1, "points", "none", None, {k: str(p) for k, p in paths.items()})
    lines = run_lines()
    writechild._write(run, lines[1] * (pagecache.WRITEBACK_AFTER // len(lines[1]) + 1))
    writechild._end_streams(run)
    done = writechild._finish(run)
    assert done.error is None and done.points > 0
    assert seen and all(name.startswith("points-writeback") for name, _ in seen)
    assert not any(closed for _, closed in seen)


def test_a_points_harvest_into_a_directory_starts_its_writer_processes_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The writer processes start before the harvester's own imports and set-up, which
    their start then overlaps; the first pool takes them, later ones start their own."""
    early: list[str] = []
    monkeypatch.setattr(writerpool, "start_early", lambda: early.append("started"))
    for out, started in ((str(tmp_path), ["started"]), ("-", []), ("s3://bucket/p/", [])):
        early.clear()
        # No runs named: refused (exit 2) after the writers would have started.
        assert main(["harvest", "--format", "points", "--out", out]) == 2
        assert early == started, out
    capsys.readouterr()
    monkeypatch.undo()
    writerpool.start_early()
    writerpool.start_early()
    assert len(writerpool._EARLY) == 1
    waiting = writerpool._EARLY[0]
    first = writerpool.WriterPool(2)
    again = writerpool.WriterPool(1)
    try:
        assert first.writers == [waiting] and not writerpool._EARLY
        assert again.writers[0] is not waiting
        files = ChildRunFiles(first.for_run(), 1, "points", "none", None, temp_paths(tmp_path, 1))
        files.write(run_lines()[0])
        files.finish()
        assert files.written("meta.ndjson")[0] > 0
    finally:
        first.close()
        again.close()


def stalled(child: WriterProcess, tmp_path: Path, big: bytes) -> ChildRunFiles:
    """Run 2 open on a child that reads nothing more, `big` written to it: in the pipe's
    thread's hands, which wait for the child (send SIGCONT to go on)."""
    files = ChildRunFiles(child, 1, "points", "none", None, temp_paths(tmp_path, 1))
    files.finish()  # the child is up
    files = ChildRunFiles(child, 2, "points", "none", None, temp_paths(tmp_path, 2))
    child._proc.send_signal(signal.SIGSTOP)
    files.write(big)  # alone (more than the pipe holds)
    while child._queue:  # the pipe's thread took it
        time.sleep(0.01)
    return files


def test_the_requests_queued_go_into_the_pipe_in_one_system_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the pipe is full, requests pile up in the queue; the pipe's thread then
    writes them all with one `writev`, not one write each: each call gives the GIL back
    and takes it again, and the child starves while the event loop holds it."""
    calls: list[int] = []
    writev = os.writev

    def counted(fd: int, pieces: list[bytes]) -> int:
        calls.append(len(pieces))
        return writev(fd, pieces)

    monkeypatch.setattr(os, "writev", counted)
    child = WriterProcess()
    try:
        small = run_lines(2)[0]
        files = stalled(child, tmp_path, small * (writeproc.PIPE_SIZE // len(small) + 1))
        for _ in range(20):  # queued behind the big one, which waits for the child
            files.write(small)
        child._proc.send_signal(signal.SIGCONT)
        files.finish()
        assert max(calls) >= 2 * 20  # a header and the data of each, in one call
        lines = writeproc.PIPE_SIZE // len(small) + 1 + 20
        assert (tmp_path / "2.meta.ndjson").read_bytes() == small * lines
    finally:
        child._proc.send_signal(signal.SIGCONT)
        child.close()


def test_every_byte_goes_into_the_pipe_when_a_call_writes_only_part(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A signal can end a `writev` part-way: the rest follows, in order."""
    writev = os.writev
    monkeypatch.setattr(os, "writev", lambda fd, pieces: writev(fd, [pieces[0][:3]]))
    read, write = os.pipe()
    try:
        writeproc._write_all(write, [b"header", b"", b"the data"])
        os.close(write)
        assert os.read(read, 100) == b"headerthe data"
    finally:
        os.close(read)


def test_a_request_without_lines_never_waits_for_room(tmp_path: Path) -> None:
    """A run's open, finish and discard carry no lines: they take no room in the queue,
    so the event loop may send them (an aborted run's discard) even while the queue holds more
    than its bound (a batch larger than it goes alone)."""
    child = WriterProcess()
    try:
        small = run_lines(2)[0]
        huge = small * (writeproc.QUEUED_BYTES // len(small) + 1)  # more than the bound
        files = stalled(child, tmp_path, huge)
        files.write_nowait(huge)  # queued too if the one in the pipe took no room
        paths = temp_paths(tmp_path, 3)
        opened = threading.Event()

        def open_another() -> None:
            ChildRunFiles(child, 3, "points", "none", None, paths)
            opened.set()

        threading.Thread(target=open_another, daemon=True).start()
        assert opened.wait(5)
    finally:
        child._proc.send_signal(signal.SIGCONT)
        child.close()


def test_a_child_whose_parent_was_killed_ends_quietly(tmp_path: Path) -> None:
    """The parent killed (kill -9) before the child's answer: the child's broken pipe was
    a traceback on the job's stderr, after the job had gone."""
    import pickle
    import subprocess
    import sys

    paths = {k: str(p) for k, p in temp_paths(tmp_path, 1).items()}
    read_end, write_end = os.pipe()
    child = subprocess.Popen(
        [sys.executable, "-m", "harvester.writechild"],
        stdin=subprocess.PIPE, stdout=write_end, stderr=subprocess.PIPE,
    )  # fmt: skip
    os.close(write_end)
    os.close(read_end)  # the parent gone: nobody reads the answers
    assert child.stdin is not None
    data = run_lines()[1]
    pickle.dump(("open", 1, ("points", "none", None, paths), 0), child.stdin)
    pickle.dump(("write", 1, (), len(data)), child.stdin)
    child.stdin.write(data)
    pickle.dump(("finish", 1, (), 0), child.stdin)
    _, err = child.communicate(timeout=30)
    assert (child.returncode, err.decode()) == (0, "")


class _Answers(io.BytesIO):
    """The answers' pipe, noting when each answer is written among the child's events."""

    def __init__(self, events: list[tuple[str, int]]) -> None:
        super().__init__()
        self.events = events

    def flush(self) -> None:
        self.events.append(("answer", len(self.getvalue())))


def test_the_child_goes_on_with_the_next_run_while_a_finished_one_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's finish waits for its last writes on a thread of its own (`_finisher`): the
    main thread opens and builds the next run meanwhile, and the answers keep their order."""
    from harvester import directfile

    events: list[tuple[str, int]] = []
    real_open, real_write = writechild._open, directfile._write_at

    def noted_open(run_id: int, *args: object) -> writechild._ChildRun:
        events.append(("open", run_id))
        return real_open(run_id, *args)  # type: ignore[arg-type]

    def slow_write(*args: object) -> None:
        time.sleep(0.3)  # the disk's time: the finish of run 1 waits for it
        real_write(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(writechild, "_open", noted_open)
    monkeypatch.setattr(directfile, "_write_at", slow_write)
    requests = io.BytesIO()
    for run_id in (1, 2):
        paths = {k: str(p) for k, p in temp_paths(tmp_path, run_id).items()}
        pickle.dump(("open", run_id, ("points", "none", None, paths), 0), requests)
        for data in run_lines(run_id):
            pickle.dump(("write", run_id, None, len(data)), requests)
            requests.write(data)
        pickle.dump(("finish", run_id, None, 0), requests)
    requests.seek(0)
    answers = _Answers(events)
    writechild.serve(requests, answers)
    assert [kind for kind, _ in events] == ["open", "open", "answer", "answer"]
    answers.seek(0)
    first, second = pickle.load(answers), pickle.load(answers)
    for run_id, done in ((1, first), (2, second)):
        assert done.error is None and done.points == 6 * 30
        data = (tmp_path / f"{run_id}.points.ndjson").read_bytes()
        assert done.written["points.ndjson"] == (len(data), hashlib.sha256(data).hexdigest())


def test_the_child_loop_serves_again_in_the_same_process(tmp_path: Path) -> None:
    """Each `serve` has a finishing thread of its own: one shared by the process was shut
    down by the first loop's end, and a second loop's finish could not be answered."""
    for attempt in ("first", "second"):
        requests = io.BytesIO()
        (tmp_path / attempt).mkdir()
        paths = {k: str(p) for k, p in temp_paths(tmp_path / attempt, 1).items()}
        pickle.dump(("open", 1, ("points", "none", None, paths), 0), requests)
        for data in run_lines():
            pickle.dump(("write", 1, None, len(data)), requests)
            requests.write(data)
        pickle.dump(("finish", 1, None, 0), requests)
        requests.seek(0)
        answers = io.BytesIO()
        writechild.serve(requests, answers)
        answers.seek(0)
        done = pickle.load(answers)
        assert done.error is None and done.points == 6 * 30
