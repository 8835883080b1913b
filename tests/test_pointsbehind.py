"""A points run's files are hashed and written on the writer process's second thread
(`pointsbehind`), behind the thread that builds the lines: in order, whole, bounded, and
with the bytes each write was given even if their buffer changes afterwards."""

from __future__ import annotations

import hashlib
import io
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO, cast

from harvester import pointsbehind, writechild
from harvester.pointsbehind import BehindWriter, WriteBehind
from harvester.records import encode
from harvester.simulator.generated import generate_cloud


class Recorded:
    """A file or hash whose calls note the thread that made them."""

    def __init__(self, inner: Any, threads: set[str], name: str) -> None:
        self._inner, self._threads, self._name = inner, threads, name

    def __getattr__(self, attr: str) -> Any:
        if attr == self._name:
            self._threads.add(threading.current_thread().name)
        return getattr(self._inner, attr)


def test_a_points_run_is_hashed_and_written_on_the_write_behind_thread(tmp_path: Path) -> None:
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
    done = writechild._finish(child)
    assert done.error is None and done.points == 6 * 30
    assert hashed == written == {"points-write-behind"}
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
    writer.write(b"a" * (pointsbehind.CHUNK + 1))  # handed on at once
    writer.write(b"b")
    writer.flush()
    assert isinstance(writer.error, OSError) and writer.error.errno == 28


def test_what_is_handed_on_and_not_yet_written_stays_bounded() -> None:
    """While the file does not take bytes, the builder waits for room once `QUEUED` are
    queued: its lines are not held without bound."""
    go_on = threading.Event()

    class Stuck(io.BytesIO):
        def write(self, data: Any) -> int:
            go_on.wait()
            return super().write(data)

    out = Stuck()
    behind = WriteBehind()
    writer = BehindWriter(cast(BinaryIO, out), behind)
    piece = bytes(range(256)) * 256  # 64 KiB
    total = 4 * pointsbehind.QUEUED

    def build() -> None:
        for _ in range(total // len(piece)):
            writer.write(piece)
        writer.flush()

    builder = threading.Thread(target=build)
    builder.start()
    deadline = time.monotonic() + 20
    while behind._queued < pointsbehind.QUEUED - pointsbehind.CHUNK and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # room for a builder that would go on
    accepted = writer.size
    assert builder.is_alive()
    assert accepted <= pointsbehind.QUEUED + 2 * pointsbehind.CHUNK
    go_on.set()
    builder.join()
    assert out.getvalue() == piece * (total // len(piece))
