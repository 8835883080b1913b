"""One pass over an archive file: its size and sha256 and, for NDJSON, its records by type
(what a manifest records, what `harvester verify` checks).

Memory holds a chunk (1 MiB of the file, 1 MiB of its decompressed lines) and the part of
a line cut by a chunk's end, never the file.

Speed (verify reads whole archives, `scripts/bench --verify`): every line must be proved
to be a record, but the records need not be built. msgspec's decoder reads a chunk's lines
in one call into a struct of the three keys that say a line's kind (`type`, else `time`
and `value` for a point of `--format points`), checking the JSON grammar of the rest
without making a Python object of it: about 1.7 GB/s, where building each record with
orjson made 0.1 GB/s. msgspec does not check UTF-8 inside the strings it skips, so a chunk
that is not ASCII is decoded as UTF-8 first. One gap is left: a number too large for a
double (`1e999`) is valid JSON to msgspec, though orjson refuses it; such a line could
only stand in a file whose sha256 matches a manifest made from that very file. sha256
(hashlib) and zlib/zstd release the GIL on large buffers, so files scanned in two threads
overlap their hashing and decompressing with the other's parsing.
"""

from __future__ import annotations

import codecs
import errno
import gzip
import hashlib
import os
import stat
import zlib
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any, BinaryIO, cast

import msgspec
import zstandard

from .compression import codec_of

CHUNK = 1 << 20


@dataclass
class Scan:
    """One pass over a file: its size and sha256 and, for NDJSON, its records by type."""

    bytes: int = 0
    sha256: str = ""
    counts: Counter[str] = field(default_factory=Counter)
    #: What is wrong with the content (a line that does not parse, a broken stream), if any.
    problem: str | None = None


class Kind(msgspec.Struct, gc=False):
    """What says a line's kind (a record's `type` is text); every other key is checked and
    skipped. (gc=False: a points file makes millions, none in a cycle.)"""

    type: str | msgspec.UnsetType = msgspec.UNSET
    time: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    value: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


class Point(msgspec.Struct, gc=False):
    """A line of a points file: its `time` and `value` must be there (msgspec checks it,
    not a Python loop over the lines)."""

    time: msgspec.Raw
    value: msgspec.Raw
    type: str | msgspec.UnsetType = msgspec.UNSET


_KINDS = msgspec.json.Decoder(Kind)
_POINTS = msgspec.json.Decoder(Point)
_TYPE = attrgetter("type")


class _Hashing:
    """Reads through to `raw` (read(n) is all a decompressor asks), hashing and counting
    every byte on its way."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.sha.update(data)
        self.size += len(data)
        return data


def _decompressed(hashing: _Hashing, codec: str) -> BinaryIO:
    source = cast(BinaryIO, hashing)
    if codec == "gzip":
        return cast(BinaryIO, gzip.GzipFile(fileobj=source, mode="rb"))
    if codec == "zstd":
        reader = zstandard.ZstdDecompressor().stream_reader(
            source, read_size=CHUNK, read_across_frames=True
        )
        return cast(BinaryIO, reader)
    return source


#: What a file is when not a regular one, by its mode's test.
_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
)


def kind_of(mode: int) -> str | None:
    """What a file of `mode` is, when not a regular file (None)."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _FILE_KINDS if test(mode)), "not a file")


def not_regular(path: Path, kind: str) -> OSError:
    """The error of a file that is not a regular file: never read (see `open_regular`)."""
    return OSError(errno.EINVAL, f"{kind}, not a regular file", str(path))


