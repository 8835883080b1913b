"""A run's data as the v5 metrics API sees it: metric names, labels, and query results.

Built over the same `RunData` the v2 routes serve, so one run reads the same through
either API. A recorded k6 run (`HasLabelSets`, `K6Run.v5_series`) has one v5 series per
metric and distinct full k6 tag set, as the live API keeps every k6 tag as a label
(`scenario`, `name`, `expected_response`, custom tags ...); a generated run has one per
v2 metric (a name and its distinguishing tags). Tag keys that are not label names
(`région`) are sanitized to `_`.

Per time bucket a query reads count, sum, min, max, last, non-zero count and sum of
squares. A recorded k6 run has its samples, so every method is exact there, quantiles
included; its buckets are made from them for each query and not kept (a run can have
many sparse tag sets: keeping an object per set and bucket would cost far more than the
samples). Generated runs take the figures from their v2 series of each aggregation, kept
per series once made; their quantiles interpolate between min and max.

A range query merges buckets into epoch-aligned windows of `step` seconds and series
into one per combination of the `by` labels; an aggregate query is one window over
[start, end). Each window folds its buckets in as they are read (`Window`; samples are
kept only for a quantile), so a query costs time linear in the buckets it reads and
memory in the windows it answers, however many label sets the run has; `last` is the
latest bucket's (series order on ties).
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import chain
from typing import Protocol, runtime_checkable

from harvester.backends.v5_query import label_name
from harvester.simulator.k6thresholds import quantile
from harvester.simulator.model import JsonObject, RunData
from harvester.simulator.v5_parse import Expression, Invalid, Matcher

BUILTIN = frozenset(
    "vus vus_max iterations iteration_duration dropped_iterations data_sent data_received "
    "checks group_duration http_reqs http_req_failed http_req_duration http_req_blocked "
    "http_req_connecting http_req_tls_handshaking http_req_sending http_req_waiting "
    "http_req_receiving".split()
)


@runtime_checkable
class HasLabelSets(Protocol):
    """A run that keeps its samples per full label set (a recorded k6 run)."""

    def v5_series(self) -> Sequence[tuple[str, str, Sequence[tuple[str, str]]]]:
        """(metric name, type, tags) of each series; `v5_buckets(i)` is the i-th's."""

    def v5_buckets(self, index: int) -> list[tuple[float, Sequence[float]]]:
        """(bucket start in epoch seconds, the bucket's samples), in time order."""


@dataclass(slots=True)
class Bucket:
    """What one time window of one series holds."""

    count: int
    total: float
    low: float
    high: float
    last: float
    nonzero: int
    sumsq: float
    #: The samples, as the sequences they came in (not copied); None: not kept.
    parts: tuple[Sequence[float], ...] | None = None

    @classmethod
    def of(cls, values: Sequence[float]) -> Bucket:
        return cls(
            len(values),
            math.fsum(values),
            min(values),
            max(values),
            values[-1],
            sum(1 for v in values if v),
            math.fsum(v * v for v in values),
            (values,),
        )

    def quantile(self, q: float) -> float:
        if self.parts is not None:
            return quantile(sorted(chain.from_iterable(self.parts)), q)
        return self.low + q * (self.high - self.low)

    def stddev(self) -> float:
        mean = self.total / self.count
        return math.sqrt(max(0.0, self.sumsq / self.count - mean * mean))


class Window:
    """One answer window of one group, folded bucket by bucket."""

    __slots__ = ("count", "total", "low", "high", "last", "latest", "nonzero", "sumsq", "parts")

    def __init__(self, keep_samples: bool) -> None:
        self.count = self.nonzero = 0
        self.total = self.sumsq = self.last = 0.0
        self.low, self.high, self.latest = math.inf, -math.inf, -math.inf
        self.parts: list[Sequence[float]] | None = [] if keep_samples else None

    def add(self, stamp: float, b: Bucket) -> None:
        self.count += b.count
        self.nonzero += b.nonzero
        self.total += b.total
        self.sumsq += b.sumsq
        self.low, self.high = min(self.low, b.low), max(self.high, b.high)
        if stamp >= self.latest:
            self.latest, self.last = stamp, b.last
        if self.parts is not None:
            if b.parts is None:
                self.parts = None  # a bucket without samples: the estimate for all
            else:
                self.parts.extend(b.parts)

    def bucket(self) -> Bucket:
        parts = None if self.parts is None else tuple(self.parts)
        return Bucket(self.count, self.total, self.low, self.high, self.last, self.nonzero,
                      self.sumsq, parts)  # fmt: skip


