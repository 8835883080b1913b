"""One run's report data from its archived records: header, charts over time, tables.

Two streaming passes over the run's file: the small records first (run, metrics,
thresholds, overview, summary), then the series, each folded into the charts' lines and
per-URL / per-check figures as it passes (see `lines.Line`).

How series become figures (the API aggregates samples per time interval):
- a Counter's serie under `rate`/`rps` is per second; under any other method (sum,
  count, the default) it is per interval, divided by the interval for a rate chart and
  added up for a total;
- http_req_duration is split by URL: each archived aggregation is one line, the mean of
  the URLs for `mean`/`avg`, the lowest for `min`, the highest (the slowest URL) otherwise;
- Rates (http_req_failed, checks) are the mean of their series' shares.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from ..archive import ArchivedRun, Record
from .facts import check_rows, header_of, threshold_rows
from .lines import Line, downsample, finite, interval, table

PER_SECOND = ("rate", "rps")
#: Preferred series method of each chart's metric, best first (any other is used last).
PREFERENCE = {
    "counter": ("sum", "count", "rate", "rps", "mean", "avg"),
    "rate": ("mean", "avg", "rate"),
    "gauge": ("max", "mean", "avg", "last", "value"),
}
QUANTILE_ORDER = ("p95", "0.95", "p(95)", "p99", "0.99", "p(99)", "p90", "0.9", "max")
TOP_URLS = 15
NOT_DURATIONS = ("sum", "count", "rate", "rps")


@dataclass
class Chart:
    """One chart: a title, a unit, one shared x axis (epoch seconds) and labelled lines."""

    id: str
    title: str
    unit: str
    labels: list[str] = field(default_factory=list)
    lines: list[dict[float, float]] = field(default_factory=list)

    def add(self, label: str, line: dict[float, float], scale: float = 1.0) -> None:
        if line:
            self.labels.append(label)
            self.lines.append({t: v * scale for t, v in line.items()})

    def as_json(self) -> dict[str, Any]:
        xs, ys = downsample(*table(self.lines))
        return {
            "id": self.id,
            "title": self.title,
            "unit": self.unit,
            "x": xs,
            "series": [
                {"label": label, "values": [finite(v) for v in values]}
                for label, values in zip(self.labels, ys, strict=True)
            ],
        }


@dataclass
class Totals:
    """Per-interval counts folded over the run (None when nothing was archived)."""

    sums: dict[str, float] = field(default_factory=dict)

    def get(self, name: str) -> float | None:
        return self.sums.get(name)


class _Collector:
    """The per-metric state of the series pass."""

    def __init__(self, metrics: dict[str, Record]) -> None:
        self.metrics = metrics
        # (metric name, method) -> line folded over all the metric's series.
        self.lines: dict[tuple[str, str], Line] = {}
        # per URL metric id: method -> (sum of values, number of points)
        self.urls: dict[str, dict[str, list[float]]] = defaultdict(dict)
        # requests per URL (tags of http_reqs), per interval, for the slowest-URLs table
        self.url_requests: dict[tuple[tuple[str, str], ...], float] = defaultdict(float)
        # per check (name, group): method -> [sum of values, points]
        self.checks: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(dict)
        self.seen: set[tuple[str, str]] = set()

    def add(self, serie: dict[str, Any]) -> None:
        metric = self.metrics.get(serie.get("metric_id", ""))
        method = str(serie.get("method") or "default")
        if metric is None or (serie["metric_id"], method) in self.seen:
            return  # the default aggregation asked again under its name: once is enough
        self.seen.add((serie["metric_id"], method))
        name, values = metric.get("name", ""), serie.get("values") or []
        how = _fold(name, method)
        if how is None:
            return
        self.lines.setdefault((name, method), Line(how)).add(values)
        numbers = [p["value"] for p in values if isinstance(p.get("value"), int | float)]
        if name == "http_req_duration" and numbers and method not in NOT_DURATIONS:
            self.urls[metric["id"]][method] = [sum(numbers), len(numbers)]
        elif name == "http_reqs" and method not in PER_SECOND:
            self.url_requests[_tags_key(metric)] += sum(numbers)
        elif name == "checks" and numbers:
            tags = metric.get("tags") or {}
            key = (str(tags.get("check", "")), str(tags.get("group", "")))
            self.checks[key][method] = [sum(numbers), len(numbers)]


def _fold(name: str, method: str) -> str | None:
    if name == "http_req_duration":
        if method in NOT_DURATIONS:
            return None  # requests and total time, not a duration
        if method in ("mean", "avg", "default"):
            return "mean"
        return "min" if method == "min" else "max"
    if name in ("http_reqs", "data_sent", "data_received", "iterations"):
        return "sum"
    if name in ("http_req_failed", "checks"):
        return "sum" if method in ("sum", "count") else "mean"
    if name in ("vus", "vus_max"):
        return "max"
    return None


def _tags_key(metric: Record) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in (metric.get("tags") or {}).items()))


def _pick(lines: dict[tuple[str, str], Line], name: str, kind: str) -> tuple[str, Line] | None:
    """The metric's line under its preferred method."""
    methods = [method for (metric, method) in lines if metric == name]
    if not methods:
        return None
    order = PREFERENCE[kind]
    method = min(methods, key=lambda m: order.index(m) if m in order else len(order))
    return method, lines[(name, method)]


