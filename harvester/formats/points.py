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
null>}, ...]` (checked by counting its structural bytes, `_checked_points`), each
`{"timestamp":` is replaced by the point's head and the array's bytes are the lines. Any
other shape (a value `true`, `"abc"`...) is parsed and converted point by point, each
value by `pointvalue.point_value` (the same lines, slower).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from .pointvalue import point_value

SERIES = b'{"type":"series"'
REMEMBERED = (b'{"type":"metric"', b'{"type":"run"')
NEWLINE = orjson.OPT_APPEND_NEWLINE
VALUES_KEY = b'"values":['
FIRST = b'[{"timestamp":'
NEXT = b',{"timestamp":'
TIME = b',"time":'
#: A value the fast path copies: a number or null (`pointvalue`'s rule: anything else is
#: parsed and made null).
_POINT = rb'\{"timestamp":"[^"\\{},]*+","value":(?:-?[0-9][0-9.eE+-]*+|null)\}'
PLAIN_POINTS = re.compile(rb"\[" + _POINT + rb"(?:," + _POINT + rb")*+\]")


@dataclass(frozen=True, slots=True)
class Serie:
    """One serie's points: the columns they share (`head`) and their times and values,
    either as the checked bytes of a v2 `values` array (`body`) or as converted pairs."""

    head: dict[str, Any]
    count: int
    body: bytes = b"[]"
    pairs: list[tuple[Any, Any]] | None = None

    def ndjson(self) -> bytes:
        """The points' lines."""
        if self.pairs is not None:
            head, dumps = self.head, orjson.dumps
            return b"".join(
                dumps({**head, "time": time, "value": value}, option=NEWLINE)
                for time, value in self.pairs
            )
        if not self.count:
            return b""
        prefix = orjson.dumps(self.head)[:-1] + TIME
        return prefix + self.body[len(FIRST) : -1].replace(NEXT, b"\n" + prefix) + b"\n"

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

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        self.test_id: Any = None
        self.project_id: Any = None
        self.metrics: dict[str, dict[str, Any]] = {}  # v2: by id; v6: by name
        self.points = 0
        self._times: dict[Any, str] = {}  # v6: Unix time -> RFC 3339 (series share them)

    def split(self, data: bytes) -> Iterator[Serie | bytes]:
        """These lines as series and meta lines, in order (consecutive meta lines joined)."""
        meta: list[bytes] = []
        for line in data.splitlines(keepends=True):
            if line.startswith(SERIES):
                serie = self._fast_v2(line) or self._parsed(orjson.loads(line))
                if serie is None:
                    continue
                if meta:
                    yield b"".join(meta)
                    meta = []
                self.points += serie.count
                yield serie
                continue
            if line.startswith(REMEMBERED):
                self._remember(orjson.loads(line))
            meta.append(line)
        if meta:
            yield b"".join(meta)

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

    def _fast_v2(self, line: bytes) -> Serie | None:
        """A v2 serie whose `values` are cut out as bytes, the rest parsed; None when the
        line is not of that shape (then it is parsed whole)."""
        start = line.find(VALUES_KEY) + len(VALUES_KEY) - 1
        end = line.find(b"]", start) + 1
        if start < len(VALUES_KEY) - 1 or end == 0:
            return None
        body = line[start:end]
        count = _checked_points(body)
        if count is None:
            return None
        rest = line[:start] + b"[]" + line[end:]
        try:
            record = orjson.loads(rest)
        except orjson.JSONDecodeError:
            return None
        data = record.get("data") if isinstance(record, dict) else None
        # The array cut out must be the serie's own `values`, and the line's only one.
        if not isinstance(data, dict) or data.get("values") != [] or rest.count(VALUES_KEY) != 1:
            return None
        if "query" in record:
            return None
        metric = self.metrics.get(str(data.get("metric_id")), {})
        head = self._head(metric, metric.get("name"), data.get("method"), metric.get("tags") or {})
        return Serie(head, count, body=body)

    def _parsed(self, record: dict[str, Any]) -> Serie | None:
        data = record.get("data")
        if not isinstance(data, dict):
            return None
        query = record.get("query")
        if isinstance(query, dict):  # v6: a query_range_k6 result
            name = query.get("metric")
            metric = self.metrics.get(str(name), {})
            labels = data.get("metric")
            tags = {k: v for k, v in (labels or {}).items() if k != "__name__"}
            pairs: list[tuple[Any, Any]] = [
                (self._unix_time(v[0]), point_value(v[1]))
                for v in data.get("values") or []
                if len(v) == 2
            ]
            return Serie(
                self._head(metric, name, query.get("method"), tags), len(pairs), pairs=pairs
            )
        # v2: a k6-serie of a shape the fast path does not take
        metric = self.metrics.get(str(data.get("metric_id")), {})
        values = data.get("values") or []
        pairs = [
            (v.get("timestamp"), point_value(v.get("value"))) for v in values if isinstance(v, dict)
        ]
        head = self._head(metric, metric.get("name"), data.get("method"), metric.get("tags") or {})
        return Serie(head, len(pairs), pairs=pairs)

    def _unix_time(self, seconds: Any) -> str:
        known = self._times.get(seconds)
        if known is None:
            moment = datetime.fromtimestamp(float(seconds), UTC)
            known = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
            if len(self._times) < 100_000:  # a run's time grid, not every odd stamp
                self._times[seconds] = known
        return known


def _checked_points(body: bytes) -> int | None:
    """How many points `body` holds when it is exactly `[{"timestamp": <string>, "value":
    <number or null>}, ...]`, else None. `body` is part of a line orjson wrote, so
    it is valid JSON up to its end, the first `]` after its `[`: a time without `"`, `\\`,
    braces or commas and a value of digits, signs, `.`, `e` or `null` leave the
    bytes `{`, `},{"timestamp":"` and `","value":` to the structure alone."""
    if body == b"[]":
        return 0
    if PLAIN_POINTS.fullmatch(body) is None:
        return None
    return body.count(b"{")