Reducer = Callable[[Bucket], float]
_PLAIN: dict[str, dict[str, Reducer]] = {
    "counter": {"increase": lambda b: b.total},
    "gauge": {
        "last": lambda b: b.last,
        "min": lambda b: b.low,
        "max": lambda b: b.high,
        "avg": lambda b: b.total / b.count,
    },
    "rate": {
        "ratio": lambda b: b.nonzero / b.count,
        "increase_total": lambda b: float(b.count),
        "increase_nz": lambda b: float(b.nonzero),
        "increase_z": lambda b: float(b.count - b.nonzero),
    },
    "trend": {
        "histogram_avg": lambda b: b.total / b.count,
        "histogram_min": lambda b: b.low,
        "histogram_max": lambda b: b.high,
        "histogram_stddev": Bucket.stddev,
        "histogram_count_increase": lambda b: float(b.count),
    },
}
#: Derived methods: (the plain method they derive from, how).
_DERIVED: dict[str, dict[str, tuple[str, str]]] = {
    "counter": {"rate": ("increase", "per_second"), "value": ("increase", "running")},
    "rate": {
        f"{kind}_{part}": (f"increase_{part}", how)
        for part in ("total", "nz", "z")
        for kind, how in (("rate", "per_second"), ("value", "running"))
    },
    "trend": {"histogram_count_value": ("histogram_count_increase", "running")},
}
_QUANTILE = re.compile(r"histogram_quantile\((0?\.\d+|0)\)")


@dataclass(frozen=True)
class Method:
    reduce: Reducer
    how: str = "plain"
    samples: bool = False  # a quantile: its windows keep the samples


def method_for(method: str, metric_type: str) -> Method:
    """The reducer of a v5 method for a metric type; `Invalid` (400) when it does not fit."""
    if metric_type == "counter" and method == "cumrate":
        return Method(_PLAIN["counter"]["increase"], "cumrate")
    if plain := _PLAIN.get(metric_type, {}).get(method):
        return Method(plain)
    if derived := _DERIVED.get(metric_type, {}).get(method):
        return Method(_PLAIN[metric_type][derived[0]], derived[1])
    match = _QUANTILE.fullmatch(method)
    if metric_type == "trend" and match and 0 < float(match.group(1)) < 1:
        q = float(match.group(1))
        return Method(lambda b: b.quantile(q), samples=True)
    raise Invalid(f"Metric query expression not found: {method} for metric type {metric_type}")


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _from_v2(data: RunData, metric_id: str) -> list[tuple[float, Bucket]]:
    """Buckets of a run that keeps no samples, from its v2 series of each aggregation."""
    series = {m: data.serie(metric_id, m) for m in ("count", "sum", "min", "max", "last")}
    if any(s is None for s in series.values()):
        return []
    mean, spread = data.serie(metric_id, "mean"), data.serie(metric_id, "stddev")
    columns = [
        [p["value"] for p in s["values"]] for s in (*series.values(), mean, spread) if s is not None
    ]
    stamps = [_epoch(p["timestamp"]) for p in (series["count"] or {"values": []})["values"]]
    out = []
    for stamp, (n, total, low, high, last, avg, sd) in zip(
        stamps, zip(*columns, strict=True), strict=True
    ):
        count = max(1, round(n))
        nonzero = round(avg * count) if 0 <= avg <= 1 else count
        out.append(
            (stamp, Bucket(count, total, low, high, last, nonzero, count * (sd**2 + avg**2)))
        )
    return out


@dataclass(frozen=True, slots=True)
class Series:
    """One v5 series: a k6 tag set of a recorded run (`source` its index), or a v2
    metric of a generated one (`source` its id)."""

    source: str | int
    name: str
    type: str
    labels: dict[str, str]


def _series_of(data: RunData) -> list[Series]:
    if isinstance(data, HasLabelSets):
        return [
            Series(at, name, kind, {label_name(k): v for k, v in tags})
            for at, (name, kind, tags) in enumerate(data.v5_series())
        ]
    return [
        Series(m["id"], m["name"], m["type"], {label_name(k): str(v) for k, v in tags.items()})
        for m in data.metrics()
        if isinstance(m.get("type"), str) and isinstance(tags := m.get("tags") or {}, dict)
    ]


