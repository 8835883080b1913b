"""What people and log collectors see on stderr: per-run events and a closing summary.

Chosen once at start-up: on a TTY, short human lines; otherwise one JSON object a line
(cron, Kubernetes), so stdout stays pure NDJSON in `--out -` mode.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

import orjson

if TYPE_CHECKING:
    from .config import Settings
    from .job import JobResult
    from .scheduler import RunOutcome


class Reporter:
    """Observer of a harvest (see `scheduler.RunObserver`) that writes to stderr."""

    def __init__(self, stream: TextIO, *, json_lines: bool, level: str = "info") -> None:
        self.stream = stream
        self.json_lines = json_lines
        self.level = level

    @classmethod
    def for_settings(cls, settings: Settings, stream: TextIO | None = None) -> Reporter:
        stream = stream if stream is not None else sys.stderr
        return cls(stream, json_lines=not stream.isatty(), level=settings.log_level)

    def event(self, event: str, message: str, **fields: Any) -> None:
        if self.json_lines:
            doc = {"ts": round(time.time(), 3), "event": event, **fields, "message": message}
            self.stream.write(orjson.dumps(doc).decode() + "\n")
        else:
            self.stream.write(f"harvester: {message}\n")
        self.stream.flush()

    def run_started(self, run_id: int) -> None:
        if self.level == "verbose":
            self.event("run_started", f"run {run_id}: started", run_id=run_id)

    def run_ended(self, outcome: RunOutcome) -> None:
        if self.level == "quiet" and outcome.ok:
            return
        if outcome.ok:
            counts = outcome.summary.get("counts", {})
            missing = outcome.summary.get("missing_series", [])
            where = f" -> {outcome.path}" if outcome.path else ""
            gaps = f", {len(missing)} series missing" if missing else ""
            self.event(
                "run_done",
                f"run {outcome.run_id}: {sum(counts.values())} records{gaps}{where}",
                run_id=outcome.run_id,
                counts=counts,
                missing_series=len(missing),
                path=outcome.path,
            )
        else:
            self.event(
                "run_failed",
                f"run {outcome.run_id} failed: {outcome.reason}",
                run_id=outcome.run_id,
                reason=outcome.reason,
            )

    def finish(self, result: JobResult) -> None:
        if result.interrupted_by is not None:
            self.event(
                "interrupted",
                f"stopped by signal {result.interrupted_by}: {len(result.not_done)} runs not "
                "harvested (no partial files left; run the same command again to finish)",
                signal=result.interrupted_by,
                not_done=result.not_done,
            )
        stats = result.stats
        failed = result.report.failed
        self.event(
            "summary",
            f"{stats.runs_done} runs harvested, {len(failed)} failed, "
            f"{len(result.skipped)} already done; {stats.request_count} requests, "
            f"{stats.record_count} records, {stats.bytes_written / 1e6:.1f} MB "
            f"in {result.seconds:.1f} s ({stats.retries} retries, {stats.throttled} throttled)",
            runs_done=stats.runs_done,
            runs_failed=len(failed),
            runs_skipped=len(result.skipped),
            requests=stats.request_count,
            records=stats.record_count,
            bytes=stats.bytes_written,
            seconds=round(result.seconds, 3),
            retries=stats.retries,
            throttled=stats.throttled,
            failed=[{"run_id": o.run_id, "reason": o.reason} for o in failed],
        )