def share_line(lines: dict[tuple[str, str], Line], name: str) -> dict[float, float] | None:
    """A Rate's share per interval: passes over samples when the sum and count series are
    archived (exact), else the mean of its series' shares (each tag set counts alike)."""
    passes, samples = lines.get((name, "sum")), lines.get((name, "count"))
    if passes and samples:
        counts = samples.folded()
        return {t: v / counts[t] for t, v in passes.folded().items() if counts.get(t)}
    picked = _pick(lines, name, "rate")
    return picked[1].folded() if picked else None


def _counter(
    lines: dict[tuple[str, str], Line], name: str, step: float
) -> tuple[dict[float, float], float] | None:
    """(per-second values, total) of a Counter's line."""
    picked = _pick(lines, name, "counter")
    if picked is None:
        return None
    method, line = picked
    values = line.folded()
    if method in PER_SECOND:
        return values, sum(values.values()) * step
    return {t: v / step for t, v in values.items()}, sum(values.values())


@dataclass
class RunReport:
    """Everything the page shows of one run."""

    run_id: int
    header: dict[str, Any]
    unknown: list[str]
    charts: list[Chart]
    thresholds: list[dict[str, Any]]
    checks: list[dict[str, Any]]
    urls: dict[str, Any]
    figures: dict[str, float | None]

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "header": self.header,
            "unknown": self.unknown,
            "charts": [chart.as_json() for chart in self.charts if chart.lines],
            "empty_charts": [chart.title for chart in self.charts if not chart.lines],
            "thresholds": self.thresholds,
            "checks": self.checks,
            "urls": self.urls,
        }


def read_run(run: ArchivedRun) -> RunReport:
    small: dict[str, list[Record]] = defaultdict(list)
    for record in run.records(
        "run", "metric", "threshold_metric", "threshold", "overview", "summary"
    ):
        small[record["type"]].append(record["data"])
    metrics = {m["id"]: m for m in small["metric"] if isinstance(m, dict) and "id" in m}
    collector = _Collector(metrics)
    for record in run.records("series"):
        collector.add(record["data"])
    return _build(run.run_id, small, collector)


def _build(run_id: int, small: dict[str, list[Record]], c: _Collector) -> RunReport:
    step = interval(t for line in c.lines.values() for t in line.values)
    charts, totals = _charts(c.lines, step)
    thresholds = threshold_rows(small["threshold"], small["threshold_metric"])
    header, unknown = header_of(run_id, small, totals, thresholds)
    checks = check_rows(c.checks)
    figures = _figures(c, totals, small)
    return RunReport(run_id, header, unknown, charts, thresholds, checks, url_rows(c), figures)


