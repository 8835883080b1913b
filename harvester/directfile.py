"""A points file written past the page cache (`O_DIRECT`), in whole aligned blocks.

Why: a points harvest writes 5x raw's bytes (large: 2 GB). Through the page cache each
byte was copied into a page the kernel had to find, charge, mark dirty and later write
back: ~1 s of the writer's system CPU on large, plus the flusher threads', on two cores
that the harvest keeps busy. Written directly, the device reads the bytes from this
process's buffer: 2 GB of `dd` took 0.25 s of system CPU in 4 MiB direct writes, 2-4 s
buffered (this VM, whose freed pages are slow to touch again: `pagecache`).

Direct I/O wants the buffer, the file offset and the length aligned to the device's
block: the lines are gathered in a page-aligned buffer (an anonymous mmap, reused from
file to file) and written a whole buffer at a time; the last one at `close`, padded with
zeros to a whole block, and the file then cut to its length. A filesystem without direct
I/O (it refuses the open or a write, `EINVAL`) gets plain buffered writes, the same
bytes.

The file hashes its own bytes (`sha`, the manifest's) as they are written to it, in the
caller's thread: each piece is then hashed while it is still in this CPU's cache (~1.9
GB/s), where a thread hashing each full buffer read it from the other core's (~1.3 GB/s:
0.4 s more CPU at large, on two cores the harvest keeps busy). The caller is a writer
process of its own (`writerpool`: two of them for points), so the hash holds up no one
else; hashlib lets go of the GIL for each piece, so the file's writing thread and the
finisher go on meanwhile. Each full buffer goes to a thread of its own, which writes it
at its place in the file (`pwrite`): a direct write returns only once the device has the
bytes (2 GB: 1.5-4 s of waiting on this VM), and meanwhile the next buffers fill.
`DEPTH` full buffers wait at most, then the writer waits. Durability is the same either
way: it comes from the commit's fsync, which also covers the file's size.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import mmap
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO, cast

from .compression import HashingWriter

#: Bytes of one direct write: a multiple of any device's block (512 B or 4 KiB) and of
#: the page. `dd` of 2 GB: 0.17 s of system CPU in 4 MiB writes (1 MiB: 0.25 s, 256 KiB:
#: 0.77 s); and each buffer is one hand-over to the writing thread, which takes the GIL
#: back. 2 MiB since points have two writer processes (`writerpool`): with 4 MiB, the
#: bench's peak (harvester and writers) was 162-171 MB at large, with 2 MiB 140-149 MB,
#: as fast (1 MiB: 132-140 MB, 1-2% slower).
BLOCK = 2 << 20
#: What a direct write's length must be a multiple of: any device's block (512 B or 4 KiB).
ALIGN = 4096
#: Full buffers waiting for the writing thread at most (then the writer waits).
DEPTH = 2
#: Buffers kept for the next ones (a buffer each points file open, and `DEPTH` more).
#: Each is resident: with one writer and 4 MiB buffers, 8 kept made the bench's peak
#: 135-140 MB, 4 kept 123-132 MB.
KEPT_BUFFERS = 4

_DIRECT = getattr(os, "O_DIRECT", 0)


class DirectFile:
    """A file opened for writing by path, hashed as it is written and its whole blocks
    written with `O_DIRECT` by a thread of their own (`write`, `close`, `fileno`: what
    the writer process's stack asks of a file). A write that failed is raised by a later `write` or
    by `close`; `sha` holds every byte once `close` returns."""

    def __init__(self, path: str) -> None:
        self._fd, self.direct = _open(path)
        self._buffer = _pool.take()
        self._filled = 0
        self._offset = 0  # where the buffer's bytes go in the file
        self._pending: list[Future[None]] = []
        self.sha = hashlib.sha256()
        self.closed = False

    def fileno(self) -> int:
        return self._fd

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Hash `data` and copy it into the buffer, handing each buffer on as it fills."""
        size = len(data)
        self.sha.update(data)
        with memoryview(data) as view:
            done = 0
            while done < size:
                take = min(BLOCK - self._filled, size - done)
                self._buffer[self._filled : self._filled + take] = view[done : done + take]
                self._filled += take
                done += take
                if self._filled == BLOCK:
                    self._hand_on()
        return size

    def flush(self) -> None:
        """Nothing: whole blocks are written as they fill, the last one at `close`."""

    def close(self) -> None:
        """Hand on the last partial buffer, wait for every write of the file, and close it.
        The last buffer is written directly too, padded to a whole block with zeros, and
        the file then cut to its length: through the page cache, the runs' last blocks
        (large: ~2 MB a run) had cost the writer ~0.3 s of system CPU."""
        if self.closed:
            return
        self.closed = True
        try:
            if self._filled:
                self._hand_on()
            for pending in self._pending:
                pending.result()
            os.ftruncate(self._fd, self._offset)  # the padding of the last block
        finally:
            for pending in self._pending:  # (after a failure: none still writes)
                with contextlib.suppress(Exception):
                    pending.result()
            os.close(self._fd)
            _pool.give(self._buffer)

    def buffered(self) -> None:
        """Write through the page cache from now on."""
        if self.direct:
            flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
            fcntl.fcntl(self._fd, fcntl.F_SETFL, flags & ~_DIRECT)
            self.direct = False

    def _hand_on(self) -> None:
        """The full buffer to the writing thread, and an empty one to fill."""
        still = []
        for pending in self._pending:
            if not pending.done():
                still.append(pending)
            elif (failed := pending.exception()) is not None:
                self._filled = 0  # the run fails: its bytes are moot
                raise failed
        self._pending = still
        self._pending.append(_writes.submit(self, self._buffer, self._offset, self._filled))
        self._offset += self._filled
        self._buffer, self._filled = _pool.take(), 0


class DirectHashing(HashingWriter):
    """A `DirectFile`'s place in a run's write stack: it counts the bytes, and the file
    hashes them (`DirectFile.sha`)."""

    def __init__(self, raw: DirectFile) -> None:
        super().__init__(cast(BinaryIO, raw))
        self.sha = raw.sha

    def write(self, data: bytes) -> int:
        self.size += len(data)
        return self.raw.write(data)


def _open(path: str) -> tuple[int, bool]:
    """The file's descriptor, and whether it writes directly (a filesystem without
    direct I/O refuses the flag: then plain writes)."""
    if _DIRECT:
        with contextlib.suppress(OSError):
            return os.open(path, os.O_WRONLY | _DIRECT), True
    return os.open(path, os.O_WRONLY), False


def _write_at(file: DirectFile, buffer: mmap.mmap, offset: int, size: int) -> None:
    """`size` bytes of `buffer` at `offset` of the file, all of them (a short write goes
    on from there; a direct write refused, as at an unaligned place after a short one,
    is done through the page cache). A file's last buffer, of any length, is written to
    the end of its last block, the rest zeros (cut off by `close`)."""
    if file.direct and size % ALIGN:
        whole = size + ALIGN - size % ALIGN
        buffer[size:whole] = bytes(whole - size)
        size = whole
    done = 0
    with memoryview(buffer) as view:
        while done < size:
            try:
                done += os.pwrite(file.fileno(), view[done:size], offset + done)
            except OSError as exc:
                if exc.errno != errno.EINVAL or not file.direct:
                    raise
                file.buffered()


class _Writes:
    """The thread that writes full buffers, in the order they came; `DEPTH` wait at most.
    Each buffer goes back to the pool once written."""

    def __init__(self) -> None:
        self._room = threading.BoundedSemaphore(DEPTH)
        self._thread: ThreadPoolExecutor | None = None
        self._starting = threading.Lock()  # (the main thread and the finisher submit)

    def submit(self, file: DirectFile, buffer: mmap.mmap, offset: int, size: int) -> Future[None]:
        """Write the buffer (its bytes hashed already): the write's future."""
        self._room.acquire()
        with self._starting:
            if self._thread is None:
                self._thread = ThreadPoolExecutor(1, thread_name_prefix="direct-write")
        try:
            return self._thread.submit(self._write, file, buffer, offset, size)
        except BaseException:
            self._room.release()
            raise

    def _write(self, file: DirectFile, buffer: mmap.mmap, offset: int, size: int) -> None:
        try:
            _write_at(file, buffer, offset, size)
        finally:
            _pool.give(buffer)
            self._room.release()


class _Pool:
    """Page-aligned buffers handed from one write to the next: a new one's pages are
    touched afresh (slow on a VM that gives freed memory back, `pagecache`)."""

    def __init__(self) -> None:
        self._free: list[mmap.mmap] = []
        self._lock = threading.Lock()

    def take(self) -> mmap.mmap:
        with self._lock:
            if self._free:
                return self._free.pop()
        return mmap.mmap(-1, BLOCK)

    def give(self, buffer: mmap.mmap) -> None:
        with self._lock:
            if len(self._free) < KEPT_BUFFERS:
                self._free.append(buffer)
                return
        buffer.close()


_pool = _Pool()
_writes = _Writes()
