"""One shape for every archived serie, whatever the API and the format that archived it.

A `Serie` is a metric name, its tags, the aggregation (`method`) and its points as
(epoch seconds, value). The report draws from this shape only, so a v2 `k6-serie`, a v6
`query_range_k6` result and the rows of `--format points` or `parquet` give one report.

Methods are named as v2 names them: a v5 method becomes the v2 method it replaced (v6.md,
"previous method"), so `histogram_avg` is `mean`, `histogram_quantile(0.95)` is `p95`,
a Counter's `increase` is `sum`, a Rate's `increase_nz` (passes) is `sum`,
`increase_total` is `count` and `ratio` is `mean`. `increase_z` (fails) has no v2 name
and is `fails`. Running totals (`value`, `cumrate`, `*_value`, `rate_nz`...) are no
per-interval figure and are left out (None).
"""

from __future__ import annotations

import math
import re
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from operator import lt
from typing import Any

from .lines import epoch

Tags = tuple[tuple[str, str], ...]
#: Whether the report uses the series of a metric and (v2) method (`collect.wanted`).
Wanted = Callable[[str, str], bool]

#: v5 method -> v2 name; methods absent here and not v2 names already are skipped.
V5_TO_V2 = {
    "histogram_avg": "mean", "histogram_min": "min", "histogram_max": "max",
    "histogram_stddev": "stddev", "histogram_count_increase": "count",
    "increase": "sum", "increase_nz": "sum", "increase_z": "fails", "increase_total": "count",
    "ratio": "mean",
}  # fmt: skip
SKIPPED = frozenset(
    {"histogram_count_value", "value", "cumrate", "value_total", "value_nz", "value_z"}
    | {"rate_total", "rate_nz", "rate_z"}
)
_QUANTILE = re.compile(r"histogram_quantile\((0?\.\d+)\)")
#: Labels every v5 series carries that say nothing about the series itself.
NOT_TAGS = frozenset({"__name__", "test_run_id"})


@dataclass(slots=True)
class Serie:
    name: str
    tags: Tags
    method: str
    #: Its points: epoch seconds and values, doubles (8 bytes a point, no object each).
    times: array[float]
    values: array[float]

    @property
    def points(self) -> list[tuple[float, float]]:
        return list(zip(self.times, self.values, strict=True))


def serie(name: str, tags: Tags, method: str, points: Iterable[tuple[float, float]]) -> Serie:
    """A serie from its (epoch seconds, value) points."""
    pairs = list(points)
    times = array("d", [t for t, _ in pairs])
    return Serie(name, tags, method, times, array("d", [v for _, v in pairs]))


class Clock:
    """Epoch seconds of a run's timestamps, each text converted once: the series of a run
    share its time grid, so a serie's texts are most often a stretch of the longest grid
    seen (or of the grid grown by the stretches after it), found by its first text and
    checked whole (a comparison of lists, in C)."""

    def __init__(self) -> None:
        self._texts: list[str] = []
        self._times: array[float] = array("d")
        self._at: dict[str, int] = {}
        self._rising = True

    def times(self, texts: list[str]) -> tuple[array[float], bool]:
        """The texts' epoch seconds, and whether they surely increase all along (False: a
        stretch of a grid that does not, which may)."""
        if not texts:
            return array("d"), True
        at = self._at.get(texts[0])
        if at is not None and self._texts[at : at + len(texts)] == texts:
            return self._times[at : at + len(texts)], self._rising
        times = array("d", map(epoch, texts))
        rising = all(map(lt, times, islice(times, 1, None)))
        if rising and self._rising and self._times and times[0] > self._times[-1]:
            self._grow(texts, times)  # the grid going on: a serie cut by a points chunk
        elif len(texts) >= len(self._texts):
            self._texts, self._times, self._at, self._rising = [], array("d"), {}, rising
            self._grow(texts, times)
        return times, rising

    def _grow(self, texts: list[str], times: array[float]) -> None:
        for i, text in enumerate(texts, len(self._texts)):
            self._at.setdefault(text, i)
        self._texts += texts
        self._times += times  # a copy: `times` is the caller's


def method_name(method: Any) -> str | None:
    """The v2 name of an archived method (None for a running total, not drawn)."""
    text = str(method or "default")
    if text in SKIPPED:
        return None
    if match := _QUANTILE.fullmatch(text):
        return f"p{float(match.group(1)) * 100:g}"
    return V5_TO_V2.get(text, text)


