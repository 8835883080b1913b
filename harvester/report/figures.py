"""One figure per run and trend (mean and p95 duration, error rate, requests, checks
passed), exact where the archive allows, else an estimate that says so.

- mean: every URL's per-interval mean weighted by its requests in that interval (v2: the
  mean series and the count series or http_reqs; v6: histogram_avg and
  histogram_count_increase), else k6 Cloud's overview (`http_req_duration_avg`);
- p95: the measured value of a `p(95)` threshold on http_req_duration (v2
  `calculated_value`, v6 `value`); the API has no other run-level percentile;
- error rate and checks: passes over samples (sum and count, or passes and fails
  series), or for checks the v6 `check` records or the overview's hits.

Otherwise the figure is estimated from per-interval series (the mean over time of each
URL's aggregation, URLs weighted by their requests) and `estimated` says how, for the page.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from ..archive import Record
from .collect import Collector, share_line

P95 = re.compile(r"\s*p\(95\)\s*[<>=!]")
SERIES_ESTIMATE = "estimated from per-interval series: the mean over time of each URL's {}"


@dataclass
class Figures:
    values: dict[str, float | None] = field(default_factory=dict)
    #: trend key -> how its figure was estimated (absent: exact, or unknown).
    estimated: dict[str, str] = field(default_factory=dict)

    def set(self, key: str, value: float | None, estimate: str | None = None) -> None:
        self.values[key] = value
        if value is not None and estimate:
            self.estimated[key] = estimate


def run_figures(
    c: Collector,
    requests: tuple[float | None, bool],
    thresholds: list[dict[str, Any]],
    small: dict[str, list[Record]],
) -> Figures:
    """`requests`: (total, exact); `thresholds`: the rows of `facts.threshold_rows`."""
    out = Figures()
    overview = small["overview"][0] if small["overview"] else {}
    mean = c.exact_mean()
    if mean is None and isinstance(overview.get("http_req_duration_avg"), int | float):
        mean = float(overview["http_req_duration_avg"])
    if mean is not None:
        out.set("mean", mean)
    else:
        out.set("mean", _weighted(c, ("mean", "avg")), SERIES_ESTIMATE.format("mean"))
    p95 = next((row["value"] for row in thresholds if row["metric"] == "http_req_duration"
                and P95.match(row["expression"]) and row["value"] is not None), None)  # fmt: skip
    if p95 is not None:
        out.set("p95", float(p95))
    else:
        out.set("p95", _weighted(c, ("p95", "0.95", "p(95)")), SERIES_ESTIMATE.format("p95"))
    out.set("error_rate", *_share(c, "http_req_failed"))
    out.set("requests", requests[0], None if requests[1] else "estimated from the request rate")
    checks, how = _share(c, "checks")
    if (checks is None or how is not None) and (exact := _checks_from_records(small)) is not None:
        checks, how = exact, None
    out.set("checks", checks, how)
    return out


def _weighted(c: Collector, methods: tuple[str, ...]) -> float | None:
    """The URLs' mean over time of an aggregation, weighted by their requests."""
    parts = []
    for tags, figures in c.urls.items():
        method = next((m for m in methods if m in figures), None)
        if method is not None:
            total, points = figures[method]
            parts.append((total / points, c.requests(tags) or 1.0))
    weight = math.fsum(w for _, w in parts)
    return math.fsum(v * w for v, w in parts) / weight if weight else None


def _share(c: Collector, name: str) -> tuple[float | None, str | None]:
    """(a Rate's share over the run, how it was estimated or None when exact)."""
    passes = c.lines.get((name, "sum"))
    samples = c.lines.get((name, "count"))
    fails = c.lines.get((name, "fails"))
    if passes and (samples or fails):
        total = math.fsum(samples.folded().values()) if samples else None
        passed = math.fsum(passes.folded().values())
        if total is None and fails:
            total = passed + math.fsum(fails.folded().values())
        return (passed / total if total else None), None
    values = list((share_line(c.lines, name) or {}).values())
    if not values:
        return None, None
    return math.fsum(values) / len(values), "estimated: the mean of its per-interval shares"


def _checks_from_records(small: dict[str, list[Record]]) -> float | None:
    """Checks passed from v6 `check` records, else from the overview's hits."""
    rows = [r for r in small["check"] if isinstance(r, dict)]
    passes = math.fsum(float(r.get("passes") or 0) for r in rows)
    total = passes + math.fsum(float(r.get("fails") or 0) for r in rows)
    if total:
        return passes / total
    overview = small["overview"][0] if small["overview"] else {}
    if overview.get("checks_hits_total"):
        return float(overview["checks_hits_successes"]) / float(overview["checks_hits_total"])
    return None
