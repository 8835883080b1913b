"""The simulator's record of every request it answered, for tests to synchronise on."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import overload


@dataclass(frozen=True)
class LoggedRequest:
    """One answered request, as the server saw it."""

    #: Short route name: "metrics", "series", "metric_detail", "thresholds", "threshold",
    #: "overview", "export", "tests", "test", "runs", "run", "organizations", "projects",
    #: or "unknown" for a path the API does not have.
    endpoint: str
    path: str
    run_id: int | None
    #: `ids[]` of the query (metric or threshold ids), or the id in the path of a detail.
    ids: tuple[str, ...]
    #: The series `method` parameter, if given.
    method: str | None
    status: int
    #: What went wrong on purpose: an injected fault kind ("500", "502", "503", "504",
    #: "429", "reset", "truncate", "delay", "unlisted", "latin1"), or "rate_limit", "outage",
    #: "url_too_long", "fail_metric_ids", "refuse_methods", "refuse_runs",
    #: "forbidden_runs"; None for an honest answer.
    fault: str | None
    #: Length of the request target (path, "?" and query) as received.
    url_length: int
    #: time.monotonic() when the request arrived.
    at: float


class RequestLog(Sequence[LoggedRequest]):
    """Answered requests in arrival order; keeps the newest `limit` (old ones are dropped
    in chunks, so a long benchmark cannot grow it without bound)."""

    def __init__(self, limit: int = 1_000_000) -> None:
        self.limit = limit
        self._entries: list[LoggedRequest] = []

    def append(self, entry: LoggedRequest) -> None:
        self._entries.append(entry)
        if len(self._entries) > self.limit:
            del self._entries[: max(1, self.limit // 10)]

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    @overload
    def __getitem__(self, index: int) -> LoggedRequest: ...

    @overload
    def __getitem__(self, index: slice) -> list[LoggedRequest]: ...

    def __getitem__(self, index: int | slice) -> LoggedRequest | list[LoggedRequest]:
        return self._entries[index]

    def __iter__(self) -> Iterator[LoggedRequest]:
        return iter(list(self._entries))  # a snapshot: requests may land while iterating

    def for_endpoint(self, *endpoints: str) -> list[LoggedRequest]:
        """The requests to any of `endpoints` (all requests when none is named)."""
        return [e for e in self._entries if not endpoints or e.endpoint in endpoints]

    def faults(self) -> list[str]:
        """The `fault` of every request that had one, in order."""
        return [e.fault for e in self._entries if e.fault is not None]

    def max_in_window(self, seconds: float, entries: Iterable[LoggedRequest] | None = None) -> int:
        """The most requests that arrived within any `seconds`-long window (half-open)."""
        return max_in_window(
            [e.at for e in (self._entries if entries is None else entries)], seconds
        )


def max_in_window(times: Sequence[float], seconds: float) -> int:
    """The most of the (sorted) `times` within any half-open window `seconds` long."""
    best, start = 0, 0
    for end, moment in enumerate(times):
        while moment - times[start] >= seconds:
            start += 1
        best = max(best, end - start + 1)
    return best
