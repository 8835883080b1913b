"""Packing metric ids into as few series requests as fit under the URL-length cap, and
under a bound on the points an answer brings back.

The length is measured on the query exactly as it is sent (`ids[]` encoded as
`ids%5B%5D`), not estimated (LESSONS.md #11). When the server still answers 414, the cap
is lowered to below the rejected length and kept for the rest of the run. Once an answer
has said how many points a serie holds, a batch holds no more series than keep its answer
under `POINTS_PER_REQUEST`: memory stays flat however long the series are.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote

IDS_KEY = quote("ids[]", safe="")
#: What each id adds to a series request target besides itself: `&ids%5B%5D=`.
ID_OVERHEAD = len(f"&{IDS_KEY}=")
#: Points one series answer may bring back: a point is ~50 bytes of JSON and ~300 once
#: parsed, so an answer stays near 5 MB of body and 30 MB of objects. Series of a few
#: hundred points are bound by the URL cap long before this.
POINTS_PER_REQUEST = 100_000
#: Most ids of the first series request of a job, asked before anything says how long the
#: series are: at 20,000 points a serie that answer is still only ~16 MB of body.
PROBE_IDS = 16


def quoted_id(metric_id: str) -> str:
    """A metric id as it goes in the query. k6 Cloud's ids are hex, which `quote` leaves
    as they are: answering those without it saves ~1.5 us an id, and a run's ids are
    measured for each plan and quoted again for each request (~0.1 s on `large`)."""
    if metric_id.isascii() and metric_id.isalnum():
        return metric_id
    return quote(metric_id, safe="")


def series_query(run_id: int, ids: Sequence[str], method: str | None) -> str:
    """The series endpoint's query string, encoded as it goes on the wire."""
    parts = [f"test_run_id={run_id}"]
    parts.extend(f"{IDS_KEY}={quoted_id(metric_id)}" for metric_id in ids)
    if method:
        parts.append(f"method={quote(method, safe='')}")
    return "&".join(parts)


class SeriesBatcher:
    """Plans batches of ids for one run under a cap on the request target's length.

    `fixed_length` is the length of the request target with no ids (path, `?`, test_run_id
    and method); each id adds `len("&ids%5B%5D=") + len(quoted id)`.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        #: Points of the longest serie: the run's own once it has answered, until then a
        #: guess (another run's); None when nothing is known.
        self.points_per_serie: int | None = None
        self._measured = False

    def guess(self, points: int | None) -> None:
        """How long series probably are (another run's measure), until this run's own."""
        if not self._measured:
            self.points_per_serie = points

    @property
    def max_ids(self) -> int | None:
        """Most ids whose answer stays under `POINTS_PER_REQUEST`; None while unknown."""
        if not self.points_per_serie:
            return None
        return max(1, POINTS_PER_REQUEST // self.points_per_serie)

    def learn_points(self, points: int) -> None:
        """An answer's longest serie: the run's own measure replaces any guess."""
        known = self.points_per_serie if self._measured else None
        self.points_per_serie = max(known or 0, points)
        self._measured = True

    def fits(self, count: int, length: int) -> bool:
        """Whether a batch of `count` ids whose request target is `length` long may go."""
        limit = self.max_ids
        return length <= self.cap and (limit is None or count <= limit)

    @staticmethod
    def id_cost(metric_id: str) -> int:
        return ID_OVERHEAD + len(quoted_id(metric_id))

    def plan(self, ids: Sequence[str], fixed_length: int) -> list[list[str]]:
        """Greedy packing in the given order; an id too long for any batch goes alone.
        (`fits`, inlined: the cap and the bound hold still while a plan is made.)"""
        cap, most = self.cap, self.max_ids or len(ids)
        batches: list[list[str]] = []
        current: list[str] = []
        length = fixed_length
        for metric_id in ids:
            cost = ID_OVERHEAD + len(quoted_id(metric_id))
            if current and (length + cost > cap or len(current) >= most):
                batches.append(current)
                current, length = [], fixed_length
            current.append(metric_id)
            length += cost
        if current:
            batches.append(current)
        return batches

    def learn_too_long(self, rejected_length: int, fixed_length: int) -> None:
        """The server refused a target of this length: the cap becomes the length of the
        halves about to be tried, so once they pass, no later batch is refused again."""
        halves = fixed_length + (rejected_length - fixed_length + 1) // 2
        self.cap = min(self.cap, max(halves, fixed_length + 1))