def open_regular(path: Path) -> BinaryIO:
    """`path` opened to read, unbuffered, only if it is a regular file (else OSError): a
    FIFO in a file's place blocked open() for ever, so it is opened without blocking and
    looked at before anything is read."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        kind = kind_of(os.fstat(fd).st_mode)
        if kind is not None:
            raise not_regular(path, kind)
        os.set_blocking(fd, True)
        return open(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def scan(path: Path, *, ndjson: bool) -> Scan:
    """Read `path` once, streaming: memory holds a chunk and a line, never the file."""
    opener = lambda: open_regular(path)  # noqa: E731
    points = ".points." in path.name
    return scan_opened(opener, codec_of(path), ndjson=ndjson, points=points)


#: Opens a file's bytes from the start (a local file, or an object's body for `verify
#: s3://`); a bad line's number is found by reading them again.
Opener = Callable[[], AbstractContextManager[BinaryIO]]


def scan_opened(opener: Opener, codec: str, *, ndjson: bool, points: bool = False) -> Scan:
    """`scan` of the bytes `opener` gives, compressed with `codec` (`points`: a points
    file's lines)."""
    result = Scan()
    with opener() as raw:
        hashing = _Hashing(raw)
        if ndjson:
            try:
                count_records(_decompressed(hashing, codec), result.counts, points=points)
            except NotRecords as exc:
                line = _line_at(opener, codec, exc.offset)
                result.problem = f"line {line} is not a harvester record"
            except (OSError, EOFError, zlib.error, zstandard.ZstdError) as exc:
                result.problem = f"cannot be decompressed: {exc}"
        while hashing.read(CHUNK):  # the rest (or all, for a CSV): every byte is hashed
            pass
    result.bytes = hashing.size
    result.sha256 = hashing.sha.hexdigest()
    return result


class NotRecords(ValueError):
    """A line that is not a harvester record, `offset` bytes into the (decompressed) lines."""

    def __init__(self, offset: int) -> None:
        super().__init__(f"the line at byte {offset} is not a harvester record")
        self.offset = offset


def count_records(stream: BinaryIO, counts: Counter[str], *, points: bool = False) -> None:
    """Count the records of the NDJSON `stream` by type into `counts` (`points`: lines of
    a points file, expected to be points). Each chunk read is parsed where it lies (a
    memoryview of its whole lines, no copy); only the line cut by its end is carried into
    the next."""
    # The line cut by the last chunk's end, in pieces joined once it ends (`carry +=
    # chunk` copied a long line again at every chunk: a 300 MB line took 39 s).
    carry: list[bytes] = []
    offset = 0  # of `carry` in the stream
    while chunk := stream.read(CHUNK):
        first = chunk.find(b"\n") + 1
        if not first:  # no line ends here: a longer line goes on
            carry.append(chunk)
            if carry[0].lstrip()[:1] not in (b"", b"{"):
                # Not an object, so no record, however long: a file of NULs (what some
                # filesystems leave after a crash) is one endless line.
                raise NotRecords(offset)
            continue
        last = chunk.rfind(b"\n") + 1
        head = b"".join([*carry, chunk[:first]])
        _count(head, offset, counts, head.isascii(), points)
        middle = memoryview(chunk)[first:last]
        _count(middle, offset + len(head), counts, chunk.isascii(), points)
        offset += len(head) - first + last
        carry = [chunk[last:]]
    if rest := b"".join(carry):
        _count(rest, offset, counts, rest.isascii(), points)


def _count(
    block: bytes | memoryview, offset: int, counts: Counter[str], ascii: bool, points: bool
) -> None:
    """The records of whole lines, `offset` bytes into the stream."""
    try:
        if not ascii:  # msgspec does not check UTF-8 in the strings it skips
            codecs.utf_8_decode(block, "strict", True)
        kinds = _kinds(block, points)
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise NotRecords(offset + _first_bad(bytes(block))) from None
    found: Counter[Any] = Counter(map(_TYPE, kinds))
    untyped = found.pop(msgspec.UNSET, 0)
    if untyped and not isinstance(kinds[0], Point) and not all(map(_point, kinds)):
        raise NotRecords(offset + _first_bad(bytes(block)))
    counts.update(found)
    if untyped:
        counts["point"] += untyped


def _kinds(block: bytes | memoryview, points: bool) -> list[Kind] | list[Point]:
    """The kind of each line: as points when they should be (each must have a time and a
    value), else, or when one is not a point, as any record."""
    if points:
        try:
            return _POINTS.decode_lines(block)
        except msgspec.ValidationError:  # a line that is not a point: is it a record?
            pass
    return _KINDS.decode_lines(block)


def _point(kind: Kind | Point) -> bool:
    """A record (it has a type) or a point (a time and a value)."""
    return kind.type is not msgspec.UNSET or (
        kind.time is not msgspec.UNSET and kind.value is not msgspec.UNSET
    )


def _first_bad(block: bytes) -> int:
    """Where in `block` the first line that is not a record starts."""
    start = 0
    for line in block.split(b"\n"):
        if line.strip():
            try:
                line.decode("utf-8")
                if not _point(_KINDS.decode(line)):
                    return start
            except (msgspec.DecodeError, UnicodeDecodeError):
                return start
        start += len(line) + 1
    return 0  # not reached: the block as a whole was not records


def _line_at(opener: Opener, codec: str, offset: int) -> int:
    """The number (from 1) of the line starting `offset` bytes into the file's lines: read
    again only when one is bad, so the pass over a sound file counts no line ends."""
    lines = 1
    with opener() as raw:
        stream = _decompressed(_Hashing(raw), codec)
        while offset > 0 and (chunk := stream.read(min(CHUNK, offset))):
            lines += chunk.count(b"\n")
            offset -= len(chunk)
    return lines