class V5View:
    """The v5 answers of one run, computed on demand; buckets are kept per series."""

    def __init__(self, data: RunData) -> None:
        self.data = data
        self.series = _series_of(data)
        self._buckets: dict[str | int, list[tuple[float, Bucket]]] = {}

    def metrics(self) -> list[JsonObject]:
        seen: dict[str, JsonObject] = {}
        for s in self.series:
            seen.setdefault(
                s.name,
                {
                    "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.data.run_id}/{s.name}")),
                    "name": s.name,
                    "origin": "builtin" if s.name in BUILTIN else "user",
                    "test_run_id": self.data.run_id,
                    "type": s.type,
                },
            )
        return list(seen.values())

    def label_names(self) -> list[str]:
        names = {"__name__", "test_run_id"}
        for s in self.series:
            names.update(s.labels)
        return sorted(names)

    def label_sets(self, name: str, matchers: Sequence[Matcher]) -> list[dict[str, str]]:
        return [self._full_labels(s) for s in self._matching(name, matchers)]

    def _full_labels(self, s: Series) -> dict[str, str]:
        return {"__name__": s.name, **s.labels, "test_run_id": str(self.data.run_id)}

    def _matching(self, name: str, matchers: Sequence[Matcher]) -> list[Series]:
        return [
            s
            for s in self.series
            if s.name == name and all(m.matches(self._full_labels(s)) for m in matchers)
        ]

    def buckets(self, s: Series) -> list[tuple[float, Bucket]]:
        if isinstance(s.source, int) and isinstance(self.data, HasLabelSets):
            raw = self.data.v5_buckets(s.source)
            return [(start, Bucket.of(values)) for start, values in raw if values]
        found = self._buckets.get(s.source)
        if found is None:
            found = self._buckets[s.source] = _from_v2(self.data, str(s.source))
        return found

    def query(
        self,
        expr: Expression,
        name: str,
        matchers: Sequence[Matcher],
        *,
        step: float | None,
        window: tuple[float | None, float | None],
        span: tuple[float, float],
    ) -> list[JsonObject]:
        """Result entries `{"metric": labels, "values": [[t, v], ...]}` over the buckets
        in `window` (None: unbounded); one window when `step` is None (an aggregate,
        stamped with the end of the window or of the run's `span`)."""
        chosen = self._matching(name, matchers)
        if not chosen:
            return []  # an unknown metric: checked before the method fits its type
        method = method_for(expr.method, chosen[0].type)
        start = -math.inf if window[0] is None else window[0]
        end = math.inf if window[1] is None else window[1]
        stamp_end = span[1] if window[1] is None else window[1]
        groups: dict[tuple[tuple[str, str], ...], dict[float, Window]] = {}
        for s in chosen:
            key = tuple((label, s.labels[label]) for label in expr.by or () if label in s.labels)
            slots = groups.setdefault(key, {})
            for stamp, bucket in self.buckets(s):
                if start <= stamp < end:
                    at = stamp_end if step is None else math.floor(stamp / step) * step
                    if (found := slots.get(at)) is None:
                        found = slots[at] = Window(method.samples)
                    found.add(stamp, bucket)
        run_start = span[0] if window[0] is None else start
        width = step or max(stamp_end - run_start, 1e-9)
        result = []
        for key, slots in sorted(groups.items()):
            if slots:
                merged = {at: found.bucket() for at, found in slots.items()}
                points = _points(method, merged, width, run_start + (width if step is None else 0))
                result.append({"metric": self._result_labels(name, key), "values": points})
        if expr.wrap is not None:
            result = _wrapped(expr.wrap, expr.outer_by or (), result, name, self.data.run_id)
        return result

    def _result_labels(self, name: str, key: Iterable[tuple[str, str]]) -> dict[str, str]:
        return {"__name__": name, **dict(key), "test_run_id": str(self.data.run_id)}


def _stamp(at: float) -> float | int:
    return int(at) if float(at).is_integer() else at


def _points(
    method: Method, slots: dict[float, Bucket], width: float, run_start: float
) -> list[list[float]]:
    points: list[list[float]] = []
    running = 0.0
    for at in sorted(slots):
        value = method.reduce(slots[at])
        running += value
        if method.how == "per_second":
            value /= width
        elif method.how == "running":
            value = running
        elif method.how == "cumrate":
            value = running / max(at + width - run_start, 1e-9)  # seconds since the start
        points.append([_stamp(at), value])
    return points


_WRAPS: dict[str, Callable[[list[float]], float]] = {
    "sum": math.fsum,
    "avg": lambda v: math.fsum(v) / len(v),
    "min": min,
    "max": max,
}


def _wrapped(
    wrap: str, by: Sequence[str], inner: list[JsonObject], name: str, run_id: int
) -> list[JsonObject]:
    """`sum|avg|min|max(inner) by (by)`: the inner series combined at each timestamp."""
    groups: dict[tuple[tuple[str, str], ...], dict[float, list[float]]] = {}
    for entry in inner:
        key = tuple((label, entry["metric"][label]) for label in by if label in entry["metric"])
        at_times = groups.setdefault(key, {})
        for at, value in entry["values"]:
            at_times.setdefault(at, []).append(value)
    return [
        {
            "metric": {"__name__": name, **dict(key), "test_run_id": str(run_id)},
            "values": [[at, _WRAPS[wrap](values)] for at, values in sorted(at_times.items())],
        }
        for key, at_times in sorted(groups.items())
    ]
