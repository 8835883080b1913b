"""The writer process's side (`writeproc`): requests in from the parent's pipe, each
run's write stack (`runfiles.RunFiles`) over the temporary files the parent created, and
at a run's `finish` its files' sizes, sha256 and points counted (`writeproc.Finished`).
A points file hashes and writes itself past the page cache (`directfile`); a points
run's sidecar is hashed and written on a thread of its own (`writebehind`)."""

from __future__ import annotations

import contextlib
import functools
import gc
import io
import os
import pickle
import signal
import sys
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO, cast

from . import pagecache
from .compression import HashingWriter
from .directfile import DirectFile, DirectHashing
from .packed import PackedSeries, SeriesTexts
from .runfiles import RunFiles
from .writebehind import BehindWriter, WriteBehind
from .writeproc import Finished


@dataclass
class _ChildRun:
    """A run's files in the child: its write stack, or the error that stopped it."""

    files: RunFiles | None
    handles: dict[str, BinaryIO]
    error: OSError | None = None
    unsynced: int = 0  # bytes in since the last writeback hint
    hint: Future[None] | None = None  # the writeback hint under way (`_hint`)
    behind: list[BehindWriter] = field(default_factory=list)  # its files' (points)
    #: Its lines are read into the buffer `_ReusedBuffer` keeps (Parquet: nothing holds
    #: them once written; a points run's are written behind, so each its own bytes).
    reused: bool = False


class _ReusedBuffer:
    """One buffer that a Parquet run's big writes (an answer's lines, ~2 MB) and a points
    run's batches of texts (`SeriesTexts`) are read into, each over the one before:
    nothing holds them once written (each serie's lines are bytes of their own). A buffer
    of their own each was a fresh mapping each time (the writer's fixed mmap threshold,
    `allocator`), its pages faulted in afresh: ~100,000 of the large bench's ~220,000
    page faults in the writer process, ~0.2 s of its CPU. For points (glibc's own
    threshold), half of the two writers' ~100,000 faults at large, ~0.08 s of system CPU."""

    #: Smaller writes (a run's metrics, its summary...) are read as before.
    SMALLEST = 256 << 10

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._largest = 0  # the most read into it, about its allocation

    def read(self, requests: BinaryIO, size: int) -> bytes | bytearray:
        """`size` bytes of `requests` (fewer at its end, as `read`)."""
        # Never much less than its largest: below half its allocation a bytearray gives
        # the memory back, to be mapped afresh for the next big write.
        if size < self.SMALLEST or size * 8 < self._largest * 5:
            return requests.read(size)
        self._largest = max(self._largest, size)
        buffer = self._buffer
        try:
            if size > len(buffer):
                buffer.extend(bytes(size - len(buffer)))
            else:
                del buffer[size:]
        except BufferError:  # still viewed somewhere (never so far): a new one
            buffer = self._buffer = bytearray(size)
        got = 0
        reader = cast(io.BufferedReader, requests)  # (the pipe's, which reads into)
        with memoryview(buffer) as view:
            while got < size and (done := reader.readinto(view[got:])):
                got += done
        if got < size:  # the pipe closed (the parent is gone): the next request ends it
            del buffer[got:]
        return buffer


def serve(requests: BinaryIO, answers: BinaryIO) -> None:
    """The child's loop: requests in until the pipe closes; each run's files by path."""
    runs: dict[int, _ChildRun] = {}
    finisher = _finisher()
    reused = _ReusedBuffer()
    while True:
        try:
            op, run_id, args, size = pickle.load(requests)
        except EOFError:
            break
        if op == SeriesTexts.WIRE_OP or (op == "write" and runs[run_id].reused):
            data: bytes | bytearray = reused.read(requests, size)
        else:
            data = requests.read(size) if size else b""
        if op == "open":
            runs[run_id] = _open(run_id, *args)
        elif op == "write":
            _write(runs[run_id], data)
        elif op == PackedSeries.WIRE_OP:  # its values' bytes taken by Arrow as they are
            _write(runs[run_id], PackedSeries.from_wire(args, bytes(data)))
        elif op == SeriesTexts.WIRE_OP:
            _write(runs[run_id], SeriesTexts.from_wire(args, data))
        elif op == "finish":
            run = runs.pop(run_id)
            _end_streams(run)
            finisher.submit(_answer_finish, run, answers)
        else:  # discard
            _close(runs.pop(run_id))
    finisher.shutdown()  # every finish answered
    for run in runs.values():  # the parent ended without committing them
        _close(run)


