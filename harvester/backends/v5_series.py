"""A v5 range query's `series` lines, made one result entry at a time.

One answer holds every series of a metric (20,000 tag sets: ~7.5 MB of JSON), so it is
never parsed whole. An answer up to `SPILL_AT` bytes is held in memory, checked to be
whole JSON and kept as each entry's text (`series_answers.raw_result`), each parsed alone as its
line is made (`series_chunks`). A longer one goes on in a temporary file as it arrives
(`wire.read_spilling`) and is read from there by an incremental parser (ijson), its
lines into a second temporary file; only once the whole answer has parsed are they
handed on (`SpilledSeries.chunks`), so a cut answer is still retried before one of its
series is written. Either way what an answer costs in memory does not grow with its
number of series: at most `SPILL_AT` bytes and a piece of lines.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterable, Iterator
from typing import IO, Any

import anyio
import ijson
import msgspec
import orjson

from ..allocator import trim_heap
from ..answers import BOM, Spill, never_json
from ..errors import MalformedAnswer, TruncatedBody, UnusableAnswer
from ..jsontext import loads
from ..series_answers import raw_result
from ..wire import MB, spill_failed

#: Bytes of `series` lines handed to the writer at once: an answer's series go on in
#: pieces of about this size, so its records are never all held (nor its parsed form).
#: The writer's channel holds `channel_size` (16) pieces: at 1 MiB a piece a wide run's
#: peak grew by the channel's 16-24 MB once answers outgrew it (`--size wide-40k`).
SERIES_CHUNK = 1 << 18
#: Long answers parsed at once. Parsing holds the GIL (ijson builds each entry, orjson
#: encodes it), so more threads are not faster, and each holds its buffers and its own
#: malloc arena: eight at once had the peak 5-8 MB higher at 20,000 tag sets.
PARSERS = 1
#: An answer longer than this goes to a temporary file rather than memory (see above):
#: ~2,600 series of a metric; each of `--concurrency` answers in flight holds at most it.
SPILL_AT = 1 * MB
JsonObject = dict[str, Any]


def series_lines(
    run_id: int, query: JsonObject, entries: Iterable[Any]
) -> Iterator[tuple[bytes, int]]:
    """`series` lines, (bytes, how many) at a time: each entry written unchanged as
    `data`, the `query` beside it, each line into one buffer at once (orjson's bytes hold
    ~4 KB however short: see `records.encode`)."""
    out, count = io.BytesIO(), 0
    for data in entries:
        record = {"type": "series", "test_run_id": run_id, "query": query, "data": data}
        out.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        count += 1
        if out.tell() >= SERIES_CHUNK:
            yield out.getvalue(), count
            out, count = io.BytesIO(), 0
    if count:
        yield out.getvalue(), count


def series_chunks(
    run_id: int, query: JsonObject, entries: list[msgspec.Raw]
) -> Iterator[tuple[bytes, int]]:
    """`series_lines` of an answer held in memory: an entry's parsed form lives only while
    its line is made."""
    return series_lines(run_id, query, (_parsed(entry, query) for entry in entries))


def _parsed(entry: msgspec.Raw, query: JsonObject) -> Any:
    """An entry parsed with each number as the API wrote it (`jsontext.loads`): orjson
    alone made a double of an integer past 64 bits (a 25-digit one archived as `1e+25`)."""
    try:
        return loads(memoryview(entry))
    except orjson.JSONDecodeError as exc:  # whole JSON, but not to orjson (not UTF-8)
        # orjson says "surrogates not allowed" of a Latin-1 byte: say what it is, and where.
        said = never_json(bytes(entry)) or str(exc)
        where = f"{query.get('method')} of {query.get('metric')}"
        raise UnusableAnswer(f"v5_query {where}: a series that does not parse ({said})") from exc


class SpilledSeries:
    """The `series` lines of an answer read from its temporary file, in one of their own,
    and the (bytes, count) of each piece."""

    def __init__(self) -> None:
        self.file: IO[bytes] = tempfile.TemporaryFile()
        self.pieces: list[tuple[int, int]] = []

    def add(self, data: bytes, count: int) -> None:
        with spill_failed():
            self.file.write(data)
        self.pieces.append((len(data), count))

    def chunks(self) -> Iterator[tuple[bytes, int]]:
        """The pieces as `series_chunks` gives them; the file is closed at their end, and
        the heap trimmed: an answer's buffers (its body's chunks, its pieces) come from
        glibc's heap once one such buffer was freed, and the holes they leave stayed
        resident (`--size wide-40k` at one answer at a time: 58.5 -> 54.9 MB)."""
        with self.file:
            self.file.seek(0)
            for size, count in self.pieces:
                yield self.file.read(size), count
        trim_heap()


def spilled(run_id: int, query: JsonObject, parsers: anyio.CapacityLimiter) -> Spill:
    """The `Spill` of a range query: its lines made in a worker thread (a long answer
    takes a while to parse, and the event loop has requests to serve meanwhile), one of
    `parsers` (`PARSERS` of the job's) at a time."""

    async def read(body: IO[bytes], where: Any) -> SpilledSeries:
        return await anyio.to_thread.run_sync(
            write_series, body, run_id, query, where, limiter=parsers
        )

    return Spill(SPILL_AT, read)


def write_series(body: IO[bytes], run_id: int, query: JsonObject, where: Any) -> SpilledSeries:
    """The lines of each `data.result` entry of `body`; `TruncatedBody` (retried) for an
    answer that is not whole JSON, as `answers.parse_body` says it."""
    if body.read(len(BOM)) != BOM:  # RFC 8259 lets a parser skip one
        body.seek(0)
    start = body.tell()
    with spill_failed():
        out = SpilledSeries()
    try:
        entries = ijson.items(body, "data.result.item", use_float=True)
        for data, count in series_lines(run_id, query, entries):
            out.add(data, count)
        if not out.pieces:
            body.seek(start)
            _has_result_list(body, where)
    except BaseException as exc:
        out.file.close()
        if isinstance(exc, ijson.JSONError) and "overflow" in str(exc):
            body.seek(0)
            return _read_whole(body.read(), run_id, query, where)
        if isinstance(exc, ijson.JSONError):
            raise _failure(exc, where) from exc
        raise
    return out


def _read_whole(body: bytes, run_id: int, query: JsonObject, where: Any) -> SpilledSeries:
    """An answer with a number yajl's parser cannot hold (an integer past int64, or
    int64's least) read as an answer in memory is: orjson takes integers to 2**64 and
    makes a float of a larger one. Rare, so its memory is no concern."""
    entries = raw_result(body, 200, "v5_query", where)
    if entries is None:
        url = where()
        raise MalformedAnswer(f"v5_query {url}: unexpected answer: no 'data.result' list", url=url)
    with spill_failed():
        out = SpilledSeries()
    try:
        for data, count in series_chunks(run_id, query, entries):
            out.add(data, count)
    except BaseException:
        out.file.close()
        raise
    return out


def _has_result_list(body: IO[bytes], where: Any) -> None:
    """An answer without one series must still have its (empty) `data.result` list."""
    for prefix, event, _ in ijson.parse(body):
        if prefix == "data.result" and event == "start_array":
            return
    url = where()
    raise MalformedAnswer(f"v5_query {url}: unexpected answer: no 'data.result' list", url=url)


def _failure(exc: ijson.JSONError, where: Any) -> Exception:
    """ijson's error as `answers.parse_body` and `series_chunks` say it for an answer in
    memory: not UTF-8 fails the run; any other is taken for a body cut short, retried."""
    if "UTF8" in str(exc):
        return UnusableAnswer(f"v5_query {where()}: a series that does not parse (not UTF-8)")
    return TruncatedBody("HTTP 200 with a body that is not whole JSON", url=where())
