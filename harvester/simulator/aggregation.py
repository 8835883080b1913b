"""Series values of generated metrics: a load curve, per-metric noise, and the `method` asked.

The series endpoint's `method` (mean, avg, min, max, median, sum, count, rate, value, last,
stddev, p95, p(99.9), 0.95 ...) picks how each time bucket's samples are summarised; here it
changes the values deterministically and plausibly for the metric's type.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

from harvester.simulator.catalogue import MetricSpec

DEFAULT_METHOD = "mean"
#: Extra noise values per run, so that metrics start their noise windows at different places.
NOISE_SPREAD = 997

_SIMPLE = {
    "mean": "mean",
    "avg": "mean",
    "min": "min",
    "max": "max",
    "sum": "sum",
    "count": "count",
    "rate": "rate",
    "value": "last",
    "last": "last",
    "stddev": "stddev",
    "stdev": "stddev",
    "rps": "rate",
}
_PERCENTILE = re.compile(r"p\(?(\d{1,3}(?:\.\d+)?)\)?")


@dataclass(frozen=True)
class Aggregation:
    """A parsed `method`: its kind, and the quantile (0..1) when the kind is "quantile"."""

    kind: str
    q: float = 0.0


def parse_method(method: str | None) -> Aggregation:
    """Parse a series `method`; ValueError names an unknown one."""
    text = (method or DEFAULT_METHOD).strip().lower()
    if text in _SIMPLE:
        return Aggregation(_SIMPLE[text])
    if text == "median":
        return Aggregation("quantile", 0.5)
    match = _PERCENTILE.fullmatch(text)
    if match and float(match.group(1)) <= 100:
        return Aggregation("quantile", float(match.group(1)) / 100)
    try:
        fraction = float(text)
    except ValueError:
        fraction = -1.0
    if 0.0 <= fraction <= 1.0:
        return Aggregation("quantile", fraction)
    raise ValueError(f"unknown aggregation method {method!r}")


def load_curve(points: int) -> list[float]:
    """Share of the run's VUs active in each bucket: ramp up, hold, ramp down; never 0."""
    up, down = max(1, points // 5), max(1, points // 10)
    return [min(1.0, (i + 1) / up, (points - i) / down) for i in range(points)]


@dataclass(frozen=True)
class RunCurves:
    """The per-run curves every serie is drawn from, computed once per run.

    Noise is drawn once per run (`points + NOISE_SPREAD` values) and each metric reads its
    own window of it; the per-point terms are precomputed too, so that a serie costs one
    multiply and one rounding per point (this is the whole cost of a first render).
    """

    load: list[float]
    noise: list[float]
    #: 0.75 + 0.5 * load: latency grows with load.
    trend_load: list[float]
    #: Multiplicative noise of trends (+-12 %) and counters (+-10 %).
    trend_noise: list[float]
    counter_noise: list[float]


def run_curves(points: int, seed: str) -> RunCurves:
    rng = random.Random(seed)
    noise = [rng.gauss(0.0, 1.0) for _ in range(points + NOISE_SPREAD)]
    load = load_curve(points)
    return RunCurves(
        load=load,
        noise=noise,
        trend_load=[0.75 + 0.5 * x for x in load],
        trend_noise=[max(0.05, 1 + 0.12 * e) for e in noise],
        counter_noise=[max(0.0, 1 + 0.1 * e) for e in noise],
    )


def _milli(values: list[float], scale: float = 1.0) -> list[float]:
    """Scale and keep three decimals (int arithmetic: round(x, 3) was a third of the cost)."""
    k = scale * 1000.0
    return [int(x * k + 0.5) / 1000.0 for x in values]  # every value here is >= 0


def _base(
    spec: MetricSpec, curves: RunCurves, interval: int, start: int, scale: float = 1.0
) -> list[float]:
    """Each bucket's typical value: trends in ms (times `scale`, to 3 decimals), counters
    per bucket (whole), rates 0..1, gauges. `start` is the metric's noise window."""
    level, points = spec.level, len(curves.load)
    end = start + points
    if spec.type == "trend":
        k = level * scale * 1000.0
        terms = zip(curves.trend_load, curves.trend_noise[start:end], strict=True)
        return [int(k * a * b + 0.5) / 1000.0 for a, b in terms]
    if spec.type == "counter":
        per_bucket = level * interval
        terms = zip(curves.load, curves.counter_noise[start:end], strict=True)
        return [int(per_bucket * a * b + 0.5) for a, b in terms]
    if spec.type == "rate":
        if level in (0.0, 1.0):
            return [level] * points
        return _milli([min(1.0, max(0.0, level + 0.02 * e)) for e in curves.noise[start:end]])
    if spec.name == "vus":
        return [max(1, round(level * x)) for x in curves.load]
    return [level] * points


def _linear_factor(agg: Aggregation, mtype: str, interval: int) -> float | None:
    """The factor that turns the base values into this aggregation, when it is one."""
    q3 = 0.35 + 2.65 * agg.q**3  # quantiles of a right-skewed latency: min 0.35x, max 3x
    if mtype == "trend":
        factors = {"mean": 1.0, "last": 1.05, "min": 0.35, "max": 3.0, "stddev": 0.45}
        return factors.get(agg.kind, q3 if agg.kind == "quantile" else None)
    if mtype == "counter":
        if agg.kind in ("sum", "count", "last"):
            return 1.0
        factors = {"mean": 1.0, "rate": 1.0, "min": 0.7, "max": 1.3, "stddev": 0.1}
        return factors.get(agg.kind, 0.7 + 0.6 * agg.q) / interval
    if mtype == "gauge":
        factors = {"mean": 1.0, "last": 1.0, "max": 1.0, "quantile": 1.0, "stddev": 0.05}
        return factors.get(agg.kind, 1.0 / interval if agg.kind == "rate" else None)
    return 1.0 if agg.kind in ("mean", "rate", "last") else None


def _nonlinear(agg: Aggregation, mtype: str, base: list[float], counts: list[int]) -> list[float]:
    """The aggregations that are not a plain factor of the base values."""
    if agg.kind == "rate":  # of a trend: samples per second
        return [float(n) for n in counts]
    if agg.kind == "sum":
        return [x * n for x, n in zip(base, counts, strict=True)]
    if agg.kind == "min":
        if mtype == "gauge":
            return [float(math.floor(x * 0.9)) for x in base]
        return [float(x >= 1.0) for x in base]
    if agg.kind == "max":
        return [float(x > 0.0) for x in base]
    if agg.kind == "quantile":
        return [float(x > 0.0 and agg.q > 1.0 - x) for x in base]
    return [math.sqrt(x * (1.0 - x)) for x in base]  # stddev of a rate


def serie_values(
    spec: MetricSpec, agg: Aggregation, curves: RunCurves, interval: int
) -> list[float]:
    """The values of one metric's serie under one aggregation: one or two passes."""
    start = int(spec.id[:8], 16) % NOISE_SPREAD  # the metric's own window of the run's noise
    load = curves.load
    if agg.kind == "count" and spec.type != "counter":
        return [max(1, round(spec.samples * interval * x)) for x in load]
    factor = _linear_factor(agg, spec.type, interval)
    if spec.type == "trend" and factor is not None:
        return _base(spec, curves, interval, start, scale=factor)
    base = _base(spec, curves, interval, start)
    if factor == 1.0:
        return base
    if factor is not None:
        return _milli(base, factor)
    counts = [max(1, round(spec.samples * interval * x)) for x in load]
    values = _nonlinear(agg, spec.type, base, counts)
    return _milli(values, 1.0 / interval if agg.kind == "rate" else 1.0)