def _finisher() -> ThreadPoolExecutor:
    """The thread that waits for each finished run's last writes and answers for it, in
    the order the runs finished: the main thread goes on with the next runs' lines. When
    it waited itself, it sat idle at each run's end while the run's last buffers were
    hashed and written (large: ~1 of its ~4 s)."""
    return ThreadPoolExecutor(1, thread_name_prefix="finish")


def _answer_finish(run: _ChildRun, answers: BinaryIO) -> None:
    try:
        finished = _finish(run)
    except BaseException as exc:  # answered all the same: the parent waits for it
        finished = Finished(error=_as_os_error(exc))
    try:
        pickle.dump(finished, answers)
        answers.flush()
    except BrokenPipeError:  # the parent is gone (kill -9): nobody to tell
        # (and Python's flush at exit would print the same error again); the main
        # thread then finds the requests' pipe closed too
        os.dup2(os.open(os.devnull, os.O_WRONLY), answers.fileno())


def _open(
    run_id: int, output_format: str, codec: str, level: int | None, paths: dict[str, str]
) -> _ChildRun:
    from .sinks import RAW_BUFFER  # (sinks imports this module)

    run = _ChildRun(None, {}, reused=output_format == "parquet")
    try:
        for kind, path in paths.items():
            # A Parquet file's and a sidecar's buffer as a raw run file's (`RAW_BUFFER`):
            # it only gathers small writes (Arrow's page headers and pages, a run's
            # records), and each run open held up to 1 MiB a file, touched as it filled
            # (Parquet, large: the writer's peak ~1.5 MB lower at 64 KiB).
            if kind == "points.ndjson":
                run.handles[kind] = cast(BinaryIO, DirectFile(path))
            else:
                run.handles[kind] = os.fdopen(os.open(path, os.O_WRONLY), "wb", RAW_BUFFER)
        run.files = RunFiles(
            run_id, output_format, codec, level, run.handles, _hashing(run, output_format)
        )
    except Exception as exc:  # told at the run's finish, as the parent's own error
        run.error = _as_os_error(exc)
    return run


def _hashing(run: _ChildRun, output_format: str) -> Callable[[BinaryIO], HashingWriter]:
    """A points file hashes itself (`directfile`), its sidecar is hashed and written
    behind (`writebehind`); Parquet's files are not (Arrow hands on its own buffers, which
    it may reuse once a write returns)."""
    if output_format != "points":
        return HashingWriter

    def behind(fh: BinaryIO) -> HashingWriter:
        if isinstance(fh, DirectFile):
            return DirectHashing(fh)
        writer = BehindWriter(fh, _behind())
        run.behind.append(writer)
        return writer

    return behind


#: Bytes of point lines queued for the write-behind thread at most: more than one
#: answer's (a 2 MB batch makes ~10 MB of lines), so the main thread builds a batch while
#: the thread writes the one before, rather than both taking turns within each batch.
#: Medium, 9 interleaved pairs (a loaded box): the thread idle 0.4-1.0 s -> 0.1-0.5 s, the
#: main thread waiting for room 0.9-1.5 s -> 0.3-0.6 s, wall median 3.3-3.8 -> 3.1-3.3 s
#: (7 of 9 pairs faster); large, 3 pairs: idle 1.3-3.7 -> 0.5-1.0 s, each 0.6-1.0 s
#: faster; for ~12 MB more peak RSS (8 MiB: between the two). Its cost: a run's finish
#: waits for the queue to be written (large: 0.3 -> 0.8-1.3 s in all).
QUEUED_LINES = 16 << 20


@functools.cache
def _behind() -> WriteBehind:
    return WriteBehind(QUEUED_LINES)


def _write(run: _ChildRun, data: bytes | bytearray | PackedSeries | SeriesTexts) -> None:
    if run.files is None or run.error is not None:
        return  # the run has failed: its finish says so
    try:
        run.files.write(data)
    except Exception as exc:
        run.error = _as_os_error(exc)
        return
    for writer in run.behind:  # no buffer kept between requests
        writer.send()
        if writer.error is not None:  # a write behind failed: the run has
            run.error = _as_os_error(writer.error)
    run.unsynced += len(data) if isinstance(data, bytes | bytearray) else data.nbytes
    if run.unsynced >= pagecache.WRITEBACK_AFTER and (run.hint is None or run.hint.done()):
        run.unsynced = 0
        run.hint = _hints().submit(_hint, list(run.handles.values()))


