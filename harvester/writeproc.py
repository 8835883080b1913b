"""`--format points` and `parquet` into a directory: each run's write stack
(`runfiles.RunFiles`: split, build the point lines or the Parquet row groups, compress,
hash, write) in a child process of its own (`writechild`, its side of the pipe).

Why a process: the point lines are 5x raw's bytes (medium: 511 MB for 103 MB), and
building them holds the GIL (bytes.replace, translate, count), so in a worker thread they
took turns with the event loop that parses the answers, and hashing and writing them,
though they release the GIL, waited for it after each piece: a points harvest cost the
sum of both, 1.7x raw's wall time on two cores with one of them nearly idle. Parquet
was worse (2.3x-2.5x): Arrow parses and encodes without the GIL, but the Python between
its calls waited for the GIL behind the busy event loop. The child has an interpreter and
a GIL of its own, so the two run side by side (and only the child imports pyarrow).

The parent keeps everything about publication (`sinks.DirectorySink`): it creates each
temporary file, holds its flock and its descriptor, fsyncs, renames and writes the
manifest. The child opens the same temporary files by path, writes into them and, at
`finish`, closes them and answers with each file's size and sha256 and the points
counted. Requests go down the child's stdin and answers come up its stdout, pickled
(only this package's two ends speak on that pipe): `write` is sent without waiting (a
full pipe makes the parent wait, which is the back pressure), `finish` waits for its
answer, by which time every write before it has been done. A batch of series packed for
Parquet (`packed`) goes as `packed`: its header pickled, then its values' bytes.

A write that failed in the child (a full disk) fails the run at its `finish` with that
error, as a failed flush at commit would; a child that died fails every run after it.
"""

from __future__ import annotations

import collections
import contextlib
import os
import pickle
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from .packed import Text
from .records import Chunk
from .runfiles import file_counts

#: Bytes the pipe to the child holds (Linux F_SETPIPE_SZ): a run's batch of lines (~2 MB)
#: goes in a few system calls instead of one per 64 KiB.
PIPE_SIZE = 1 << 20
#: Bytes of lines queued for the pipe: the writer task goes on while the child works, and
#: the child finds the next batches waiting while the event loop is busy elsewhere
#: (parsing a 2 MB answer takes it ~20 ms, in which the child writes ~2 MB of a run's
#: lines). Counted in bytes, not requests: a run's small requests (its metrics, its
#: summary) took the places of big ones, and the child sat idle (a fifth of its time on
#: large, in waits of 10-60 ms). As much as two big batches held before, no more: the
#: channel before the writer holds more (6 MiB cost medium's peak ~10 MB).
QUEUED_BYTES = 4 << 20
#: Bytes the pipe's thread takes from the queue at once, written in one system call. They
#: leave the queue's count as they are taken, so the writer task queues more meanwhile
#: (counted until they are in the pipe, large took ~0.5 s longer, for 2-5 MB less).
FEED_BYTES = 2 << 20
#: Seconds to wait for a child whose pipe broke to end, to say how it did.
ENDING_WAIT = 2.0
#: Pieces of one `writev` (Linux's IOV_MAX).
IOV_MAX = 1024


@dataclass
class Finished:
    """What the child says of a run it finished: each file's (bytes, sha256), the points
    written, or the error that stopped it."""

    written: dict[str, tuple[int, str]] = field(default_factory=dict)
    points: int = 0
    error: OSError | None = None


