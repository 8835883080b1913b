"""`--format points`: one line per data point, joined with its metric, and the rest raw.

The writer hands each run's encoded lines (`records.Lines`) here. Series lines become
points (`Serie`, rendered as `<id>.points.ndjson` lines or as Parquet columns); every
other line goes unchanged to the sidecar (`<id>.meta.ndjson`), so a metric without
points, thresholds, overviews, the run and the summary are all kept. Only the lines that
matter are parsed: `run` and `metric` (to remember), `series` (to explode); the others
are routed on their first bytes (`records` writes `"type"` first).

A point: `{"test_run_id", "test_id", "project_id", "metric", "metric_type", "tags",
"method", "time", "value"}`. From v2: the serie's `metric_id` joined with its `metric`
record (name, type, tags), `method` the serie's, `time` the value's `timestamp` as the API
gives it (RFC 3339, UTC). From v6: the series' `query` names the metric and the v5
method, the result's labels are the tags (all but `__name__`), the metric type comes from
the `metric` record of that name, and the Unix time becomes RFC 3339 UTC. `test_id` and
`project_id` come from the `run` record when there is one (else the metric's
`project_id` in v2, else null).

Speed (why a v2 serie is not parsed point by point): a medium harvest holds 1.9 million
points, and a Python dict per point cost about 4 microseconds each, more than the whole
raw harvest. A v2 serie's `values` array, as `records` wrote it, is already the points'
last two columns: when it is exactly `[{"timestamp": "<string>", "value": <number or
null>}, ...]` (checked by its structural bytes and two counts, `checked_points`), each
`{"timestamp":` is replaced by the point's head and the array's bytes are the lines. Any
other shape (a value `true`, `"abc"`...) is parsed and converted point by point, each
value by `pointvalue.point_value` (the same lines, slower). The lines of a batch are
found by offset, not split into copies, and a serie's lines are handed on as pieces
(`Serie.chunks`): the points file is 5x raw's bytes, and each copy of them costs.

A points harvest sends its v2 series here as texts (`packed.SeriesTexts`: `text_chunks`
for the points file, `texts` as series): each serie's `values` as the API sent it,
which the harvester did not read point by point, so the check here also proves each
value a number a double holds (`point_bytes.finite_points`: no exponent;
`packed.series_texts` sent no answer with 309 digits in a row as texts). The byte checks
and the replace are in `point_bytes`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from .point_bytes import (
    FIRST,
    NEXT,
    NOT_KEPT,
    PAIR_SHAPE,
    VALUE,
    built_lines,
    checked_points,
    finite_points,
)
from .pointvalue import point_value

if TYPE_CHECKING:
    from ..packed import SeriesTexts

SERIES = b'{"type":"series"'
REMEMBERED = (b'{"type":"metric"', b'{"type":"run"')
NEWLINE = orjson.OPT_APPEND_NEWLINE
VALUES_KEY = b'"values":['
TIME = b',"time":'


@dataclass(frozen=True, slots=True)
class Serie:
    """One serie's points: the columns they share (`head`) and their times and values,
    either as the checked bytes of a v2 `values` array (`body`) or as converted pairs."""

    head: dict[str, Any]
    count: int
    body: bytes = b"[]"
    pairs: list[tuple[Any, Any]] | None = None
    #: The points' lines, built by the splitter (`PointsSplitter(lines=True)`), after a
    #: first `\n` (see `point_bytes.built_lines`).
    lines: bytes | None = None

    def ndjson(self) -> bytes:
        """The points' lines."""
        return b"".join(self.chunks())

    def chunks(self) -> list[bytes | memoryview]:
        """The points' lines in pieces, whose concatenation is `ndjson()`: a plain serie's
        lines are made by one replace over its array, and written without another copy."""
        if self.pairs is not None:
            return self._pair_lines(self.pairs)
        if self.lines is not None:
            return [memoryview(self.lines)[1:]]
        if not self.count:
            return []
        prefix = orjson.dumps(self.head)[:-1] + TIME
        lines = memoryview(self.body.replace(NEXT, b"\n" + prefix))
        return [prefix, lines[len(FIRST) : -1], b"\n"]

    def _pair_lines(self, pairs: list[tuple[Any, Any]]) -> list[bytes | memoryview]:
        """Converted pairs' lines: one orjson call makes `[["<time>",<value>],...]` and,
        when each pair is a string and a number or null (`PAIR_SHAPE`: v6's times and values),
        two replaces make it the lines, as for a v2 serie; else a dict a point."""
        if not pairs:
            return []
        array = orjson.dumps(pairs)
        shape = b"[" + PAIR_SHAPE + (b"," + PAIR_SHAPE) * (len(pairs) - 1) + b"]"
        if array.translate(None, NOT_KEPT) != shape:
            head, dumps = self.head, orjson.dumps
            converted = (
                dumps({**head, "time": time, "value": value}, option=NEWLINE)
                for time, value in pairs
            )
            return [b"".join(converted)]
        prefix = orjson.dumps(self.head)[:-1] + TIME
        lines = array.replace(b'",', VALUE).replace(b"],[", b"}\n" + prefix)
        return [prefix, memoryview(lines)[2:-2], b"}\n"]

    def rows(self) -> list[dict[str, Any]]:
        """The points as dicts, the columns of their lines (for consumers of records)."""
        if self.pairs is None:
            pairs = [(p["timestamp"], p["value"]) for p in orjson.loads(self.body)]
        else:
            pairs = self.pairs
        return [{**self.head, "time": time, "value": value} for time, value in pairs]

    def csv(self) -> bytes:
        """A plain v2 serie's times and values as `time,value` lines, what Arrow's CSV
        reader turns into typed columns without a Python object a point."""
        if self.pairs is not None:
            raise ValueError("a converted serie has no CSV: take its pairs")
        if not self.count:
            return b""
        inner = self.body[len(FIRST) + 1 : -2]
        return inner.replace(b'","value":', b",").replace(b'},{"timestamp":"', b"\n") + b"\n"


