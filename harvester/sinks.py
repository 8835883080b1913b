"""Where the lines go: one stream on stdout, or one file per run published atomically.

`DirectorySink` writes each run to a hidden temporary file of its own in the output
directory and, when the run is whole, flushes, fsyncs, gives it the name
`<test_run_id>.ndjson` and fsyncs the directory (the way Prometheus' TSDB publishes a
block, LESSONS.md #5): a file under its final name is always complete, after any crash
and with any number of writers (`outdir` states the rules). Blocking disk work runs in
a thread.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import anyio

from . import manifest
from .allocator import fix_mmap_threshold
from .compression import CODECS, published_data, suffix
from .errors import ConfigError, OutputError
from .layout import Places, make_dirs
from .outdir import create_temp, discard, publish
from .pagecache import WRITEBACK_AFTER, release_pages, start_writeback
from .records import Chunk
from .runfiles import KINDS, RunFiles, codec_for
from .writebehind import Lane, WriteBehind
from .writeproc import ChildRunFiles
from .writerpool import WriterPool, pool_size

FILE_MODE = 0o600  # metric tags can name internal hosts: owner-only by default (--file-mode)
#: A raw run file's buffer: it only gathers a run's small records (thresholds, overview,
#: summary), as an answer's lines (~2 MB of series, ~0.1 MB of metrics) go past any
#: buffer smaller than them straight to the file. At 1 MiB, a buffer for each run being
#: written or waiting for its commit held ~7 MB of the peak at large, for no fewer writes.
RAW_BUFFER = 1 << 16
#: The formats whose write stack runs in the writer process (`writeproc`): making their
#: points (lines, or Parquet's columns) takes more CPU than the harvest itself, and in
#: this process it took turns with the event loop on one GIL.
CHILD_FORMATS = ("points", "parquet")
#: glibc's mmap and trim thresholds in this process for `--format parquet` (`allocator`).
PARENT_THRESHOLD = 1 << 20
PARENT_TRIM = 2 << 20


class Sink(Protocol):
    async def begin(self, run_id: int) -> None: ...
    async def write(self, run_id: int, data: Chunk) -> None: ...
    async def commit(
        self,
        run_id: int,
        counts: Mapping[str, int] | None = None,
        summary: Mapping[str, Any] | None = None,
    ) -> str | None: ...
    async def abort(self, run_id: int) -> None: ...
    async def close(self) -> None: ...


@contextlib.contextmanager
def writing_to(where: object) -> Iterator[None]:
    """OSErrors of the output (ENOSPC, EACCES, EPIPE) as one clear `OutputError`."""
    try:
        yield
    except OSError as exc:
        raise OutputError(f"cannot write to {where}: {exc.strerror or exc}") from exc


def fsync_directory(path: Path) -> None:
    """Make a link, rename or unlink in `path` durable: the directory itself is fsynced."""
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def current_umask() -> int:
    """The process's umask (reading it means setting it: done at start-up, not in threads)."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def final_path(out_dir: Path, run_id: int, codec: str = "none", kind: str = "ndjson") -> Path:
    return out_dir / f"{run_id}{suffix(codec, kind)}"