def _hint(handles: list[BinaryIO]) -> None:
    for fh in handles:
        if not isinstance(fh, DirectFile):  # (it leaves no dirty page to write out)
            pagecache.start_writeback(fh)


@functools.cache
def _hints() -> ThreadPoolExecutor:
    """The thread that gives the kernel the child's writeback hints (`pagecache.start_writeback`).

    A hint starts writing a file's dirty pages out (~1 ms of the kernel's work a MB of
    lines, ~0.3 s over a large harvest), and the system call lets go of the GIL: in a
    thread of its own it takes that work off the child's main thread, which builds,
    hashes and writes the lines, and is what a points harvest waits for. A run's files
    are closed only once its hint is done (`_wait_hint`); one at a time per run (a hint
    covers every page dirty when it runs). Worth its ~0.25-0.35 s: without the hints the
    write-behind thread's copies into the page cache, 2 GB of it dirty, took 0.2 -> 3.8 s
    of CPU on large (a hint every 256 KiB: no change)."""
    return ThreadPoolExecutor(1, thread_name_prefix="points-writeback")


def _wait_hint(run: _ChildRun) -> None:
    if run.hint is not None:
        run.hint.result()
        run.hint = None


def _end_streams(run: _ChildRun) -> None:
    """End the run's streams (compressors' ends, Parquet's footer), on the main thread,
    which wrote into them; its writes behind are handed on."""
    if run.files is not None and run.error is None:
        try:
            run.files.finish()
            for writer in run.behind:
                writer.send()
        except Exception as exc:
            run.error = _as_os_error(exc)


def _finish(run: _ChildRun) -> Finished:
    """Wait for the run's last writes and close its files (`_end_streams` before); what
    was written, or why it failed."""
    _wait_hint(run)
    if run.files is not None and run.error is None:
        try:
            _written_behind(run)
            for fh in run.handles.values():
                fh.close()  # flushed: the parent's fsync then finds every byte
        except Exception as exc:
            run.error = _as_os_error(exc)
    _close(run)
    if run.files is None or run.error is not None:
        return Finished(error=run.error)
    written = {kind: run.files.written(kind) for kind in run.handles}
    points = run.files.splitter.points if run.files.splitter is not None else 0
    return Finished(written, points)


def _written_behind(run: _ChildRun) -> None:
    """Every byte of the run's files written and hashed (`writebehind`), or the first
    write's error."""
    for writer in run.behind:
        writer.settle()
        writer.lane.raise_failed()


def _close(run: _ChildRun) -> None:
    _wait_hint(run)
    for writer in run.behind:
        writer.drop()
    if run.files is not None:
        run.files.discard()
    for writer in run.behind:  # nothing written behind once the files are closed
        writer.settle()
    for fh in run.handles.values():
        with contextlib.suppress(OSError):
            fh.close()


def _as_os_error(exc: BaseException) -> OSError:
    """An error the parent can unpickle and report as the output's (`sinks.writing_to`)."""
    if isinstance(exc, OSError):
        return OSError(exc.errno, exc.strerror or str(exc))
    return OSError(f"{type(exc).__name__}: {exc}")


def main() -> None:
    # The parent handles ^C, SIGTERM and SIGHUP (`stopsignals`: it finishes or aborts its
    # runs, then closes the pipe), which reach the whole process group: the child ends
    # when the pipe does, never halfway through a run's write.
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    # As in the parent (`cli`): the child makes many short-lived objects (a Parquet
    # batch's points, msgspec's; a run's rows), none of them cyclic garbage, and at the
    # default threshold it spent ~5% of its CPU collecting them (medium bench replayed).
    gc.freeze()
    gc.set_threshold(50_000, 10, 10)
    # The switch interval is Python's (5 ms). It was 0.5 ms (5b417d6) while a thread
    # hashed each 4 MiB buffer of a points file and waited up to 5 ms for the GIL to hand
    # it on; now the main thread hashes what it writes (`directfile`), and at 0.5 ms it
    # only lost the GIL more often to the writing and finishing threads. Large,
    # interleaved pairs: points faster in 8 of 8 (medians 3.23 -> 3.16 s, then 3.36 ->
    # 3.23 s), Parquet in 4 of 4 (3.28 -> 3.13 s).
    answers = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but answers on the pipe
    serve(sys.stdin.buffer, answers)


if __name__ == "__main__":
    # As the module, not `__main__`: the answers' classes must unpickle by their names.
    from harvester.writechild import main as module_main

    module_main()