class PointsSplitter:
    """One run's lines in, series (`Serie`) and meta lines (bytes) out; remembers the
    run's metrics for the join."""

    def __init__(self, run_id: int, *, lines: bool = False) -> None:
        self.run_id = run_id
        #: Build each plain v2 serie's lines here (`Serie.lines`), for the points file.
        self._lines = lines
        self.test_id: Any = None
        self.project_id: Any = None
        self.metrics: dict[str, dict[str, Any]] = {}  # v2: by id; v6: by name
        self.points = 0
        self._times: dict[Any, str] = {}  # v6: Unix time -> RFC 3339 (series share them)

    def split(self, data: bytes) -> Iterator[Serie | bytes]:
        """These lines as series and meta lines, in order (consecutive meta lines joined).

        Lines are found by offset (`records` writes no newline inside a line): only a
        serie's `values` and the few lines parsed are copied out of `data`."""
        meta = pos = 0
        size = len(data)
        while pos < size:
            end = data.find(b"\n", pos) + 1 or size
            if data.startswith(SERIES, pos):
                serie = self._fast_v2(data, pos, end) or self._parsed(read_line(data[pos:end]))
                if serie is not None:
                    if meta < pos:
                        yield data[meta:pos]
                    self.points += serie.count
                    yield serie
                meta = end
            elif data.startswith(REMEMBERED, pos):
                self._remember(read_meta(data[pos:end]))
            pos = end
        if meta < size:
            yield data[meta:]

    def _remember(self, record: dict[str, Any]) -> None:
        data = record.get("data")
        if not isinstance(data, dict):
            return
        if record["type"] == "run":
            self.test_id = data.get("test_id")
            self.project_id = data.get("project_id", self.project_id)
            return
        for key in ("id", "name"):
            if isinstance(data.get(key), str):
                self.metrics.setdefault(data[key], data)

    def _head(self, metric: dict[str, Any], name: Any, method: Any, tags: Any) -> dict[str, Any]:
        project = self.project_id if self.project_id is not None else metric.get("project_id")
        return {
            "test_run_id": self.run_id,
            "test_id": self.test_id,
            "project_id": project,
            "metric": name,
            "metric_type": metric.get("type"),
            "tags": tags,
            "method": method,
        }

    def _fast_v2(self, data: bytes, pos: int, end: int) -> Serie | None:
        """The v2 serie at `data[pos:end]`, its `values` cut out as bytes and the rest
        parsed; None when the line is not of that shape (then it is parsed whole)."""
        found = data.find(VALUES_KEY, pos, end)
        if found < 0:
            return None
        start = found + len(VALUES_KEY) - 1
        stop = data.find(b"]", start, end) + 1
        if stop == 0:
            return None
        body = data[start:stop]
        # When the lines are built here, their replace proves the points' first keys.
        count = checked_points(body, keys=not self._lines)
        if count is None:
            return None
        rest = data[pos:start] + b"[]" + data[stop:end]
        try:
            record = orjson.loads(rest)
        except orjson.JSONDecodeError:
            return None
        serie = record.get("data") if isinstance(record, dict) else None
        # The array cut out must be the serie's own `values`, and the line's only one.
        if not isinstance(serie, dict) or serie.get("values") != [] or rest.count(VALUES_KEY) != 1:
            return None
        if "query" in record:
            return None
        head = self.v2_head(serie.get("metric_id"), serie.get("method"))
        if not self._lines or not count:
            return Serie(head, count, body=body)
        lines = built_lines(head, body, count)
        return Serie(head, count, body=body, lines=lines) if lines is not None else None

    def texts(self, batch: SeriesTexts) -> Iterator[Serie]:
        """A batch of v2 series whose `values` are the API's texts, unread: each made lines
        by bytes when its points are plainly numbers a double holds (`finite_points`),
        else parsed and converted point by point (the same lines)."""
        for metric_id, method, text in batch.texts():
            serie = self._text_serie(self.v2_head(metric_id, method), bytes(text))
            self.points += serie.count
            yield serie

    def text_chunks(self, batch: SeriesTexts) -> Iterator[bytes | memoryview]:
        """The points lines of `texts`' series, in pieces, for the points file: a plain
        serie's lines as they are built, with no `Serie` made of them (2-5% of the
        writer's CPU, replayed batches of 31,000 points)."""
        for metric_id, method, text in batch.texts():
            head = self.v2_head(metric_id, method)
            body = bytes(text)
            count, lines = _text_lines(head, body)
            if count and lines is not None:
                self.points += count
                yield memoryview(lines)[1:]
            elif count != 0:
                serie = self._parsed_text(head, body)
                self.points += serie.count
                yield from serie.chunks()

    def _text_serie(self, head: dict[str, Any], body: bytes) -> Serie:
        count, lines = _text_lines(head, body)
        if lines is not None or count == 0:
            return Serie(head, count or 0, body=body, lines=lines)
        return self._parsed_text(head, body)

    def _parsed_text(self, head: dict[str, Any], body: bytes) -> Serie:
        pairs = _v2_pairs(read_line(body))
        return Serie(head, len(pairs), pairs=pairs)

    def v2_head(self, metric_id: Any, method: Any) -> dict[str, Any]:
        """The shared columns of a v2 serie's points (its metric joined by id)."""
        metric = self.metrics.get(str(metric_id), {})
        return self._head(metric, metric.get("name"), method, metric.get("tags") or {})

    def _parsed(self, record: dict[str, Any]) -> Serie | None:
        data = record.get("data")
        if not isinstance(data, dict):
            return None
        query = record.get("query")
        if isinstance(query, dict):  # v6: a query_range_k6 result
            name = query.get("metric")
            metric = self.metrics.get(str(name), {})
            labels = data.get("metric")
            labels = labels if isinstance(labels, dict) else {}
            tags = {k: v for k, v in labels.items() if k != "__name__"}
            values = data.get("values")
            pairs: list[tuple[Any, Any]] = [
                (self._unix_time(v[0]), point_value(v[1]))
                for v in (values if isinstance(values, list) else [])
                if isinstance(v, list) and len(v) == 2
            ]
            return Serie(
                self._head(metric, name, query.get("method"), tags), len(pairs), pairs=pairs
            )
        # v2: a k6-serie of a shape the fast path does not take
        pairs = _v2_pairs(data.get("values"))
        head = self.v2_head(data.get("metric_id"), data.get("method"))
        return Serie(head, len(pairs), pairs=pairs)

    def _unix_time(self, seconds: Any) -> str | None:
        """A v5 point's Unix time as RFC 3339, or None (null) when it is no time: not a
        number, or past the years 1-9999 (it ended the job as 'cannot write': OverflowError,
        ValueError, TypeError), as a value that is no finite number is null."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float | str):
            return None
        known = self._times.get(seconds)
        if known is None:
            try:
                moment = datetime.fromtimestamp(float(seconds), UTC)
            except (ValueError, OverflowError, OSError):
                return None
            known = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
            if len(self._times) < 100_000:  # a run's time grid, not every odd stamp
                self._times[seconds] = known
        return known


def _text_lines(head: dict[str, Any], body: bytes) -> tuple[int | None, bytes | None]:
    """A `values` text's points and their lines (after a first `\n`) when they are plain
    numbers a double holds (`finite_points`); (0, None) for no points; a count or None
    and no lines when it must be parsed.

    The lines are built whatever the splitter's `lines` says: only their replace proves
    each point's first key (`finite_points` does not count them), which `Serie.chunks`'
    own replace of a checked body would take on trust."""
    count = finite_points(body)
    return count, built_lines(head, body, count) if count else None


def _v2_pairs(values: Any) -> list[tuple[Any, Any]]:
    """A v2 serie's points as (time, value) pairs, each value by `point_value`: none when
    its `values` is no array (null, or a number: it was a "cannot write" of the run)."""
    if not isinstance(values, list):
        return []
    points = (v for v in values if isinstance(v, dict))
    return [(point.get("timestamp"), point_value(point.get("value"))) for point in points]


def read_line(line: bytes) -> Any:
    """A record line, parsed. A serie is kept as the API sent it (`series_answers.series_answer`),
    which may hold a number past a double's range (`1e999`) in a field the harvester does
    not read: orjson refuses it, and the standard library reads it as orjson would have
    read it if it could (an infinity; an integer past 64 bits, a float). Rare: orjson first."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line, parse_int=_orjson_int)


def _orjson_int(text: str) -> int | float:
    number = int(text)
    return number if -(2**63) <= number < 2**64 else float(text)


#: A run of digits that may spell an integer orjson reads as a float (past 64 bits: at
#: least 19 digits); one in a string or a fraction only costs the slower, exact read.
#: Found as 19 zeros once every digit is a zero: 0.7 us a metric's line, where the
#: regex `\d{19}` took 7 us (it tries 19 digits at each place), ~0.2 s over large.
_ZEROS = bytes.maketrans(b"123456789", b"0" * 9)
_LONG_DIGITS = b"0" * 19


def read_meta(line: bytes) -> Any:
    """A record line that is no serie (a run, a metric...), its integers exact: one past
    64 bits (a run's `test_id` of 1180591620717411303424) was read as orjson reads it, a
    float, and written `1.1805916207174113e+21` into every point. Such an integer is kept
    as its text (`orjson.Fragment`), which orjson writes back as the number it was."""
    if _LONG_DIGITS not in line.translate(_ZEROS):
        return read_line(line)
    return json.loads(line, parse_int=_exact_int)


def _exact_int(text: str) -> int | orjson.Fragment:
    number = int(text)
    return number if -(2**63) <= number < 2**64 else orjson.Fragment(text)
