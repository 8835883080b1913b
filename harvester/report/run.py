"""One run's report data from its archived records: header, charts over time, tables.

Two streaming passes over the run's files: the small records first (run, metrics,
thresholds, checks, overview, summary), then the series (`source.series_of`, whatever
the API and format), each folded into the charts' lines and per-URL / per-check figures
as it passes (`collect.Collector`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from ..archive import ArchivedRun, ArchiveError, Record
from .collect import Collector, Lines, counter, pick, share_line, wanted
from .facts import check_rows, header_of, threshold_rows
from .figures import Figures, run_figures
from .lines import downsample, finite, interval, table
from .source import series_of

QUANTILE_ORDER = ("p95", "0.95", "p(95)", "p99", "0.99", "p(99)", "p90", "0.9", "max")
TOP_URLS = 15
SMALL = ("run", "metric", "threshold_metric", "threshold", "check", "overview", "summary")


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
class RunReport:
    """Everything the page shows of one run."""

    run_id: int
    header: dict[str, Any]
    unknown: list[str]
    charts: list[Chart]
    thresholds: list[dict[str, Any]]
    checks: list[dict[str, Any]]
    urls: dict[str, Any]
    figures: Figures

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
    for record in run.records(*SMALL):
        small[record["type"]].append(record["data"])
    if not small["summary"]:  # the writer ends every run file with it
        raise ArchiveError(
            f"{run.path} has no summary record: the file was cut short or is not the "
            f"harvester's; check the archive with `harvester verify`, or harvest run "
            f"{run.run_id} again"
        )
    metrics = {m["id"]: m for m in small["metric"] if isinstance(m, dict) and "id" in m}
    collector = Collector()
    for serie in series_of(run, metrics, wanted):
        collector.add(serie)
    return _build(run.run_id, small, collector)


def _build(run_id: int, small: dict[str, list[Record]], c: Collector) -> RunReport:
    step = interval(t for line in c.lines.values() for t in line.moments)
    charts, totals = _charts(c.lines, step)
    thresholds = threshold_rows(small["threshold"], small["threshold_metric"])
    checks = check_rows(c.checks, small["check"])
    figures = run_figures(c, totals["http_reqs"], thresholds, small)
    header, unknown = header_of(run_id, small, totals, thresholds)
    header["figures"] = figures.values
    header["estimated"] = figures.estimated
    return RunReport(run_id, header, unknown, charts, thresholds, checks, url_rows(c), figures)


Totals = dict[str, tuple[float | None, bool]]


def _charts(lines: Lines, step: float) -> tuple[list[Chart], Totals]:
    """The charts over time, and the totals of http_reqs and iterations (with whether
    each is exact)."""
    vus = Chart("vus", "Virtual users", "VUs")
    for name in ("vus", "vus_max"):
        if picked := pick(lines, name, "gauge"):
            vus.add(name, picked[1].folded())
    rate = Chart("rps", "Request rate", "requests/s")
    totals: Totals = {}
    for name in ("http_reqs", "iterations"):
        counted = counter(lines, name, step)
        totals[name] = (counted[1], counted[2]) if counted else (None, False)
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
        if counted := counter(lines, name, step):
            data.add(name, counted[0])
    return [vus, rate, duration, failed, checks, data], totals


def _duration_label(method: str, how: str) -> str:
    if how == "mean":
        return f"{method} (mean of URLs)"
    return f"{method} (lowest URL)" if how == "min" else f"{method} (slowest URL)"


def url_rows(c: Collector) -> dict[str, Any]:
    """The slowest URLs by the archived aggregation (a p95 when there is one, else mean)."""
    methods = sorted({m for figures in c.urls.values() for m in figures})
    rank = next((m for m in QUANTILE_ORDER if m in methods), None)
    rank = rank or next((m for m in ("mean", "avg") if m in methods), methods[0] if methods else "")
    ranked = []
    for tags, figures in c.urls.items():
        labels, values = dict(tags), {m: s / n for m, (s, n) in figures.items()}
        url = labels.get("url") or labels.get("name") or "(no url)"
        row = {"url": url, "method": labels.get("method", ""),
               "status": labels.get("status", ""), "requests": c.requests(tags),
               "values": values}  # fmt: skip
        ranked.append((-(values.get(rank) or 0.0), url, tags, row))
    rows = [row for *_, row in sorted(ranked, key=lambda item: item[:3])]
    return {"methods": methods, "rank": rank, "rows": rows[:TOP_URLS], "of": len(rows)}
