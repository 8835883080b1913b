"""Lines over time built from many series while they stream past, and their downsampling.

A `Line` folds the points of every serie added to it into one value per timestamp (a sum,
a mean, the largest or the smallest), so memory grows with the length of a run, never
with its number of metrics. `downsample` thins the lines of a chart for drawing while
keeping every bucket's extremes, so a spike never disappears from the picture.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import lru_cache
from operator import neg

#: Points a chart draws at most (two a line per bucket: its lowest and highest).
MAX_POINTS = 1200


@lru_cache(maxsize=1 << 16)
def epoch(stamp: str) -> float:
    """Seconds since the epoch of an API timestamp ("2024-06-02T16:08:10Z"); cached because
    every serie of a run repeats the same stamps."""
    return datetime.fromisoformat(stamp).timestamp()


class Line:
    """One value per timestamp, folded from any number of series with `how`.

    Sums are exact (the value does not depend on the order the series come in, which
    differs between two harvests of one run, so equal archives give equal pages): the
    series of a run share its time grid, so a line keeps, per grid, the values of each
    serie added as an array of doubles, and folds them a timestamp at a time with
    `math.fsum` (C, over a column), never a point at a time in Python. Past `COMPACT`
    arrays on a grid they are replaced by a few that hold the same sums exactly
    (`exact_terms`), so memory stays a few arrays a grid whatever the number of series."""

    def __init__(self, how: str) -> None:
        if how not in ("sum", "mean", "max", "min"):
            raise ValueError(f"unknown fold {how!r}")
        self.how = how
        # the grid's times as bytes -> (its times, the values' arrays (one for max and
        # min: the extremes so far), the series added on it)
        self._grids: dict[bytes, tuple[array[float], list[array[float]], list[int]]] = {}

    def add(self, times: array[float], values: array[float]) -> None:
        """Fold in one serie's points: its times (epoch seconds, increasing) and values."""
        if not times:
            return
        key = times.tobytes()
        grid = self._grids.get(key)
        if grid is None:
            if len(set(times)) < len(times):  # a time twice in a serie: each point alone
                for t, value in zip(times, values, strict=True):
                    self.add(array("d", (t,)), array("d", (value,)))
                return
            self._grids[key] = (times, [values], [1])
            return
        arrays, added = grid[1], grid[2]
        added[0] += 1
        if self.how in ("max", "min"):
            # max(old, new) keeps the old one on a tie, as the first serie's value won
            arrays[0] = array("d", map(max if self.how == "max" else min, arrays[0], values))
            return
        arrays.append(values)
        if len(arrays) > COMPACT:
            arrays[:] = _compacted(arrays)

    @property
    def moments(self) -> Iterable[float]:
        return (t for times, _, _ in self._grids.values() for t in times)

    def folded(self) -> dict[float, float]:
        """Timestamp to value (a mean divided out)."""
        grids = list(self._grids.values())
        if self.how in ("max", "min"):
            pick = max if self.how == "max" else min
            out: dict[float, float] = {}
            for times, (values,), _ in grids:
                for t, value in zip(times, values, strict=True):
                    old = out.get(t)
                    out[t] = value if old is None else pick(old, value)
            return out
        if len(grids) == 1:  # the common case: every serie on the run's grid
            times, arrays, (added,) = grids[0]
            sums = map(math.fsum, zip(*arrays, strict=True))
            if self.how == "mean":
                return {t: total / added for t, total in zip(times, sums, strict=True)}
            return dict(zip(times, sums, strict=True))
        terms: dict[float, list[float]] = {}
        counts: dict[float, int] = {}
        for times, arrays, (added,) in grids:
            for t, column in zip(times, zip(*arrays, strict=True), strict=True):
                terms.setdefault(t, []).extend(column)
                counts[t] = counts.get(t, 0) + added
        if self.how == "mean":
            return {t: math.fsum(column) / counts[t] for t, column in terms.items()}
        return {t: math.fsum(column) for t, column in terms.items()}

    def __bool__(self) -> bool:
        return bool(self._grids)


#: Arrays of values a grid keeps before they are compacted (`Line.add`).
COMPACT = 8


def exact_terms(values: Iterable[float]) -> list[float]:
    """A few floats whose exact sum is that of `values` (none for a sum of 0): the sum
    rounded (`math.fsum`, correctly rounded), then what it left out, rounded, and so on
    until nothing is left, so `math.fsum` of them is `math.fsum(values)`."""
    terms = list(values)
    out: list[float] = []
    while total := math.fsum(terms):
        out.append(total)
        terms.append(-total)
    return out


def _compacted(arrays: list[array[float]]) -> list[array[float]]:
    """Arrays aligned on one grid replaced by as few as hold each timestamp's sum exactly:
    `exact_terms` of every column at once (each level one `math.fsum` a column, in C)."""
    levels: list[array[float]] = []
    negated: list[array[float]] = []
    while True:
        level = array("d", map(math.fsum, zip(*arrays, *negated, strict=True)))
        if levels and not any(level):
            return levels
        levels.append(level)
        negated.append(array("d", map(neg, level)))


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
