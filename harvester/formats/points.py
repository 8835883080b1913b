"""`--format points`: one line per data point, joined with its metric, and the rest raw.

The writer hands each run's encoded lines (`records.Lines`) here. Series lines become
points lines (`<id>.points.ndjson`); every other line goes unchanged to the sidecar
(`<id>.meta.ndjson`), so a metric without points, thresholds, overviews, the run and the
summary are all kept. Only the lines that matter are parsed: `run` and `metric` (to
remember), `series` (to explode); the others are routed on their first bytes (`records`
writes `"type"` first).

A point: `{"test_run_id", "test_id", "project_id", "metric", "metric_type", "tags",
"method", "time", "value"}`. From v2: the serie's `metric_id` joined with its `metric`
record (name, type, tags), `method` the serie's, `time` the value's `timestamp` as the API
gives it (RFC 3339, UTC). From v6: the series' `query` names the metric and the v5
method, the result's labels are the tags (all but `__name__`), the metric type comes from
the `metric` record of that name, and the Unix time becomes RFC 3339 UTC. `test_id` and
`project_id` come from the `run` record when there is one (else the metric's
`project_id` in v2, else null).
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import orjson

SERIES = b'{"type":"series"'
REMEMBERED = (b'{"type":"metric"', b'{"type":"run"')
NEWLINE = orjson.OPT_APPEND_NEWLINE


class PointsSplitter:
    """One run's lines in, (points bytes, meta bytes) out; remembers its metrics."""

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        self.test_id: Any = None
        self.project_id: Any = None
        self.metrics: dict[str, dict[str, Any]] = {}  # v2: by id; v6: by name
        self.points = 0

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        """(points lines, meta lines) of these lines."""
        rows, meta = self.split(data)
        dumps = orjson.dumps
        return b"".join(dumps(row, option=NEWLINE) for row in rows), meta

    def split(self, data: bytes) -> tuple[list[dict[str, Any]], bytes]:
        """(points, meta lines) of these lines."""
        points: list[dict[str, Any]] = []
        meta = io.BytesIO()
        for line in data.splitlines(keepends=True):
            if line.startswith(SERIES):
                self._explode(orjson.loads(line), points)
                continue
            if line.startswith(REMEMBERED):
                self._remember(orjson.loads(line))
            meta.write(line)
        self.points += len(points)
        return points, meta.getvalue()

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

    def _explode(self, record: dict[str, Any], out: list[dict[str, Any]]) -> None:
        data = record.get("data")
        if not isinstance(data, dict):
            return
        query = record.get("query")
        if isinstance(query, dict):  # v6: a query_range_k6 result
            name = query.get("metric")
            metric = self.metrics.get(str(name), {})
            method = query.get("method")
            labels = data.get("metric")
            tags = {k: v for k, v in (labels or {}).items() if k != "__name__"}
            values = [(_unix_time(v[0]), v[1]) for v in data.get("values") or [] if len(v) == 2]
        else:  # v2: a k6-serie
            metric = self.metrics.get(str(data.get("metric_id")), {})
            name = metric.get("name")
            method = data.get("method")
            tags = metric.get("tags") or {}
            values = [(v.get("timestamp"), v.get("value")) for v in data.get("values") or []]
        head = {
            "test_run_id": self.run_id,
            "test_id": self.test_id,
            "project_id": self.project_id
            if self.project_id is not None
            else metric.get("project_id"),
            "metric": name,
            "metric_type": metric.get("type"),
            "tags": tags,
            "method": method,
        }
        out.extend({**head, "time": time, "value": _number(value)} for time, value in values)


def _unix_time(seconds: Any) -> str:
    moment = datetime.fromtimestamp(float(seconds), UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _number(value: Any) -> Any:
    """v5 answers carry values as strings ("1.5", "NaN"): a number when it is one."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return number if number == number and abs(number) != float("inf") else None
    return value
