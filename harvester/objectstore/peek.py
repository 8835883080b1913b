"""A run's `run` record read from the first bytes of its object, without the rest: what
`report s3://... --test T` (or `--since` in the flat layout) chooses runs by, rather than
copying every run of the archive to read each one's record.

A harvest writes the run's record first, when it has one (`--run-record`, discovery):
the first line of `<id>.ndjson` or, for points and Parquet, of the sidecar
`<id>.meta.ndjson`, compressed or not. One ranged GET of `PEEK` bytes holds it (a run
object is a few KB); the start of a gzip or zstd stream is decompressed as far as it
goes. A first line that is not a run record means the run has none (`NO_RECORD`); one
that cannot be read from those bytes (longer, damaged) is `UNKNOWN`: the run is then
copied and read whole, as any archive's run is.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any, Final

import orjson
import zstandard

from ..compression import codec_of
from .failures import StoreError
from .store import Store

#: Bytes asked for: a run object is a few KB; a first line longer is read whole instead.
PEEK = 64 << 10


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Final = _Unknown()
NO_RECORD: Final = None


async def run_record(store: Store, key: str) -> dict[str, Any] | None | _Unknown:
    """The run object of the run whose first object is at `key`, `NO_RECORD` (None) when
    its first line is no run record, or `UNKNOWN`."""
    try:
        answer = await store.call("get_object", Key=key, Range=f"bytes=0-{PEEK - 1}")
    except StoreError as exc:
        if exc.code == "InvalidRange":  # an empty object: read whole, as it is
            return UNKNOWN
        raise
    body = answer["Body"]
    try:
        head: bytes = await body.read()
    except Exception:  # aiohttp's or botocore's: cut on the way; it is read whole later
        return UNKNOWN
    finally:
        body.close()
    return first_record(head, codec_of(Path(key)))


def first_record(head: bytes, codec: str) -> dict[str, Any] | None | _Unknown:
    """The run object in the first line of a file's first bytes (`run_record`)."""
    try:
        if codec == "gzip":
            head = zlib.decompressobj(wbits=31).decompress(head)
        elif codec == "zstd":
            head = zstandard.ZstdDecompressor().decompressobj().decompress(head)
    except (zlib.error, zstandard.ZstdError):
        return UNKNOWN
    line, newline, _ = head.partition(b"\n")
    if not newline:
        return UNKNOWN
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return UNKNOWN
    if not isinstance(record, dict) or record.get("type") != "run":
        return NO_RECORD
    data = record.get("data")
    return data if isinstance(data, dict) else NO_RECORD
