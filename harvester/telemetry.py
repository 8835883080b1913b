"""The worker's Prometheus metrics: a private registry read from the live counters at scrape time.

Nothing is copied or incremented twice: a custom collector reads `HarvestStats` (shared by
every cycle's transport and writer) and the worker's `WorkerStatus` whenever `/metrics`
is scraped. The registry is our own `CollectorRegistry`, not prometheus-client's global
one, so two workers in one process (tests) never collide.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .ratelimit import RateGate
from .stats import HarvestStats

#: What `/metrics` answers with (text format 0.0.4).
CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclass
class WorkerStatus:
    """What the worker loop reports about itself (wall-clock times, seconds since epoch)."""

    cycles: int = 0
    failed_cycles: int = 0
    last_success: float | None = None
    last_cycle_seconds: float | None = None
    #: Runs the last discovery left for later (still running or processing).
    pending_runs: int = 0


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _labelled(
    name: str, doc: str, labels: list[str], values: Iterable[tuple[Sequence[str], float]]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in sorted(values, key=lambda kv: tuple(kv[0])):
        family.add_metric(list(key), value)
    return family


class HarvestCollector:
    """Turns the counters into metric families each time the registry is collected."""

    def __init__(self, stats: HarvestStats, status: WorkerStatus, gate: RateGate) -> None:
        self.stats = stats
        self.status = status
        self.gate = gate

    def collect(self) -> Iterator[Metric]:
        yield from self._harvest_metrics()
        yield from self._request_metrics()
        yield from self._worker_metrics()

    def _harvest_metrics(self) -> Iterator[Metric]:
        s = self.stats
        yield _counter("harvester_runs_harvested", "Runs archived whole.", s.runs_done)
        yield _counter("harvester_runs_failed", "Run harvests that failed.", s.runs_failed)
        yield _counter(
            "harvester_runs_skipped", "Runs skipped as already archived.", s.runs_skipped
        )
        records = [((kind,), n) for kind, n in s.records.items()]
        yield _labelled(
            "harvester_records_written", "NDJSON records written, by type.", ["type"], records
        )
        yield _counter("harvester_written_bytes", "NDJSON bytes written.", s.bytes_written)

    def _request_metrics(self) -> Iterator[Metric]:
        s = self.stats
        by_status = [((endpoint, str(status)), n) for (endpoint, status), n in s.requests.items()]
        yield _labelled(
            "harvester_requests",
            "HTTP requests answered, by endpoint and status (retries included).",
            ["endpoint", "status"],
            by_status,
        )
        yield _labelled(
            "harvester_request_errors",
            "Transient request failures (retried or given up), by endpoint and error.",
            ["endpoint", "error"],
            s.errors.items(),
        )
        throttled = sum(n for (_, status), n in s.requests.items() if status == 429)
        yield _counter("harvester_rate_limited", "429 Too Many Requests answers.", throttled)
        yield _counter("harvester_retries", "Requests sent again after a failure.", s.retries)
        yield _counter("harvester_received_bytes", "Response body bytes.", s.bytes_received)
        yield GaugeMetricFamily(
            "harvester_request_rate_limit",
            "Requests per second currently allowed (lowered after 429s).",
            value=self.gate.current,
        )

    def _worker_metrics(self) -> Iterator[Metric]:
        st = self.status
        yield _counter("harvester_cycles", "Discover-and-harvest cycles ended.", st.cycles)
        yield _counter(
            "harvester_cycles_failed", "Cycles ended by an error (retried).", st.failed_cycles
        )
        yield GaugeMetricFamily(
            "harvester_pending_runs",
            "Runs the last discovery left for later (running or processing).",
            value=st.pending_runs,
        )
        if st.last_success is not None:
            yield GaugeMetricFamily(
                "harvester_last_success_timestamp_seconds",
                "When the last successful cycle ended (Unix time).",
                value=st.last_success,
            )
        if st.last_cycle_seconds is not None:
            yield GaugeMetricFamily(
                "harvester_last_cycle_duration_seconds",
                "How long the last cycle took.",
                value=st.last_cycle_seconds,
            )


class Telemetry:
    """A private registry holding one `HarvestCollector`; `render()` is the /metrics body."""

    def __init__(self, stats: HarvestStats, status: WorkerStatus, gate: RateGate) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(HarvestCollector(stats, status, gate))

    def render(self) -> bytes:
        return generate_latest(self.registry)