class WriterProcess:
    """The child process and the pipe to it. `send` queues a request and returns (a full
    queue makes it wait: call it from a worker thread, or `send_nowait` from anywhere); a
    thread of its own writes the queue into the pipe, another reads the answers."""

    def __init__(self) -> None:
        # -P: `-m` would put the working directory first on the path, and the child would
        # run a `harvester` package found there (another checkout, or one planted)
        # instead of the parent's own.
        self._proc = subprocess.Popen(
            [sys.executable, "-P", "-m", "harvester.writechild"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._pipe = cast(BinaryIO, self._proc.stdin)
        self._answers = cast(BinaryIO, self._proc.stdout)
        _grow_pipe(self._pipe)
        self._queue: collections.deque[_Request | None] = collections.deque()
        self._queued = 0  # bytes of the requests queued and not yet in the pipe
        self._room = threading.Condition()
        self._waiting: collections.deque[Future[Any]] = collections.deque()
        self.failed: OSError | None = None
        #: Runs opened on it and not yet finished or discarded (`writerpool.WriterPool`).
        self.open_runs = 0
        self._lock = threading.Lock()  # `_waiting`, `_closed` and `open_runs` between threads
        self._closed = False  # no more answers come
        self._threads = [
            threading.Thread(target=self._feed, name="points-feed", daemon=True),
            threading.Thread(target=self._read, name="points-answers", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def send(self, request: _Request) -> None:
        self._check()
        with self._room:
            while not self._fits(request):
                self._room.wait()
            self._push(request)

    def send_nowait(self, request: _Request) -> bool:
        """Queue `request` if there is room; False if not (then `send` it from a thread)."""
        self._check()
        with self._room:
            if not self._fits(request):
                return False
            self._push(request)
        return True

    def _fits(self, request: _Request) -> bool:
        """Room for it: within `QUEUED_BYTES`, or nothing queued (a larger one goes alone).
        A request without data (a run's open, finish, discard) takes no room: it never
        waits, so the event loop may send it (`sinks.DirectorySink.abort` sends a discard)."""
        size = request.weight()
        return not size or not self._queued or self._queued + size <= QUEUED_BYTES

    def _push(self, request: _Request | None) -> None:
        self._queue.append(request)
        self._queued += request.weight() if request is not None else 0
        self._room.notify_all()

    def _take(self) -> list[_Request | None]:
        """The requests queued, up to `FEED_BYTES` (at least one): their bytes make room."""
        with self._room:
            while not self._queue:
                self._room.wait()
            taken: list[_Request | None] = []
            size = 0
            while self._queue and size < FEED_BYTES:
                request = self._queue.popleft()
                taken.append(request)
                if request is None:
                    break
                size += request.weight()
            self._queued -= size
            self._room.notify_all()
            return taken

    def ask(self, request: _Request) -> Any:
        """Send `request` and wait for its answer (after every request queued before it)."""
        request.answer = Future()
        self.send(request)
        return request.answer.result()

    def count_run(self, change: int) -> None:
        """A run opened on it (+1), or finished or discarded (-1): `open_runs`."""
        with self._lock:  # (the runs open and end on several threads)
            self.open_runs += change

    def _check(self) -> None:
        if self.failed is not None:
            raise self.failed

    def _feed(self) -> None:
        while True:
            taken = self._take()
            requests = [r for r in taken if r is not None]
            if requests:
                self._put(requests)
            if len(requests) < len(taken):
                break
        with contextlib.suppress(OSError):
            self._pipe.close()

    def _put(self, requests: list[_Request]) -> None:
        """Into the pipe in one system call, unless the child is gone (then each request
        waiting for an answer is told so). One call, not one a request: this thread takes
        the GIL back after each, which can wait for the event loop's turn (a 2 MB answer
        parsed, ~20 ms) while the child reads what the pipe holds (1 MiB, a few ms of its
        work) and then waits too."""
        pieces: list[Text] = []
        for request in requests:
            if request.answer is not None and not self._expect(request.answer):
                continue  # told: the child is gone, and nothing is written below
            header = (request.op, request.run_id, request.args, request.size())
            pieces.append(pickle.dumps(header))
            if isinstance(request.data, list):
                pieces += request.data
            elif request.data:
                pieces.append(request.data)
        if self.failed is not None:
            return
        try:
            _write_all(self._pipe.fileno(), pieces)
        except OSError as exc:
            self.failed = OSError(exc.errno, f"the writer process stopped: {self._ending()}")

    def _expect(self, answer: Future[Any]) -> bool:
        """Wait for an answer in turn; False (and the answer failed) once none can come."""
        with self._lock:
            if self.failed is None and not self._closed:
                self._waiting.append(answer)
                return True
        answer.set_exception(self.failed or OSError("the writer process stopped"))
        return False

    def _read(self) -> None:
        while True:
            try:
                answer = pickle.load(self._answers)
            except (OSError, EOFError, pickle.UnpicklingError) as exc:
                ending = self._ending(f"closed its answers ({exc!r})")  # (not under the lock)
                with self._lock:
                    self._closed = True
                    self.failed = self.failed or OSError(f"the writer process stopped: {ending}")
                break
            self._waiting.popleft().set_result(answer)
        while self._waiting:
            self._waiting.popleft().set_exception(self.failed)

    def _ending(self, otherwise: str = "closed its pipe") -> str:
        """How the child ended, for the error every run then gets: killed by a signal (the
        kernel's OOM killer sends SIGKILL) or its exit status (a Python error prints its
        traceback on stderr first); `otherwise` if it still runs a moment later."""
        try:
            status = self._proc.wait(timeout=ENDING_WAIT)
        except subprocess.TimeoutExpired:
            return otherwise
        if status < 0:
            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(-status).name}"
            return f"killed by signal {-status}"
        return f"exited with status {status}" + (" (its error is above)" if status else "")

    def close(self) -> None:
        """End the child (it closes what it still has open) and wait for it."""
        with self._room:
            self._push(None)
        for thread in self._threads:
            thread.join()
        self._proc.wait()
        self._answers.close()


@dataclass
class _Request:
    op: str
    run_id: int
    args: Any = None
    #: Its bytes: one piece, or several written end to end (a batch's texts).
    data: bytes | memoryview | list[Text] = b""
    answer: Future[Any] | None = None
    #: A packed batch's: the bytes of the lines it stands for (`weight`).
    lines: int | None = None

    def size(self) -> int:
        if isinstance(self.data, list):
            return sum(len(piece) for piece in self.data)
        return len(self.data)

    def weight(self) -> int:
        """Its bytes as the queue counts them (`QUEUED_BYTES`, `FEED_BYTES`): a packed
        batch's are those of its lines, which the child's work on it is about. At its
        values' 8 bytes a point (~1/6 of its lines'), a queue held ~6x as much of the
        child's work when it was behind: several runs ahead, each open in the child
        (~1 MB there: its metrics, its writer) and its batches here (large bench, Parquet:
        peaks 50-52 + 30-35 -> 46-50 + 28-30 MB anonymous, this process + the child)."""
        return self.size() if self.lines is None else self.lines


class ChildRunFiles:
    """`RunFiles`' calls for one run, done by the child (`WriterProcess`)."""

    def __init__(
        self,
        child: WriterProcess,
        run_id: int,
        output_format: str,
        codec: str,
        level: int | None,
        paths: Mapping[str, Path],
    ) -> None:
        self._child = child
        self.run_id = run_id
        self._kinds = list(paths)
        self._done = Finished()
        child.send(
            _Request(
                "open", run_id, (output_format, codec, level, {k: str(p) for k, p in paths.items()})
            )
        )
        child.count_run(+1)
        self._open = True

    def write_nowait(self, data: Chunk) -> bool:
        """Queue `data` if there is room, without waiting (the event loop may call it)."""
        return self._child.send_nowait(self._write_request(data))

    def write(self, data: Chunk) -> None:
        self._child.send(self._write_request(data))

    def _write_request(self, data: Chunk) -> _Request:
        """Lines as they are; a packed batch as its header and its values' bytes."""
        if isinstance(data, bytes):
            return _Request("write", self.run_id, data=data)
        header, values = data.wire()
        return _Request(data.WIRE_OP, self.run_id, header, values, lines=data.text_bytes)

    def finish(self) -> None:
        try:
            self._done = self._child.ask(_Request("finish", self.run_id))
        finally:
            self._closed()
        if self._done.error is not None:
            raise self._done.error

    def discard(self) -> None:
        try:
            if self._child.failed is None:  # else the child has closed them, or is gone
                self._child.send(_Request("discard", self.run_id))
        finally:
            self._closed()

    def _closed(self) -> None:
        """The run no longer counts as open on its child (once: a failed finish is
        discarded after)."""
        if self._open:
            self._open = False
            self._child.count_run(-1)

    def written(self, kind: str) -> tuple[int, str]:
        return self._done.written[kind]

    def counts(self, counts: Mapping[str, int]) -> dict[str, Counter[str]]:
        return file_counts(self._kinds, self._done.points, counts)


def _write_all(fd: int, pieces: list[Text]) -> None:
    """Every byte of `pieces` into `fd`, in as few system calls as the system allows."""
    if not hasattr(os, "writev"):  # pragma: no cover (Windows)
        with open(fd, "wb", closefd=False) as out:
            out.write(b"".join(pieces))
        return
    left: list[Text] = list(pieces)
    while left:
        done = os.writev(fd, left[:IOV_MAX])
        first = 0
        while first < len(left) and done >= len(left[first]):
            done -= len(left[first])
            first += 1
        left = left[first:]
        if done:  # a piece written in part (interrupted by a signal)
            left[0] = memoryview(left[0])[done:]


def _grow_pipe(pipe: IO[bytes]) -> None:
    """A larger pipe where the system lets us (Linux); a smaller one only costs calls."""
    with contextlib.suppress(ImportError, AttributeError, OSError):
        import fcntl

        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)
