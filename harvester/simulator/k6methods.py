"""The series methods of an imported k6 run: how one time bucket's samples are reduced for
the `method` a series request asks (as generated runs take them, case-insensitive).

mean/avg, min, max, sum, count, last/value, stddev (population), rate (a Rate's share of
non-zero samples; else per second: a counter's sum, other metrics' sample count),
median/med, pNN or p(NN) (p95, p99.9) and fractions 0..1 (0.95); quantiles interpolate
linearly between closest ranks, as k6 does. Values are always floats.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable, Sequence

from harvester.simulator.k6thresholds import quantile

#: The method of a series request without one, by metric type: a gauge's bucket is its peak.
DEFAULT_METHODS = {"trend": "mean", "counter": "sum", "rate": "mean", "gauge": "max"}

Aggregator = Callable[[Sequence[float]], float]


_SIMPLE: dict[str, Aggregator] = {
    "mean": statistics.fmean, "avg": statistics.fmean, "sum": math.fsum,
    "min": lambda v: float(min(v)), "max": lambda v: float(max(v)),
    "count": lambda v: float(len(v)), "last": lambda v: float(v[-1]),
    "value": lambda v: float(v[-1]), "stddev": statistics.pstdev,
}  # fmt: skip
_PERCENT = re.compile(r"p(\d+(?:\.\d+)?)|p\((\d+(?:\.\d+)?)\)")
_FRACTION = re.compile(r"0(?:\.\d+)?|1(?:\.0*)?|\.\d+")


def _quantile_of(method: str) -> float | None:
    if method in ("median", "med"):
        return 0.5
    if match := _PERCENT.fullmatch(method):
        percent = float(match.group(1) or match.group(2))
        return percent / 100 if percent <= 100 else None
    if _FRACTION.fullmatch(method):
        return float(method)
    return None


def supports_method(method: str) -> bool:
    """Whether `serie()` understands this `method` (else the app answers 400)."""
    name = method.strip().lower()
    return name in _SIMPLE or name == "rate" or _quantile_of(name) is not None


def aggregator(method: str, metric_type: str = "trend", bucket_seconds: float = 1.0) -> Aggregator:
    """The function that reduces one bucket's samples for `method`; ValueError if unknown.
    `rate` is the share of non-zero samples for a Rate, else a per-second figure (of the
    sum for a counter, of the samples for the others), as generated runs answer it."""
    name = method.strip().lower()
    if simple := _SIMPLE.get(name):
        return simple
    if name == "rate" and metric_type == "rate":
        return lambda values: sum(1 for v in values if v) / len(values)
    if name == "rate":
        per_bucket = math.fsum if metric_type == "counter" else len
        return lambda values: per_bucket(values) / bucket_seconds
    q = _quantile_of(name)
    if q is None:
        raise ValueError(f"unknown series method {method!r}")
    return lambda values: quantile(sorted(values), q)
