"""The writer process's second thread: a points run's bytes hashed and written behind the
thread that builds them (`writechild`).

A points harvest writes 5x raw's bytes (large: 2 GB); their sha256 (~1.2 s) and the page
cache's copy (~0.6 s) took half of the child's main thread, which also reads the pipe,
splits the lines and builds the points: that one thread was the harvest's longest path
(3.9 s of CPU on large, where raw's whole harvest takes 2.6 s). Both release the GIL, so a
thread of their own does them beside the building (main thread ~3.8 -> ~1.9 s; the
process's CPU ~0.3 s more, the cost of the hand-over).

The pieces (a serie's lines, ~64 KB) are handed on as they are, not copied, in lists of
about `CHUNK` bytes, so the two threads meet on the queue's lock a few times a MB. A piece
that may change once written (a bytearray) is copied first. Between two pieces the thread
needs the GIL, which it got in time (measured: under 0.2 s of waits over large with the
default switch interval; a shorter one cost CPU and saved nothing).

Everything a file gets goes through its `BehindWriter`, in order, on the one thread;
`WriteBehind.wait` returns once all of it is written, hashed or failed: a run's `finish`
waits for that before it reads sizes and digests or closes its files. The bytes queued
are bounded (`QUEUED`), and the main thread waits for room: memory stays flat.
"""

from __future__ import annotations

import collections
import threading
from typing import BinaryIO

from .compression import HashingWriter

#: Bytes of pieces handed on at once (a list of them).
CHUNK = 1 << 20
#: Bytes handed on and not yet written, at most (more waits for room).
QUEUED = 4 << 20

Piece = bytes | bytearray | memoryview


class WriteBehind:
    """One thread that hashes and writes, in order, what `BehindWriter`s hand it."""

    def __init__(self) -> None:
        self._lists: collections.deque[tuple[BehindWriter, list[Piece], int]] = collections.deque()
        self._queued = 0
        self._moved = threading.Condition()
        self._busy = False  # a list taken and not yet written
        threading.Thread(target=self._run, name="points-write-behind", daemon=True).start()

    def put(self, writer: BehindWriter, pieces: list[Piece], size: int) -> None:
        """Queue `pieces` (`size` bytes) for `writer`; waits while `QUEUED` are queued."""
        with self._moved:
            while self._queued and self._queued + size > QUEUED:
                self._moved.wait()
            self._lists.append((writer, pieces, size))
            self._queued += size
            self._moved.notify_all()

    def wait(self) -> None:
        """Until every piece queued is written (or has failed)."""
        with self._moved:
            while self._lists or self._busy:
                self._moved.wait()

    def _run(self) -> None:
        while True:
            with self._moved:
                while not self._lists:
                    self._moved.wait()
                writer, pieces, size = self._lists.popleft()
                self._busy = True
            writer.write_now(pieces)
            with self._moved:
                self._queued -= size
                self._busy = False
                self._moved.notify_all()


class BehindWriter(HashingWriter):
    """A file's `HashingWriter` whose hashing and writing happen on `WriteBehind`'s
    thread: `write` gathers pieces, `send` hands on what is gathered. `size` counts at
    once; the digest, the file's bytes and `error` (the first write that failed: the rest
    is dropped) are whole only after `WriteBehind.wait`."""

    def __init__(self, raw: BinaryIO, behind: WriteBehind) -> None:
        super().__init__(raw)
        self._behind = behind
        self._gathered: list[Piece] = []
        self._filled = 0
        self.error: Exception | None = None

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
            self._behind.put(self, self._gathered, self._filled)
            self._gathered, self._filled = [], 0

    def flush(self) -> None:
        self.send()
        self._behind.wait()
        self.raw.flush()

    def drop(self) -> None:
        """Write nothing more (the run is discarded): what is queued is skipped."""
        self._gathered, self._filled = [], 0
        if self.error is None:
            self.error = OSError("discarded")

    def write_now(self, pieces: list[Piece]) -> None:
        """On the thread: hash and write, unless an earlier write failed."""
        if self.error is not None:
            return
        try:
            for piece in pieces:
                self.sha.update(piece)
                self.raw.write(piece)
        except Exception as exc:  # told at the run's finish
            self.error = exc


def _immutable(data: Piece) -> bool:
    """Bytes that stay as they are while queued (a bytearray or a view of one may not)."""
    if isinstance(data, memoryview):
        return isinstance(data.obj, bytes)
    return isinstance(data, bytes)
