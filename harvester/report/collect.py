"""The series pass: every serie folded, as it streams past, into what the page needs.

How series become figures (the API aggregates samples per time interval):
- a Counter's serie under `rate`/`rps` is per second; under any other method (sum,
  count) it is per interval, divided by the interval for a rate chart and added up for a
  total;
- http_req_duration is split by URL: each archived aggregation is one line, the mean of
  the URLs for `mean`/`avg`, the lowest for `min`, the highest (the slowest URL) otherwise;
- Rates (http_req_failed, checks) are passes (`sum`) over samples (`count`, or passes and
  `fails`) when those are archived, else the mean of their series' shares.

Memory: one `Line` per (metric, method) holds a few arrays of doubles a time grid; the per-interval
means and counts of http_req_duration per URL (for the exact mean, `exact_mean`) are kept
as arrays of doubles, 16 bytes a point, for the duration and request metrics only.
"""

from __future__ import annotations

import math
from array import array
from collections import defaultdict
from operator import mul

from .lines import Line, exact_terms
from .series import Serie, Tags

PER_SECOND = ("rate", "rps")
#: Preferred series method of each chart's metric, best first (any other is used last).
PREFERENCE = {
    "counter": ("sum", "count", "rate", "rps", "mean", "avg"),
    "rate": ("mean", "avg", "rate"),
    "gauge": ("max", "mean", "avg", "last", "value"),
}
NOT_DURATIONS = ("sum", "count", "rate", "rps")
#: The per-interval request counts of a URL, best first.
REQUEST_COUNTS = ("sum", "count")
DURATION = "http_req_duration"

Points = tuple["array[float]", "array[float]"]


def fold_of(name: str, method: str) -> str | None:
    """How the series of one metric and method fold into one line (None: not drawn)."""
    if name == DURATION:
        if method in NOT_DURATIONS:
            return None  # requests and total time, not a duration
        if method in ("mean", "avg", "default"):
            return "mean"
        return "min" if method == "min" else "max"
    if name in ("http_reqs", "data_sent", "data_received", "iterations"):
        return "sum"
    if name in ("http_req_failed", "checks"):
        return "sum" if method in ("sum", "count", "fails") else "mean"
    if name in ("vus", "vus_max"):
        return "max"
    return None


def wanted(name: str, method: str) -> bool:
    """Whether a serie of this metric and method is used (`Collector.add`): the others'
    points need not be read."""
    return fold_of(name, method) is not None or (name == DURATION and method == "count")


class Collector:
    """The per-metric state of the series pass."""

    def __init__(self) -> None:
        # (metric name, method) -> line folded over all the metric's series.
        self.lines: dict[tuple[str, str], Line] = {}
        # per URL (its tags): duration method -> [sum of values, number of points]
        self.urls: dict[Tags, dict[str, list[float]]] = defaultdict(dict)
        # per URL: request-count method -> requests over the run
        self.url_requests: dict[Tags, dict[str, float]] = defaultdict(dict)
        # per check (name, group): method -> [sum of values, points]
        self.checks: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(dict)
        # per URL: the per-interval mean duration, and counts (duration's, then requests')
        self.means: dict[Tags, Points] = {}
        self.counts: dict[tuple[str, Tags], Points] = {}
        self.seen: set[tuple[str, Tags, str]] = set()

    def add(self, serie: Serie) -> None:
        name, method, tags = serie.name, serie.method, serie.tags
        if (name, tags, method) in self.seen:
            return  # the default aggregation asked again under its name: once is enough
        self.seen.add((name, tags, method))
        points = serie.times, serie.values
        if name == DURATION and method == "count":
            self.counts[(DURATION, tags)] = points
            return
        how = fold_of(name, method)
        if how is None:
            return
        self.lines.setdefault((name, method), Line(how)).add(*points)
        total = math.fsum(serie.values)
        if name == DURATION and serie.values:
            self.urls[tags][method] = [total, len(serie.values)]
            if method in ("mean", "avg"):
                self.means.setdefault(tags, points)
        elif name == "http_reqs" and method in REQUEST_COUNTS:
            self.url_requests[tags][method] = total
            self.counts.setdefault(("http_reqs", tags), points)
        elif name == "checks" and serie.values:
            labels = dict(tags)
            key = (labels.get("check", ""), labels.get("group", ""))
            self.checks[key][method] = [total, len(serie.values)]

    def requests(self, tags: Tags) -> float | None:
        """A URL's requests over the run (from http_reqs with the same tags)."""
        counted = self.url_requests.get(tags) or {}
        return next((counted[m] for m in REQUEST_COUNTS if m in counted), None)

    def exact_mean(self) -> float | None:
        """http_req_duration's mean over the run: every URL's per-interval mean weighted by
        its requests in that interval (the duration's own count, else http_reqs with the
        same tags), None unless every interval of every URL has its count."""
        weighted: list[float] = []  # exact sums, whatever the order of the URLs
        requests: list[float] = []
        for tags, (times, means) in self.means.items():
            counts = self.counts.get((DURATION, tags)) or self.counts.get(("http_reqs", tags))
            if counts is None:
                return None
            if counts[0] == times and len(set(times)) == len(times):  # no lookup a point
                per_interval = counts[1]
            else:
                by_time = dict(zip(*counts, strict=True))
                if not all(map(by_time.__contains__, times)):
                    return None
                per_interval = array("d", map(by_time.__getitem__, times))
            # each URL's sums kept as the few floats that hold them exactly
            weighted += exact_terms(map(mul, means, per_interval))
            requests += exact_terms(per_interval)
        total = math.fsum(requests)
        return math.fsum(weighted) / total if total else None


Lines = dict[tuple[str, str], Line]


def pick(lines: Lines, name: str, kind: str) -> tuple[str, Line] | None:
    """The metric's line under its preferred method."""
    methods = [method for (metric, method) in lines if metric == name]
    if not methods:
        return None
    order = PREFERENCE[kind]
    method = min(methods, key=lambda m: order.index(m) if m in order else len(order))
    return method, lines[(name, method)]


def share_line(lines: Lines, name: str) -> dict[float, float] | None:
    """A Rate's share per interval: passes over samples when the passes (`sum`) and the
    samples (`count`, or passes and `fails`) are archived (exact), else the mean of its
    series' shares (each tag set counts alike)."""
    passes, samples, fails = (lines.get((name, m)) for m in ("sum", "count", "fails"))
    if passes and (samples or fails):
        passed = passes.folded()
        if samples:
            counts = samples.folded()
        else:
            failed = fails.folded() if fails else {}
            counts = {t: v + failed.get(t, 0.0) for t, v in passed.items()}
        return {t: v / counts[t] for t, v in passed.items() if counts.get(t)}
    picked = pick(lines, name, "rate")
    return picked[1].folded() if picked else None


def counter(lines: Lines, name: str, step: float) -> tuple[dict[float, float], float, bool] | None:
    """(per-second values, total, whether the total is exact) of a Counter's line: a
    total from per-second values is their sum times the interval, an estimate."""
    picked = pick(lines, name, "counter")
    if picked is None:
        return None
    method, line = picked
    values = line.folded()
    if method in PER_SECOND:
        return values, math.fsum(values.values()) * step, False
    return {t: v / step for t, v in values.items()}, math.fsum(values.values()), True
