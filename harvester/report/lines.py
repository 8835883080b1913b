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

#: Points a chart draws at most (two a line per bucket: its lowest and highest).
MAX_POINTS = 1200


@lru_cache(maxsize=1 << 16)
def epoch(stamp: str) -> float:
    """Seconds since the epoch of an API timestamp ("2024-06-02T16:08:10Z"); cached because
    every serie of a run repeats the same stamps."""
    return datetime.fromisoformat(stamp).timestamp()


class Line:
    """One value per timestamp, folded from any number of series with `how`.

    Sums are exact (Shewchuk's partials, as `math.fsum` keeps them, a few floats per
    timestamp): the folded value does not depend on the order the series come in, which
    differs between two harvests of one run, so equal archives give equal pages."""

    def __init__(self, how: str) -> None:
        if how not in ("sum", "mean", "max", "min"):
            raise ValueError(f"unknown fold {how!r}")
        self.how = how
        self._extremes: dict[float, float] = {}
        self._partials: dict[float, list[float]] = {}
        self._counts: dict[float, int] = {}

    def add(self, points: Iterable[tuple[float, float]]) -> None:
        """Fold in one serie's (epoch seconds, value) points."""
        if self.how in ("sum", "mean"):
            partials, counts = self._partials, self._counts
            for moment, value in points:
                found = partials.get(moment)
                if found is None:
                    partials[moment], counts[moment] = [value], 1
                else:
                    add_exactly(found, value)
                    counts[moment] += 1
            return
        values, pick = self._extremes, max if self.how == "max" else min
        for moment, value in points:
            old = values.get(moment)
            values[moment] = value if old is None else pick(old, value)

    @property
    def moments(self) -> Iterable[float]:
        return self._partials.keys() if self.how in ("sum", "mean") else self._extremes.keys()

    def folded(self) -> dict[float, float]:
        """Timestamp to value (a mean divided out)."""
        if self.how == "sum":
            return {t: math.fsum(p) for t, p in self._partials.items()}
        if self.how == "mean":
            return {t: math.fsum(p) / self._counts[t] for t, p in self._partials.items()}
        return dict(self._extremes)

    def __bool__(self) -> bool:
        return bool(self._partials or self._extremes)


def add_exactly(partials: list[float], x: float) -> None:
    """Add `x` to a sum kept as non-overlapping partials (`math.fsum`'s own algorithm)."""
    i = 0
    for y in partials:
        if abs(x) < abs(y):
            x, y = y, x
        high = x + y
        low = y - (high - x)
        if low:
            partials[i] = low
            i += 1
        x = high
    partials[i:] = [x]


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
