"""The directory sink's writes done behind the writer task: one thread of their own
takes each run's lines (hash, compress, write: `runfiles`) in the order they came,
while the writer task goes on to the next message.

Each write used to be awaited in anyio's worker thread: the writer task handed an answer
over, the thread waited for the GIL, did the work, and the writer resumed only once the
event loop, busy parsing answers, came back to it. The writer spent most of a large
harvest in those waits, so every millisecond a write took more (zstd's compression,
~1.5 ms a MB) lengthened the job by as much, with the second core idle meanwhile. Now a
write is queued and the writer task goes on; it waits only while `LIMIT` bytes are
queued. A write that fails is raised by the run's next write or by its commit.

The writer process (`writechild`) has the same thread for a points run's sidecar
(`BehindWriter`), and had it for the points file until that file hashed and wrote itself
(`directfile`, a 4 MiB buffer at a time: this thread took the GIL back after each serie's lines,
~30,000 times on large). The story of that step: a points harvest writes 5x raw's bytes
(large: 2 GB), and their sha256
(~1.2 s) and the page cache's copy (~0.6 s) took half of the child's main thread, which
also reads the pipe, splits the lines and builds the points. Both release the GIL, so
this thread does them beside the building (main thread ~3.8 -> ~1.9 s of CPU on large;
the process's ~0.3 s more, the cost of the hand-over). Its pieces (a serie's lines,
~64 KB) are handed on as they are, not copied, in lists of about `CHUNK` bytes, so the
two threads meet on the queue's lock a few times a MB; a piece that may change once
written (a bytearray) is copied first. Between two pieces the thread needs the GIL, which
it got in time (measured: under 0.2 s of waits over large at the default switch
interval; a shorter one cost CPU and saved nothing; perf sched on a loaded box: ~0.4 s of
futex waits beyond the queue's). Each piece is hashed, then written while the hash has left
it in the core's cache: a list joined first (two GIL takes a list, not two a piece) made
the write's copy into the page cache 3.5x as slow (large: 0.20 -> 0.71 s) and the
thread's CPU 2.0 -> 2.4 s. The writer process queues more than `LIMIT`
(`writechild.QUEUED_LINES`).
"""

from __future__ import annotations

import functools
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from .compression import HashingWriter

#: Bytes queued at most before the writer task waits (a few answers: the thread has
#: work while the event loop parses the next one).
LIMIT = 4 << 20
#: Bytes of pieces a `BehindWriter` hands on at once (a list of them).
CHUNK = 1 << 20

Piece = bytes | bytearray | memoryview


@dataclass
class Lane:
    """One run's writes: how many are queued or under way, and the first that failed (the
    run's later writes are skipped). `dropped`: the run is aborted, its writes moot."""

    queued: int = 0
    error: BaseException | None = None
    dropped: bool = False

    def raise_failed(self) -> None:
        if self.error is not None:
            raise self.error


class WriteBehind:
    """The thread and its queue; the thread starts with the first write."""

    def __init__(self, limit: int = LIMIT) -> None:
        self._limit = limit
        self._changed = threading.Condition()
        self._jobs: deque[tuple[Lane, Callable[[], object], int]] = deque()
        self._bytes = 0
        self._thread: threading.Thread | None = None
        self._closing = False

    def submit(self, lane: Lane, job: Callable[[], object], size: int) -> bool:
        """Queue `job` (`size` bytes) on `lane`; False when the queue is full: the caller
        waits with `wait_room` (in a worker thread) before it queues more."""
        with self._changed:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="write-behind")
                self._thread.daemon = True  # a job that dies unclosed is not held at exit
                self._thread.start()
            lane.queued += 1
            self._jobs.append((lane, job, size))
            self._bytes += size
            self._changed.notify_all()
            return self._bytes < self._limit

    def wait_room(self) -> None:
        """Block until fewer than `limit` bytes are queued."""
        with self._changed:
            self._changed.wait_for(lambda: self._bytes < self._limit)

    def settle(self, lane: Lane) -> None:
        """Block until `lane`'s writes are done (or skipped)."""
        with self._changed:
            self._changed.wait_for(lambda: lane.queued == 0)

    def close(self) -> None:
        """The thread ends once its queue is empty."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()

    def _work(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._jobs or self._closing)
                if not self._jobs:
                    self._thread = None
                    return
                lane, job, size = self._jobs.popleft()
            if lane.error is None and not lane.dropped:
                try:
                    job()
                except BaseException as exc:  # raised by the run's next write or commit
                    lane.error = exc
            with self._changed:
                lane.queued -= 1
                self._bytes -= size
                self._changed.notify_all()


class BehindWriter(HashingWriter):
    """A file's `HashingWriter` whose hashing and writing happen on `behind`'s thread, in
    a lane of its own: `write` gathers pieces, `send` hands on what is gathered (waiting
    while the queue is full). `size` counts at once; the digest, the file's bytes and
    `error` (the first write that failed: the rest is skipped) are whole only once
    `settle` returns."""

    def __init__(self, raw: BinaryIO, behind: WriteBehind) -> None:
        super().__init__(raw)
        self._behind = behind
        self.lane = Lane()
        self._gathered: list[Piece] = []
        self._filled = 0

    @property
    def error(self) -> BaseException | None:
        return self.lane.error

    def write(self, data: Piece) -> int:
        size = len(data)
        self.size += size
        if not _immutable(data):
            data = bytes(data)
        self._gathered.append(data)
        self._filled += size
        if self._filled >= CHUNK:
            self.send()
        return size

    def send(self) -> None:
        """Hand on the pieces gathered (at the end of a request: none are kept idle)."""
        if self._gathered:
            job = functools.partial(self._write_now, self._gathered)
            if not self._behind.submit(self.lane, job, self._filled):
                self._behind.wait_room()
            self._gathered, self._filled = [], 0

    def settle(self) -> None:
        """Until everything handed on is written (or skipped)."""
        self._behind.settle(self.lane)

    def flush(self) -> None:
        self.send()
        self.settle()
        self.raw.flush()

    def drop(self) -> None:
        """Write nothing more (the run is discarded): what is queued is skipped."""
        self._gathered, self._filled = [], 0
        self.lane.dropped = True

    def _write_now(self, pieces: list[Piece]) -> None:
        """On the thread: hash and write (a failure is kept in the lane)."""
        for piece in pieces:
            self.sha.update(piece)
            self.raw.write(piece)


def _immutable(data: Piece) -> bool:
    """Bytes that stay as they are while queued (a bytearray or a view of one may not)."""
    if isinstance(data, memoryview):
        return isinstance(data.obj, bytes)
    return isinstance(data, bytes)