def tags_key(tags: Any) -> Tags:
    """Tags as a sorted tuple of strings; the run's id (a v5 label) left out."""
    pairs = tags.items() if isinstance(tags, dict) else tags or ()
    return tuple(sorted((str(k), str(v)) for k, v in pairs if k not in NOT_TAGS))


def number(value: Any) -> float | None:
    """A point's value as a float, None for a gap: v5 may send strings ("1.5", "NaN"),
    and NaN or an infinity is no figure to add up or draw."""
    if type(value) is float:  # the common case, first
        return value if math.isfinite(value) else None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        figure = float(value)
    except ValueError:
        return None
    return figure if math.isfinite(figure) else None


def from_v2(data: dict[str, Any], metrics: dict[str, dict[str, Any]]) -> Serie | None:
    """A v2 `k6-serie`, its name and tags from the `metric` record of its `metric_id`."""
    metric = metrics.get(str(data.get("metric_id")))
    method = method_name(data.get("method"))
    if metric is None or method is None:
        return None
    points = []
    for point in data.get("values") or ():
        value = number(point.get("value"))
        if value is not None and isinstance(point.get("timestamp"), str):
            points.append((epoch(point["timestamp"]), value))
    return serie(str(metric.get("name", "")), tags_key(metric.get("tags")), method, points)


def from_v6(query: dict[str, Any], data: dict[str, Any]) -> Serie | None:
    """A v5 range result, named by the `query` the harvester kept beside it."""
    method = method_name(query.get("method"))
    labels = data.get("metric")
    if method is None or not isinstance(labels, dict):
        return None
    points = []
    for pair in data.get("values") or ():
        value = number(pair[1]) if len(pair) == 2 else None
        if value is not None:
            points.append((float(pair[0]), value))
    name = str(query.get("metric") or labels.get("__name__", ""))
    return serie(name, tags_key(labels), method, points)


Key = tuple[str, Tags, str | None]


class SerieJoiner:
    """Series back from points, one point a row (`--format points` and `parquet`): the
    writer puts a serie's points together in time order, so a serie ends where the key
    (metric, tags, method) changes or time stops increasing (the same aggregation asked
    twice, `default` and its name, comes as two series; the report keeps the first).

    Points are added a stretch at a time (`extend`); the points of a serie `wanted` says
    no to are not kept (its stretches still end the serie before it)."""

    def __init__(self, wanted: Wanted | None = None) -> None:
        self._wanted = wanted
        self._key: Key | None = None
        self._keep = False
        self._times: array[float] = array("d")
        self._values: array[float] = array("d")
        self._last = float("-inf")

    def extend(
        self, key: Key, first: float, last: float, times: array[float], values: array[float]
    ) -> Serie | None:
        """Add a stretch of one serie's rows, time increasing from `first` to `last` (the
        points `times` and `values`: its rows with a value); the serie it ended."""
        done = None
        if key != self._key or first <= self._last:
            done = self.end()
            self._key = key
            self._keep = self.wants(key)
        self._last = last
        if self._keep:
            self._times.extend(times)
            self._values.extend(values)
        return done

    def wants(self, key: Key) -> bool:
        """Whether points of `key` would be kept (a caller may skip making them)."""
        return key[2] is not None and (self._wanted is None or self._wanted(key[0], key[2]))

    def end(self) -> Serie | None:
        key, keep, times, values = self._key, self._keep, self._times, self._values
        self._key, self._keep, self._last = None, False, float("-inf")
        self._times, self._values = array("d"), array("d")
        if key is None or key[2] is None or not keep:
            return None
        return Serie(key[0], key[1], key[2], times, values)


def join_rows(rows: Iterable[dict[str, Any]], joiner: SerieJoiner) -> Iterator[Serie]:
    """Series from points rows as `--format points` writes them (`time` RFC 3339), one row
    at a time (the rows of a chunk `source` could not read typed); the last serie is left
    in `joiner`."""
    raw: tuple[Any, ...] = ()
    key: Key = ("", (), None)
    for row in rows:
        stamp = row.get("time")
        if not isinstance(stamp, str):
            continue
        # A serie's rows repeat its metric, tags and method: normalise them once a serie.
        now = (row.get("metric"), row.get("tags"), row.get("method"))
        if now != raw:
            raw, key = now, (str(now[0]), tags_key(now[1]), method_name(now[2]))
        moment, value = epoch(stamp), number(row.get("value"))
        points = (array("d"), array("d")) if value is None else (
            array("d", (moment,)), array("d", (value,)))  # fmt: skip
        if (done := joiner.extend(key, moment, moment, *points)) is not None:
            yield done
