"""Compression of the archive's NDJSON files (`--compress gzip|zstd`), as a wrapper around
a file: the sink writes lines into it, the archive reader reads lines out of it.

Both directions stream: a compressor holds its window (gzip 32 KiB, zstd a few MiB at the
default levels), never a run. gzip is the standard library's; zstd is `zstandard`'s (the
same format the `zstd` command and DuckDB read). A run's file is `<id>.ndjson`,
`<id>.ndjson.gz` or `<id>.ndjson.zst`: whichever of them exists, the run is archived.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import zlib
from pathlib import Path
from typing import Any, BinaryIO, cast

import zstandard

from .values import INT64_MAX

CODECS = ("none", "gzip", "zstd")
#: The file name's ending for each codec, after `.ndjson`.
EXTENSIONS = {"none": "", "gzip": ".gz", "zstd": ".zst"}
#: Levels each codec accepts, and the one used when --compress-level is not given. zstd's
#: is 1, not the library's 3: on the archives' NDJSON level 1 is ~17% faster and makes
#: the smaller files (README, "Compression": the levels measured).
LEVELS = {"gzip": (1, 9), "zstd": (1, 22)}
DEFAULT_LEVEL = {"gzip": 6, "zstd": 1}
ZSTD_WINDOW_LOG = 19
#: A run id as the harvester writes it in a name: no leading zero, at most 19 digits (a
#: longer one is no run's, and no JSON row could hold it).
RUN_ID = r"([1-9][0-9]{0,18})"
#: A published data file: `<run id>.<kind>[.gz|.zst]`.
DATA_NAME = re.compile(RUN_ID + r"\.((?:points\.|meta\.)?ndjson|parquet)(\.gz|\.zst)?", re.ASCII)
#: The file whose presence says a run is archived in each format (the last data file
#: published; `--format points` publishes `points` then `meta`).
ARCHIVED_BY = ("ndjson", "meta.ndjson")


class HashingWriter:
    """Writes through to `raw`, hashing and counting the bytes that reach the file (after
    compression): the manifest's sha256 and size without reading the file again."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()

    def tell(self) -> int:
        return self.size

    @property
    def closed(self) -> bool:
        return False

    def close(self) -> None:
        """The file itself is closed by its owner, after fsync and publication."""


def suffix(codec: str, kind: str = "ndjson") -> str:
    """`.ndjson`, `.ndjson.gz` or `.ndjson.zst`."""
    return f".{kind}{EXTENSIONS[codec]}"


def codec_of(path: Path) -> str:
    """The codec of a file, by its name's ending."""
    if path.name.endswith(".gz"):
        return "gzip"
    if path.name.endswith(".zst"):
        return "zstd"
    return "none"


def check_level(codec: str, level: int | None) -> str | None:
    """What is wrong with `--compress-level` for `codec`, or None."""
    if level is None:
        return None
    if codec == "none":
        return "--compress-level needs --compress gzip or --compress zstd"
    low, high = LEVELS[codec]
    if not low <= level <= high:
        return f"--compress-level {level} is out of range for {codec}: use {low} to {high}"
    return None


def compressing(raw: BinaryIO, codec: str, level: int | None, *, small: bool = False) -> BinaryIO:
    """A stream that compresses into `raw`; closing it ends the compressed stream (gzip's
    trailer, zstd's frame) but leaves `raw` open for the sink to fsync and publish.
    `small`: a file of a few hundred KB (a run's sidecar), which zstd takes whole at its
    end while it is under `SMALL_FILE` (`ZstdStream`)."""
    chosen = level if level is not None else DEFAULT_LEVEL.get(codec, 0)
    if codec == "gzip":
        # mtime 0: the same records make the same bytes (a manifest's sha256 can be compared).
        return cast(BinaryIO, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=chosen, mtime=0))
    if codec == "zstd":
        # The level's recipe, with a window of at most 512 KiB: each open run file holds a
        # compressor, 3.6 MB each at level 3's 2 MiB window and 2.1 MB so (1.4 MB at level
        # 1), with no larger files (NDJSON repeats itself within a few records, not half a
        # MiB away).
        params = zstandard.ZstdCompressionParameters.from_level(chosen, write_checksum=True)
        if params.window_log > ZSTD_WINDOW_LOG:
            params = zstandard.ZstdCompressionParameters.from_level(
                chosen, write_checksum=True, window_log=ZSTD_WINDOW_LOG
            )
        return cast(BinaryIO, ZstdStream(raw, chosen, params, SMALL_FILE if small else 0))
    return raw


