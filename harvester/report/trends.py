"""Many runs of a test: one figure per run and trend, and the runs that regressed.

A run regresses on a trend when it is worse than the median of the previous `baseline`
runs (fewer when fewer exist; the first run has none) by more than `margin` of that
median: higher for durations and the error rate, lower for requests and checks passed.
A median of 0 is exceeded by any value above 0.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from .lines import epoch

#: trend key, title, unit, scale for display, True when a higher value is worse.
TRENDS = (
    ("p95", "http_req_duration p95", "ms", 1.0, True),
    ("mean", "http_req_duration mean", "ms", 1.0, True),
    ("error_rate", "Failed requests", "%", 100.0, True),
    ("requests", "Requests", "requests", 1.0, False),
    ("checks", "Checks passed", "%", 100.0, False),
)


@dataclass(frozen=True)
class RunPoint:
    run_id: int
    created: str | None
    figures: dict[str, float | None]
    #: trend key -> how the figure was estimated (absent when exact).
    estimated: dict[str, str] = field(default_factory=dict)


def regressed(value: float, previous: list[float], margin: float, higher_is_worse: bool) -> bool:
    if not previous:
        return False
    median = statistics.median(previous)
    if higher_is_worse:
        return value > median * (1 + margin) if median else value > 0
    return value < median * (1 - margin)


def regressions(points: list[RunPoint], margin: float, baseline: int) -> list[dict[str, Any]]:
    """Every (run, trend) worse than the median of the runs before it, in run order."""
    found = []
    for key, title, unit, scale, worse_up in TRENDS:
        history: list[float] = []
        for point in points:
            value = point.figures.get(key)
            if value is None:
                continue
            previous = history[-baseline:]
            if regressed(value, previous, margin, worse_up):
                median = statistics.median(previous)
                found.append(
                    {
                        "run": point.run_id,
                        "created": point.created,
                        "trend": key,
                        "title": title,
                        "unit": unit,
                        "value": value * scale,
                        "median": median * scale,
                        "change": (value - median) / median if median else None,
                        "estimated": key in point.estimated,
                    }
                )
            history.append(value)
    return sorted(found, key=lambda row: (row["run"], row["trend"]))


def trend_charts(points: list[RunPoint], found: list[dict[str, Any]]) -> dict[str, Any]:
    """Charts across runs: x is the run date (or the run's place when a date is unknown)."""
    dated = all(point.created for point in points)
    xs = [epoch(p.created) if dated and p.created else float(i) for i, p in enumerate(points)]
    marked = {(row["run"], row["trend"]) for row in found}
    charts = []
    for key, title, unit, scale, _ in TRENDS:
        values = [_scaled(p.figures.get(key), scale) for p in points]
        if all(v is None for v in values):
            continue
        pairs = zip(points, values, strict=True)
        flags = [v if (p.run_id, key) in marked else None for p, v in pairs]
        series: list[dict[str, Any]] = [{"label": title, "values": values}]
        if any(flag is not None for flag in flags):
            series.append({"label": "regression", "values": flags, "marker": True})
        estimated = [p.run_id for p in points if key in p.estimated]
        how = sorted({p.estimated[key] for p in points if key in p.estimated})
        charts.append({"id": f"trend-{key}", "title": title, "unit": unit, "x": xs,
                       "series": series, "time": dated, "estimated": estimated,
                       "estimate": "; ".join(how),
                       "labels": [str(p.run_id) for p in points]})  # fmt: skip
    return {"dated": dated, "runs": [p.run_id for p in points], "charts": charts}


def _scaled(value: float | None, scale: float) -> float | None:
    return None if value is None else value * scale
