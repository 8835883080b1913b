"""Counters of what a harvest did, shared by the transport, the writer, progress and /metrics."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class HarvestStats:
    """Plain counters; updated in place on the event loop (no locks needed)."""

    requests: Counter[tuple[str, int]] = field(default_factory=Counter)  # (endpoint, status)
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)  # (endpoint, error name)
    bytes_received: int = 0
    retries: int = 0
    throttled: int = 0
    records: Counter[str] = field(default_factory=Counter)  # by record type
    bytes_written: int = 0
    runs_total: int = 0
    #: runs_total counts all of the job's runs: False until discovery and the archive's
    #: check have said which (a job ended before cannot say how many it left).
    runs_known: bool = False
    runs_done: int = 0
    runs_failed: int = 0
    runs_skipped: int = 0
    #: Whether a request of the job has had an HTTP answer, and a 2xx one. Shared by the
    #: job's transports (discovery's and the harvest's): a harvest whose requests time out
    #: or answer 403 after discovery was answered has not met an unreachable API or a
    #: token that may read nothing. The worker clears them as each cycle begins.
    answered: bool = False
    allowed: bool = False

    @property
    def request_count(self) -> int:
        return sum(self.requests.values())

    @property
    def record_count(self) -> int:
        return sum(self.records.values())
