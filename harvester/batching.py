"""Packing metric ids into as few series requests as fit under the URL-length cap.

The length is measured on the query exactly as it is sent (`ids[]` encoded as
`ids%5B%5D`), not estimated (LESSONS.md #11). When the server still answers 414, the cap
is lowered to below the rejected length and kept for the rest of the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote

IDS_KEY = quote("ids[]", safe="")


def series_query(run_id: int, ids: Sequence[str], method: str | None) -> str:
    """The series endpoint's query string, encoded as it goes on the wire."""
    parts = [f"test_run_id={run_id}"]
    parts.extend(f"{IDS_KEY}={quote(metric_id, safe='')}" for metric_id in ids)
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

    @staticmethod
    def id_cost(metric_id: str) -> int:
        return 1 + len(IDS_KEY) + 1 + len(quote(metric_id, safe=""))

    def plan(self, ids: Sequence[str], fixed_length: int) -> list[list[str]]:
        """Greedy packing in the given order; an id too long for any batch goes alone."""
        batches: list[list[str]] = []
        current: list[str] = []
        length = fixed_length
        for metric_id in ids:
            cost = self.id_cost(metric_id)
            if current and length + cost > self.cap:
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
