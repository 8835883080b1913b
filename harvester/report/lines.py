"""Lines over time built from many series while they stream past, and their downsampling.

A `Line` folds the points of every serie added to it into one value per timestamp (a sum,
a mean, the largest or the smallest), so memory grows with the length of a run, never
with its number of metrics. `downsample` thins the lines of a chart for drawing while
keeping every bucket's extremes, so a spike never disappears from the picture.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

#: Points a chart draws at most (two a line per bucket: its lowest and highest).
MAX_POINTS = 1200


@lru_cache(maxsize=1 << 16)
def epoch(stamp: str) -> float:
    """Seconds since the epoch of an API timestamp ("2024-06-02T16:08:10Z"); cached because
    every serie of a run repeats the same stamps."""
    return datetime.fromisoformat(stamp).timestamp()


class Line:
    """One value per timestamp, folded from any number of series with `how`."""

    def __init__(self, how: str) -> None:
        if how not in ("sum", "mean", "max", "min"):
            raise ValueError(f"unknown fold {how!r}")
        self.how = how
        self.values: dict[float, float] = {}
        self._counts: dict[float, int] = {}

    def add(self, points: Iterable[dict[str, Any]]) -> None:
        values, counts, how = self.values, self._counts, self.how
        for point in points:
            value = point.get("value")
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue  # a gap in the serie stays a gap
            moment = epoch(point["timestamp"])
            old = values.get(moment)
            if old is None:
                values[moment], counts[moment] = float(value), 1
            elif how in ("sum", "mean"):
                values[moment] = old + value
                counts[moment] += 1
            elif how == "max":
                values[moment] = max(old, value)
            else:
                values[moment] = min(old, value)

    def folded(self) -> dict[float, float]:
        """Timestamp to value (a mean divided out)."""
        if self.how != "mean":
            return dict(self.values)
        return {t: v / self._counts[t] for t, v in self.values.items()}

    def __bool__(self) -> bool:
        return bool(self.values)


def interval(moments: Iterable[float]) -> float:
    """The spacing of a run's points in seconds (the median gap; 1 for a single point)."""
    ordered = sorted(set(moments))
    gaps = sorted(b - a for a, b in zip(ordered, ordered[1:], strict=False))
    return gaps[len(gaps) // 2] if gaps else 1.0


def table(lines: Sequence[dict[float, float]]) -> tuple[list[float], list[list[float | None]]]:
    """The lines on one shared x axis (every timestamp any of them has; None where absent)."""
    xs = sorted({t for line in lines for t in line})
    return xs, [[line.get(t) for t in xs] for line in lines]


def downsample(
    xs: list[float], ys: list[list[float | None]], limit: int = MAX_POINTS
) -> tuple[list[float], list[list[float | None]]]:
    """At most `limit` + 2 points: the x range cut into buckets, and in each the points
    where each line is lowest and highest (plus the first and last), so no spike is lost."""
    if len(xs) <= limit:
        return xs, ys
    buckets = max(1, limit // (2 * max(1, len(ys))))
    size = len(xs) / buckets
    keep = {0, len(xs) - 1}
    for b in range(buckets):
        lo, hi = int(b * size), min(len(xs), int((b + 1) * size))
        for line in ys:
            window = [(v, i) for i, v in enumerate(line[lo:hi], lo) if v is not None]
            if window:
                keep.add(min(window)[1])
                keep.add(max(window)[1])
    chosen = sorted(keep)
    return [xs[i] for i in chosen], [[line[i] for i in chosen] for line in ys]


def finite(value: float | None) -> float | None:
    """A number JSON can carry (NaN and infinities become None)."""
    return value if value is not None and math.isfinite(value) else None