class ZstdStream:
    """A zstd stream into `raw` whose compressor, once the stream has ended whole, waits
    for the next file (`ZSTD_POOL` of them at most): each holds about 2 MB of tables, and
    a new one for every run file left those megabytes behind in the malloc arena of
    whichever worker thread made it (points+zstd medium: 147 MB peak RSS, 105 MB with
    reuse). A compressor starts each stream afresh: the bytes are those of a new one.

    With `held` > 0 the first `held` bytes are kept and the compressor taken only once
    more come: a file that ends below is compressed whole at its close (one frame, with
    its size), so an open sidecar of a few hundred KB holds those bytes, not a
    compressor's 2 MB (Parquet+zstd: each run in flight held one for its `.meta.`)."""

    def __init__(
        self,
        raw: BinaryIO,
        level: int,
        params: zstandard.ZstdCompressionParameters,
        held: int = 0,
    ) -> None:
        self._raw, self._params, self._held = raw, params, held
        self._pool = IDLE_ZSTD.setdefault(level, [])
        self._compressor: zstandard.ZstdCompressor | None = None
        self._writer: BinaryIO | None = None
        self._kept = bytearray()
        self.closed = False
        if not held:
            self._stream()

    def _take(self) -> zstandard.ZstdCompressor:
        try:
            self._compressor = self._pool.pop()
        except IndexError:
            self._compressor = zstandard.ZstdCompressor(compression_params=self._params)
        return self._compressor

    def _stream(self) -> BinaryIO:
        # Typed as the file it is (zstandard's stubs leave `close` untyped).
        self._writer = cast(BinaryIO, self._take().stream_writer(self._raw, closefd=False))
        if self._kept:
            self._writer.write(self._kept)
            self._kept = bytearray()
        return self._writer

    def write(self, data: bytes | memoryview) -> int:
        if self._writer is None:
            if len(self._kept) + len(data) <= self._held:
                self._kept += data
                return len(data)
            self._stream()
            assert self._writer is not None
        return self._writer.write(data)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Ends the frame (`raw` stays open); the compressor is reused unless that failed."""
        if self.closed:
            return
        self.closed = True
        if self._writer is not None:
            self._writer.close()
        else:
            self._raw.write(self._take().compress(bytes(self._kept)))
            self._kept = bytearray()
        if self._compressor is not None and len(self._pool) < ZSTD_POOL:
            self._pool.append(self._compressor)


#: Idle zstd compressors by level (`ZstdStream`); list.pop and append hold the GIL, so
#: worker threads share them safely.
IDLE_ZSTD: dict[int, list[zstandard.ZstdCompressor]] = {}
ZSTD_POOL = 16
#: Bytes of a small file (`compressing(small=True)`) kept to be compressed whole: a run's
#: sidecar is 80 KB (medium) to 160 KB (large), with --details a few times that.
SMALL_FILE = 1 << 20


def open_data(path: Path) -> BinaryIO:
    """The decompressed bytes of a data file, buffered (iterate it for lines). A damaged
    file raises one of `READ_ERRORS` as it is read, a file cut short included."""
    codec = codec_of(path)
    if codec == "gzip":
        return cast(BinaryIO, gzip.open(path, "rb"))
    raw = path.open("rb")
    if codec == "zstd":
        return cast(BinaryIO, io.BufferedReader(WholeZstd(raw)))
    return raw


class WholeZstd(io.RawIOBase):
    """The decompressed bytes of a zstd file, frame after frame, that raise `ZstdError`
    when the file ends inside a frame. zstandard's `stream_reader` ends quietly there: a
    run file cut short read as a shorter run (or none), and `report` drew it so."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._frame = zstandard.ZstdDecompressor().decompressobj()
        self._begun = False  # has the current frame had a byte?
        self._ready = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._ready:
            chunk = self._raw.read(CHUNK)
            if not chunk:
                if self._begun and not self._frame.eof:
                    raise zstandard.ZstdError("the file ends inside a zstd frame: cut short")
                return 0
            self._ready = self._decompress(chunk)
        size = min(len(buffer), len(self._ready))
        buffer[:size] = self._ready[:size]
        self._ready = self._ready[size:]
        return size

    def _decompress(self, data: bytes) -> bytes:
        out = []
        while data:
            if self._frame.eof:  # the next frame follows the last one's end
                self._frame = zstandard.ZstdDecompressor().decompressobj()
            self._begun = True
            out.append(self._frame.decompress(data))
            data = self._frame.unused_data if self._frame.eof else b""
        return b"".join(out)

    def close(self) -> None:
        self._raw.close()
        super().close()


#: Compressed bytes read from a zstd file at once (`WholeZstd`).
CHUNK = 1 << 17


def published_data(out_dir: Path, run_id: int, kind: str = "ndjson") -> Path | None:
    """The run's published data file, whatever its compression, if there is one."""
    for codec in CODECS:
        path = out_dir / f"{run_id}{suffix(codec, kind)}"
        if path.exists():
            return path
    return None


def published_run(out_dir: Path, run_id: int) -> Path | None:
    """The run's file that says it is archived (and ends with its summary), in any format."""
    for kind in ARCHIVED_BY:
        found = published_data(out_dir, run_id, kind)
        if found is not None:
            return found
    return None


def run_id_of(path: Path) -> int | None:
    """The run id of a published data file's name, None for any other name."""
    found = DATA_NAME.fullmatch(path.name)
    return as_run_id(found.group(1)) if found else None


def as_run_id(text: str) -> int | None:
    """`text` as the run id it names in a file name, None when it names none (a leading
    zero, past int64: `99999999999999999999999.ndjson` made verify an internal error)."""
    if not re.fullmatch(RUN_ID, text, re.ASCII):
        return None
    run_id = int(text)
    return run_id if run_id <= INT64_MAX else None


#: Errors that a damaged compressed file raises while it is read (gzip's deflate stream
#: raises zlib.error, which is none of the others).
READ_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    EOFError,
    gzip.BadGzipFile,
    zlib.error,
    zstandard.ZstdError,
)
