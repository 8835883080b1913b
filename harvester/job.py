"""One harvest, callable from Python: wire transport, API, sink and scheduler, then run.

The CLI is a thin layer over `harvest_job`; tests and the worker call it directly.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from .api import CloudApi
from .config import Settings
from .errors import unwrap
from .ratelimit import RateGate
from .scheduler import HarvestReport, RunObserver, RunTarget, Scheduler
from .sinks import DirectorySink, Sink, StreamSink, prepare_output_dir
from .stats import HarvestStats
from .transport import Transport


@dataclass
class JobResult:
    report: HarvestReport
    stats: HarvestStats
    seconds: float
    skipped: list[int] = field(default_factory=list)


def make_sink(settings: Settings, stdout: BinaryIO | None = None) -> Sink:
    if settings.to_stdout:
        return StreamSink(stdout if stdout is not None else sys.stdout.buffer)
    return DirectorySink(prepare_output_dir(settings.out))


async def harvest_job(
    settings: Settings,
    targets: Sequence[RunTarget],
    *,
    stdout: BinaryIO | None = None,
    observers: Sequence[RunObserver] = (),
    stats: HarvestStats | None = None,
    gate: RateGate | None = None,
) -> JobResult:
    """Harvest `targets` as `settings` say; returns what happened (never raises for one
    failed run; raises `AuthRejected` at the first 401/403, and `ConfigError` early)."""
    stats = stats if stats is not None else HarvestStats()
    gate = gate if gate is not None else RateGate(settings.rate)
    sink = make_sink(settings, stdout)
    started = time.monotonic()
    stats.runs_total += len(targets)
    async with Transport(settings, gate=gate, stats=stats) as transport:
        scheduler = Scheduler(settings, CloudApi(transport), sink, stats, observers)
        try:
            report = await scheduler.harvest(targets)
        except ExceptionGroup as group:
            raise unwrap(group) from None
    return JobResult(report, stats, time.monotonic() - started)
