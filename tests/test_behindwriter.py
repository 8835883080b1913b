"""A points run's files are hashed and written on the writer process's second thread
(`writebehind.BehindWriter`), behind the thread that builds the lines: in order, whole,
bounded, with the bytes each write was given even if their buffer changes afterwards;
a failed write is kept for the run's finish, a discarded run's queued writes skipped."""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, cast

from harvester import writebehind, writechild
from harvester.records import encode
from harvester.simulator.generated import generate_cloud
from harvester.writebehind import BehindWriter, WriteBehind


class Recorded:
    """A file or hash whose calls note the thread that made them."""

    def __init__(self, inner: Any, threads: set[str], name: str) -> None:
        self._inner, self._threads, self._name = inner, threads, name

    def __getattr__(self, attr: str) -> Any:
        if attr == self._name:
            self._threads.add(threading.current_thread().name)
        return getattr(self._inner, attr)


class Stuck(io.BytesIO):
    """A file whose writes wait until `go_on` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.go_on = threading.Event()

    def write(self, data: Any) -> int:
        self.go_on.wait()
        return super().write(data)


def test_a_points_runs_sidecar_is_hashed_and_written_on_the_write_behind_thread(
    tmp_path: Path,
) -> None:
    cloud = generate_cloud(runs=1, metrics=6, points=30, seed=3)
    run = next(iter(cloud.runs.values()))
    metrics = run.metrics()
    series = [run.serie(str(m["id"]), None) for m in metrics]
    paths = {kind: tmp_path / f"1.{kind}" for kind in ("points.ndjson", "meta.ndjson")}
    for path in paths.values():
        path.touch()
    child = writechild._open(1, "points", "none", None, {k: str(p) for k, p in paths.items()})
    hashed: set[str] = set()
    written: set[str] = set()
    for writer in child.behind:
        writer.sha = cast(Any, Recorded(writer.sha, hashed, "update"))
        writer.raw = cast(BinaryIO, Recorded(writer.raw, written, "write"))
    writechild._write(child, encode("metric", 1, metrics))
    writechild._write(child, encode("series", 1, series))
    writechild._end_streams(child)
    done = writechild._finish(child)
    assert done.error is None and done.points == 6 * 30
    assert hashed == written == {"write-behind"}
    for kind, path in paths.items():
        data = path.read_bytes()
        assert done.written[kind] == (len(data), hashlib.sha256(data).hexdigest())


def test_bytes_that_change_after_a_write_are_written_as_they_were() -> None:
    out = io.BytesIO()
    writer = BehindWriter(cast(BinaryIO, out), WriteBehind())
    kept = b"kept " * 10
    buffer = bytearray(b"first ")
    writer.write(buffer)
    writer.write(memoryview(kept)[:5])  # a view of bytes: handed on as it is
    writer.write(memoryview(buffer)[:5])
    buffer[:] = b"later "
    writer.flush()
    assert out.getvalue() == b"first kept first"
    assert (
        writer.size == 16 and writer.sha.hexdigest() == hashlib.sha256(out.getvalue()).hexdigest()
    )


def test_a_failed_write_drops_the_rest_and_is_kept_for_the_finish() -> None:
    class Full(io.BytesIO):
        def write(self, data: Any) -> int:
            raise OSError(28, "No space left on device")

    writer = BehindWriter(cast(BinaryIO, Full()), WriteBehind())
    writer.write(b"a" * (writebehind.CHUNK + 1))  # handed on at once
    writer.write(b"b")
    writer.flush()
    assert isinstance(writer.error, OSError) and writer.error.errno == 28


def test_what_is_handed_on_and_not_yet_written_stays_bounded() -> None:
    """While the file does not take bytes, the builder waits for room once `LIMIT` are
    queued: its lines are not held without bound."""
    out = Stuck()
    writer = BehindWriter(cast(BinaryIO, out), WriteBehind())
    piece = bytes(range(256)) * 256  # 64 KiB
    total = 4 * writebehind.LIMIT

    def build() -> None:
        for _ in range(total // len(piece)):
            writer.write(piece)
        writer.flush()

    builder = threading.Thread(target=build)
    builder.start()
    accepted = _settled(lambda: writer.size)  # the builder has stopped taking lines
    assert builder.is_alive()
    assert accepted <= writebehind.LIMIT + 2 * writebehind.CHUNK
    out.go_on.set()
    builder.join()
    assert out.getvalue() == piece * (total // len(piece))


def test_the_writer_process_builds_a_whole_batch_s_lines_while_the_last_is_written() -> None:
    """An answer's batch (~2 MB) makes ~10 MB of point lines: the main thread hands them
    all on without waiting while the thread is still busy with the batch before (at 4 MiB
    the two took turns within each batch)."""
    out = Stuck()
    writer = BehindWriter(cast(BinaryIO, out), writechild._behind())
    piece = bytes(range(256)) * 256  # 64 KiB, a serie's lines
    batch = 10 << 20
    built = threading.Event()

    def build() -> None:
        for _ in range(batch // len(piece)):
            writer.write(piece)
        writer.send()
        built.set()

    builder = threading.Thread(target=build)
    builder.start()
    try:
        assert built.wait(20)  # never waited for room while nothing was written
    finally:
        out.go_on.set()
        builder.join()
    writer.settle()
    assert out.getvalue() == piece * (batch // len(piece))


def test_a_discarded_run_s_queued_pieces_are_not_written() -> None:
    behind = WriteBehind()
    stuck = Stuck()
    first = BehindWriter(cast(BinaryIO, stuck), behind)  # holds the thread
    out = io.BytesIO()
    dropped = BehindWriter(cast(BinaryIO, out), behind)
    first.write(b"a" * writebehind.CHUNK)
    dropped.write(b"b" * writebehind.CHUNK)  # queued behind the first
    dropped.write(b"c")  # gathered, not yet handed on
    dropped.drop()
    dropped.send()
    stuck.go_on.set()
    first.settle()
    dropped.settle()
    assert out.getvalue() == b""


def _settled(value: Callable[[], int]) -> int:
    """`value` once it has not changed for a while (or after 20 s)."""
    deadline = time.monotonic() + 20
    last = value()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = value()
        if now == last and now:
            return now
        last = now
    return last