def prepare_output_dir(path: str) -> Path:
    """Create the output directory if needed; fail early if it is not a writable directory."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {path} is a file; give a directory (or - for stdout)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create output directory {path}: {exc.strerror}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ConfigError(f"output directory {path} is not writable; choose another --out")
    return out


@dataclass
class _Run:
    """A run being written: its write stack, the temporary files under it, the bytes
    written since the last writeback hint, and its writes queued (`writebehind`)."""

    files: RunFiles | ChildRunFiles
    handles: dict[str, BinaryIO]
    temps: dict[str, Path]
    unsynced: int = 0
    lane: Lane = field(default_factory=Lane)


class DirectorySink:
    """One `<run_id>.ndjson` per run (`--format points`: `<id>.points.ndjson` and its
    sidecar `<id>.meta.ndjson`), published only when the run is complete, by the rules of
    `outdir`: a temporary file of this writer's own, never replacing what another writer
    published (unless `replace`, for --force). With `codec` gzip or zstd the lines are
    compressed on their way to the file (`.ndjson.gz`, `.ndjson.zst`). The manifest comes
    last (`manifest`). Everything a write does (split, compress, hash, write) runs in a
    thread, never on the event loop (`runfiles`): raw and compressed NDJSON in this
    process's write-behind thread (`writebehind`), the other formats in the writer
    process."""

    def __init__(
        self,
        out_dir: Path,
        file_mode: int | None = FILE_MODE,
        *,
        replace: bool = False,
        codec: str = "none",
        level: int | None = None,
        facts: Mapping[str, Any] | None = None,
        output_format: str = "raw",
        places: Places | None = None,
    ) -> None:
        self.out_dir = out_dir
        #: Each run's directory under `out_dir` (--layout). Its temporary files go there
        #: too: beside their final name (one filesystem), where `remove_leftovers` looks.
        self.places = places if places is not None else Places("flat", out_dir)
        # None: what the umask leaves of 0666, as for any program's files.
        self.file_mode = file_mode if file_mode is not None else 0o666 & ~current_umask()
        self.replace = replace
        self.codec = codec
        self.level = level
        self.format = output_format
        #: What the job's settings say about every run's data, for the manifests.
        self.facts = dict(facts or {"format": output_format, "compression": codec})
        self._runs: dict[int, _Run] = {}
        #: `--format points` and `parquet`: the processes that write the runs' files.
        self._writers: WriterPool | None = None
        #: Runs open on worker threads side by side: one pool, each run counted on its
        #: writer before the next one is chosen.
        self._choosing = threading.Lock()
        self._behind = WriteBehind()
        if output_format == "parquet":
            # Without a fixed mmap threshold this process held ~15 MB more at large
            # (`allocator`), which with the writer process's pyarrow passed 150 MB (168
            # against 148 MB). At glibc's 128 KiB, each of an answer's big buffers was
            # mapped and faulted in afresh (~1 s of this process's CPU at large); at 1 MiB,
            # its top kept up to 2 MiB, they come from the heap and are used again (perf,
            # large, under load: its main thread -0.5 s of CPU, +7-18 MB peak).
            fix_mmap_threshold(PARENT_THRESHOLD, trim=PARENT_TRIM)

    async def begin(self, run_id: int) -> None:
        with writing_to(self.out_dir):
            where = make_dirs(self.out_dir, self.places.relative(run_id))
        with writing_to(where):
            self._runs[run_id] = await anyio.to_thread.run_sync(self._open, run_id, where)

    def _open(self, run_id: int, where: Path) -> _Run:
        handles: dict[str, BinaryIO] = {}
        temps: dict[str, Path] = {}
        # The writer process writes a child format's files: here they are only fsynced,
        # so no buffer (1 MiB a file, never used).
        buffering = 0 if self.format in CHILD_FORMATS else RAW_BUFFER
        try:
            for kind in KINDS[self.format]:
                name = suffix(codec_for(kind, self.codec), kind)[1:]
                fd, temps[kind] = create_temp(where, run_id, name)
                handles[kind] = os.fdopen(fd, "wb", buffering=buffering)
                os.fchmod(fd, self.file_mode)  # exactly the mode asked, whatever the umask
            files: RunFiles | ChildRunFiles
            if self.format in CHILD_FORMATS:
                files = self._child_files(run_id, temps)
            else:
                files = RunFiles(run_id, self.format, self.codec, self.level, handles)
        except BaseException:
            _close_all(handles, temps)
            raise
        return _Run(files, handles, temps)

    def _child_files(self, run_id: int, temps: dict[str, Path]) -> ChildRunFiles:
        """The run opened on a writer process (the pool started with the first run)."""
        with self._choosing:
            if self._writers is None:
                self._writers = WriterPool(pool_size(self.format))
            writer = self._writers.for_run()
            return ChildRunFiles(writer, run_id, self.format, self.codec, self.level, temps)

    async def write(self, run_id: int, data: Chunk) -> None:
        run = self._runs[run_id]
        with writing_to(self.out_dir):
            if isinstance(run.files, ChildRunFiles):
                # Queued for the writer process: the writer task waits only on a full queue.
                if not run.files.write_nowait(data):
                    await anyio.to_thread.run_sync(run.files.write, data)
                return
            assert isinstance(data, bytes)  # (series are packed only for Parquet)
            run.lane.raise_failed()  # an earlier write's error (a full disk), said now
            if not self._behind.submit(run.lane, functools.partial(self._write, run, data),
                                       len(data)):  # fmt: skip
                await anyio.to_thread.run_sync(self._behind.wait_room)

    @staticmethod
    def _write(run: _Run, data: bytes) -> None:
        run.files.write(data)  # buffered (`RAW_BUFFER`): lines longer go straight through
        run.unsynced += len(data)
        if run.unsynced >= WRITEBACK_AFTER:
            run.unsynced = 0
            for fh in run.handles.values():
                start_writeback(fh)

    async def commit(
        self,
        run_id: int,
        counts: Mapping[str, int] | None = None,
        summary: Mapping[str, Any] | None = None,
    ) -> str:
        """The run's (first) final path: published now, or found published whole by another
        writer. `counts`: the records of each type written (else the files are read to
        count them); `summary`: the run's summary record, for its manifest."""
        run = self._runs.pop(run_id)
        where = self.places.directory(run_id)
        finals = {
            kind: final_path(where, run_id, codec_for(kind, self.codec), kind)
            for kind in run.handles
        }
        first = next(iter(finals.values()))
        with writing_to(first):
            sealed = manifest.manifest_path(where, run_id)
            won = await anyio.to_thread.run_sync(self._publish, run, finals, sealed)
            if self.replace or won:
                self._remove_others(run_id, set(finals.values()))
            if won:
                known = None if counts is None else run.files.counts(counts)
                await anyio.to_thread.run_sync(
                    self._seal, run_id, run, finals, known, dict(summary or {})
                )
        return str(first)

    def _publish(self, run: _Run, finals: dict[str, Path], sealed: Path) -> bool:
        """Each file whole (stack ended, flushed, fsynced) under its name, in order; False
        when another writer had published the run (its last file, which says the run is
        archived, was there). `sealed`: the run's manifest, which --force removes before
        it replaces the first file: cut before the new one (a crash, a full disk), the new
        files are left without one, which the next job seals; kept, it described the old
        files (verify: corrupt, and never mended)."""
        won = True
        *_, last = run.handles
        #: Files found under their name before the last file was: a crash between a
        #: run's files left them (or a writer that will lose the last file is at it).
        #: Whoever publishes the last file sets them: kept otherwise, a crashed job's
        #: points (another --method, another harvest) sat beside this job's manifest.
        found: list[str] = []
        try:
            self._behind.settle(run.lane)  # the run's queued writes done first
            run.lane.raise_failed()
            run.files.finish()  # the last row group and footer, a compressor's end
            for fh in run.handles.values():  # a full disk fails here, before any name
                fh.flush()
                os.fsync(fh.fileno())
                release_pages(fh)
            if self.replace:
                discard(sealed)
            for kind, fh in run.handles.items():
                if kind == last or self.replace:
                    won = publish(run.temps[kind], finals[kind], replace=self.replace)
                elif not publish(run.temps[kind], finals[kind], keep=True):
                    found.append(kind)  # its temporary file (and flock) kept for now
                    continue
                fh.close()  # (and its flock dropped) only once the name is settled
            for kind in found:
                with run.handles[kind]:
                    if won:
                        os.replace(run.temps[kind], finals[kind])
                    else:
                        discard(run.temps[kind])
        except BaseException:
            _close_all(run.handles, run.temps)  # a full disk fails the flush: no partial file
            raise
        fsync_directory(next(iter(finals.values())).parent)
        return won

    def _seal(
        self,
        run_id: int,
        run: _Run,
        finals: dict[str, Path],
        counts: dict[str, Counter[str]] | None,
        summary: dict[str, Any],
    ) -> None:
        """The run's manifest, last (see `manifest` for why this order): the data files as
        written, and the CSV export the summary names (published before the data file)."""
        where = self.places.directory(run_id)
        entries = []
        for kind, final in finals.items():
            known = None
            if counts is not None:
                size, sha = run.files.written(kind)
                known = manifest.Scan(size, sha, counts[kind])
            entries.append(manifest.file_entry(final, known))
        # The run's export, fetched by this job or kept from an earlier one (--force without
        # --export-csv leaves it as it is: named, it is no orphan to verify).
        csv = published_data(where, run_id, "csv")
        if csv is not None:
            entries.append(manifest.file_entry(csv))
        built = manifest.build(run_id, entries, self.facts, summary)
        manifest.write(where, run_id, built, self.file_mode)
        fsync_directory(where)

    def _remove_others(self, run_id: int, published: set[Path]) -> None:
        """--force with another --compress or --format: the run's older files go, so that
        one run is never archived twice (as `5.ndjson` and `5.ndjson.gz`); with another
        --layout, its files where it was archived go too. Without --force, what a crash
        between a run's files left in another format or compression (`5.points.ndjson`
        beside this job's `5.points.ndjson.zst`) goes."""
        where = self.places.directory(run_id)
        old = self.places.found.get(run_id, where)
        for kind in ("ndjson", "points.ndjson", "meta.ndjson", "parquet"):
            for codec in CODECS:
                for directory in {where, old}:
                    other = final_path(directory, run_id, codec, kind)
                    if other not in published:
                        discard(other)
        if old != where:
            discard(old / f"{run_id}{manifest.SUFFIX}")
            for name in (f"{run_id}.csv", f"{run_id}.csv.gz"):
                _move_export(old / name, where, run_id)

    async def abort(self, run_id: int) -> None:
        run = self._runs.pop(run_id, None)
        if run is not None:
            run.lane.dropped = True  # its queued writes are skipped
            if run.lane.queued:
                with anyio.CancelScope(shield=True):  # (one under way ends in milliseconds)
                    await anyio.to_thread.run_sync(self._behind.settle, run.lane)
            run.files.discard()
            _close_all(run.handles, run.temps)

    async def close(self) -> None:
        for run_id in list(self._runs):
            await self.abort(run_id)
        self._behind.close()
        if self._writers is not None:
            await anyio.to_thread.run_sync(self._writers.close)
            self._writers = None


def _move_export(path: Path, where: Path, run_id: int) -> None:
    """A run's CSV export where it was archived, moved to `where` with the run (--force
    with another --layout): deleted only when this job fetched a new one (--export-csv)."""
    try:
        if published_data(where, run_id, "csv") is None:
            path.rename(where / path.name)  # (one archive, one filesystem)
        else:
            discard(path)
    except FileNotFoundError:
        pass  # (the run had no export there)


def _close_all(handles: Mapping[str, BinaryIO], temps: Mapping[str, Path]) -> None:
    """Close a run's temporary files and remove them (a full disk may refuse the last
    flush too: that error is moot now)."""
    for fh in handles.values():
        with contextlib.suppress(OSError):
            fh.close()
    for temp in temps.values():
        discard(temp)
