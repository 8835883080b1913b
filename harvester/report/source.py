"""A run's series, streamed from whichever files its format left.

- `--format ndjson` (raw, any compression): the `series` records of `<id>.ndjson`, v2
  `k6-serie`s joined with their `metric` records by id, or v6 results with their `query`.
- `--format points`: `<id>.points.ndjson[.gz|.zst]`, one point a line.
- `--format parquet`: `<id>.parquet` (`parquet_source`).

The other records (run, metrics, thresholds, checks, overview, summary) are in the
run's `ArchivedRun` file either way: `<id>.ndjson` itself, or the `<id>.meta.ndjson`
sidecar beside the points. Memory holds one line, or one chunk of lines, and one serie.

Speed: a serie's points are read by msgspec into typed structs (C), their values become
an array of doubles and their times are converted once a run (`series.Clock`), so no
dict, and no Python call, is made a point; a serie the report does not draw (`wanted`)
has its points skipped unread. A line (raw) or a chunk (points) of any other shape than
the writer's is read as before, a row at a time with orjson (`from_v2`, `join_rows`),
which says what is wrong with it.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator
from itertools import compress, groupby
from operator import attrgetter
from pathlib import Path
from typing import Any, cast

import msgspec
import orjson

from ..archive import ArchivedRun, ArchiveError, Record
from ..compression import READ_ERRORS, open_data, published_data
from .parquet_source import parquet_series
from .series import (
    Clock,
    Key,
    Serie,
    SerieJoiner,
    Wanted,
    from_v2,
    from_v6,
    join_rows,
    method_name,
    tags_key,
)

#: Bytes of a points file read at once (its whole lines).
CHUNK = 1 << 20


def series_of(run: ArchivedRun, metrics: dict[str, Record], wanted: Wanted) -> Iterator[Serie]:
    """The run's series in file order (`metrics`: v2 `metric` records by id); those that
    `wanted` says no to may be left out."""
    if ".meta." not in run.path.name:
        yield from _raw(run, metrics, wanted)
        return
    folder = run.path.parent
    points = published_data(folder, run.run_id, "points.ndjson")
    if points is not None:
        yield from _points(points, wanted)
        return
    parquet = folder / f"{run.run_id}.parquet"
    if parquet.is_file():
        yield from parquet_series(parquet, wanted)
        return
    raise ArchiveError(
        f"{run.path} has no points beside it ({run.run_id}.points.ndjson or "
        f"{run.run_id}.parquet): copy the whole archive, or harvest run {run.run_id} again"
    )


class _Point(msgspec.Struct, gc=False):
    """A v2 point as the API sends it (any other shape: the line is read as before)."""

    timestamp: str
    value: float


class _V2(msgspec.Struct, gc=False):
    values: msgspec.Raw = msgspec.Raw(b"null")  # read only when the serie is drawn
    metric_id: str | None = None
    method: str | None = None


class _Line(msgspec.Struct, gc=False):
    data: _V2
    query: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET  # v6: read as before


_LINE = msgspec.json.Decoder(_Line)
_POINTS = msgspec.json.Decoder(list[_Point] | None)
_TIMESTAMP, _VALUE = attrgetter("timestamp"), attrgetter("value")
#: What a typed reader returns for something it leaves to the reader of any shape.
_OTHER: Any = object()


def _raw(run: ArchivedRun, metrics: dict[str, Record], wanted: Wanted) -> Iterator[Serie]:
    clock = Clock()
    for number, line in run.lines("series"):
        serie = _v2(line, metrics, wanted, clock) if _utf8(line) else _OTHER
        if serie is _OTHER:
            record = run.parse(line, number)
            if record is None or record.get("type") != "series":
                continue
            data, query = record["data"], record.get("query")
            serie = from_v6(query, data) if isinstance(query, dict) else from_v2(data, metrics)
        if serie is not None:
            yield serie


def _utf8(text: bytes) -> bool:
    """Whether `text` is UTF-8, which msgspec does not check inside the strings it skips
    (orjson, reading as before, says where it is not)."""
    if text.isascii():  # the usual case, ten times as fast
        return True
    try:
        text.decode()
    except UnicodeDecodeError:
        return False
    return True


def _v2(line: bytes, metrics: dict[str, Record], wanted: Wanted, clock: Clock) -> Any:
    """A v2 serie of the usual shape read typed (None when not drawn), else `_OTHER`."""
    try:
        record = _LINE.decode(line)
    except msgspec.DecodeError:
        return _OTHER
    if record.query is not msgspec.UNSET:
        return _OTHER
    data = record.data
    metric = metrics.get(str(data.metric_id))
    method = method_name(data.method)
    if metric is None or method is None:
        return None
    name = str(metric.get("name", ""))
    if not wanted(name, method):
        return None
    try:
        points = _POINTS.decode(data.values) or []
    except msgspec.DecodeError:
        return _OTHER
    values = array("d", map(_VALUE, points))
    if not math.isfinite(sum(values)):  # no finite figure to add up: read as before
        return _OTHER
    times = clock.times(list(map(_TIMESTAMP, points)))[0]
    return Serie(name, tags_key(metric.get("tags")), method, times, values)


class _Row(msgspec.Struct, gc=False):
    """A line of a points file as the writer writes it (any other: the chunk as before)."""

    time: str
    metric: str | None = None
    tags: msgspec.Raw = msgspec.Raw(b"null")
    method: str | None = None
    value: float | None = None


_ROWS = msgspec.json.Decoder(_Row)
_ROW_KEY = attrgetter("metric", "tags", "method")
_TIME = attrgetter("time")
Stretch = tuple[Key, float, float, "array[float]", "array[float]"]


def _points(path: Path, wanted: Wanted) -> Iterator[Serie]:
    joiner, clock = SerieJoiner(wanted), Clock()
    try:
        with open_data(path) as data:
            done, rest = 0, b""  # bytes before the chunk; the end of a line cut by it
            while chunk := data.read(CHUNK):
                chunk = rest + chunk
                cut = chunk.rfind(b"\n") + 1
                chunk, rest = chunk[:cut], chunk[cut:]
                yield from _chunk(path, chunk, done, joiner, clock)
                done += len(chunk)
            yield from _chunk(path, rest, done, joiner, clock)
    except READ_ERRORS as exc:
        raise ArchiveError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    if (last := joiner.end()) is not None:
        yield last


def _chunk(
    path: Path, chunk: bytes, done: int, joiner: SerieJoiner, clock: Clock
) -> Iterator[Serie]:
    """The series a chunk of whole lines ends (`done`: the file's bytes before it)."""
    stretches = _typed(chunk, joiner, clock) if _utf8(chunk) else None
    if stretches is None:
        yield from join_rows(_rows(path, chunk, done), joiner)
        return
    for stretch in stretches:
        if (ended := joiner.extend(*stretch)) is not None:
            yield ended


def _typed(chunk: bytes, joiner: SerieJoiner, clock: Clock) -> list[Stretch] | None:
    """A chunk's stretches of one serie each (None when a line is of another shape)."""
    try:
        rows = _ROWS.decode_lines(chunk)
    except msgspec.DecodeError:
        return None
    stretches: list[Stretch] = []
    empty: array[float] = array("d")
    for (metric, tags, method), group in groupby(rows, _ROW_KEY):
        key = (str(metric), tags_key(msgspec.json.decode(tags)), method_name(method))
        if not joiner.wants(key):
            stretches.append((key, 0.0, 0.0, empty, empty))  # only ends the serie before
            continue
        members = list(group)
        times, rising = clock.times(list(map(_TIME, members)))
        values = [row.value for row in members]
        for lo, hi in [(0, len(times))] if rising else _rises(times):
            stretch = _stretch(key, times[lo:hi], values[lo:hi])
            if stretch is None:
                return None
            stretches.append(stretch)
    return stretches


def _rises(times: array[float]) -> list[tuple[int, int]]:
    """Where time stops increasing in a stretch of one key (the same aggregation asked
    twice): the bounds of each part that increases."""
    cuts = [i for i in range(1, len(times)) if times[i] <= times[i - 1]]
    bounds = [0, *cuts, len(times)]
    return list(zip(bounds, bounds[1:], strict=False))


def _stretch(key: Key, times: array[float], values: list[float | None]) -> Stretch | None:
    """One serie's rows as a stretch (None for a value no double holds: the chunk is read
    as before, which says so)."""
    first, last = times[0], times[-1]
    figures: array[float]
    try:
        figures = array("d", cast(list[float], values))
    except TypeError:  # a null among them: a row without a point
        kept = [value is not None for value in values]
        times = array("d", compress(times, kept))
        figures = array("d", cast(Iterator[float], compress(values, kept)))
    if not math.isfinite(sum(figures)):
        return None
    return key, first, last, times, figures


def _rows(path: Path, chunk: bytes, done: int) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(chunk.splitlines(), 1):
        if line.strip():
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                number += _lines_before(path, done)
                raise ArchiveError(f"{path}:{number}: not a JSON line ({exc})") from exc


def _lines_before(path: Path, size: int) -> int:
    """The lines in the first `size` bytes of a data file: counted only to name a bad line
    (counting every chunk's cost a tenth of the reading)."""
    with open_data(path) as data:
        return sum(data.read(min(CHUNK, size - done)).count(b"\n")
                   for done in range(0, size, CHUNK))  # fmt: skip