def _charts(
    lines: dict[tuple[str, str], Line], step: float
) -> tuple[list[Chart], dict[str, float | None]]:
    vus = Chart("vus", "Virtual users", "VUs")
    for name in ("vus", "vus_max"):
        if picked := _pick(lines, name, "gauge"):
            vus.add(name, picked[1].folded())
    rate = Chart("rps", "Request rate", "requests/s")
    totals: dict[str, float | None] = {}
    for name in ("http_reqs", "iterations"):
        counted = _counter(lines, name, step)
        totals[name] = counted[1] if counted else None
        if counted and name == "http_reqs":
            rate.add("http_reqs", counted[0])
    duration = Chart("duration", "http_req_duration", "ms")
    for (name, method), line in sorted(lines.items()):
        if name == "http_req_duration":
            duration.add(_duration_label(method, line.how), line.folded())
    failed = Chart("failed", "Failed requests", "%")
    if shares := share_line(lines, "http_req_failed"):
        failed.add("http_req_failed", shares, 100.0)
    checks = Chart("checks", "Checks passed", "%")
    if shares := share_line(lines, "checks"):
        checks.add("checks", shares, 100.0)
    data = Chart("data", "Data sent and received", "bytes/s")
    for name in ("data_sent", "data_received"):
        if counted := _counter(lines, name, step):
            data.add(name, counted[0])
    return [vus, rate, duration, failed, checks, data], totals


def _duration_label(method: str, how: str) -> str:
    if how == "mean":
        return f"{method} (mean of URLs)"
    return f"{method} (lowest URL)" if how == "min" else f"{method} (slowest URL)"


def url_rows(c: _Collector) -> dict[str, Any]:
    """The slowest URLs by the archived aggregation (a p95 when there is one, else mean)."""
    methods = sorted({m for figures in c.urls.values() for m in figures})
    rank = next((m for m in QUANTILE_ORDER if m in methods), None)
    rank = rank or next((m for m in ("mean", "avg") if m in methods), methods[0] if methods else "")
    rows = []
    for metric_id, figures in c.urls.items():
        tags = c.metrics[metric_id].get("tags") or {}
        rows.append(
            {
                "url": tags.get("url") or tags.get("name") or "(no url)",
                "method": tags.get("method", ""),
                "status": tags.get("status", ""),
                "requests": c.url_requests.get(_tags_key(c.metrics[metric_id])),
                "values": {m: s / n for m, (s, n) in figures.items()},
            }
        )
    rows.sort(key=lambda row: -(row["values"].get(rank) or 0.0))
    return {"methods": methods, "rank": rank, "rows": rows[:TOP_URLS], "of": len(rows)}


def _figures(
    c: _Collector, totals: dict[str, float | None], small: dict[str, list[Record]]
) -> dict[str, float | None]:
    """One number per trend: mean and p95 duration (URLs weighted by their requests, each
    the mean over time of its serie), error rate, requests and checks pass rate."""
    weights = {
        metric_id: c.url_requests.get(_tags_key(c.metrics[metric_id])) or 1.0
        for metric_id in c.urls
    }

    def weighted(methods: tuple[str, ...]) -> float | None:
        parts = []
        for metric_id, figures in c.urls.items():
            method = next((m for m in methods if m in figures), None)
            if method is not None:
                total, points = figures[method]
                parts.append((total / points, weights[metric_id]))
        weight = sum(w for _, w in parts)
        return sum(v * w for v, w in parts) / weight if weight else None

    def share(name: str) -> float | None:
        passes, samples = c.lines.get((name, "sum")), c.lines.get((name, "count"))
        if passes and samples:
            total = sum(samples.folded().values())
            return sum(passes.folded().values()) / total if total else None
        values = list((share_line(c.lines, name) or {}).values())
        return sum(values) / len(values) if values else None

    requests = totals.get("http_reqs")
    overview = small["overview"][0] if small["overview"] else {}
    checks = share("checks")
    if checks is None and overview.get("checks_hits_total"):
        checks = overview["checks_hits_successes"] / overview["checks_hits_total"]
    return {
        "p95": weighted(("p95", "0.95", "p(95)")),
        "mean": weighted(("mean", "avg")),
        "error_rate": share("http_req_failed"),
        "requests": requests,
        "checks": checks,
    }
