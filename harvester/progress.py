"""What people and log collectors see on stderr: progress, per-run events and a summary.

Chosen once at start-up (`Reporter.for_settings`): on a TTY a live rich display (runs
done/total, requests, records, request rate against the limit, retries, ETA) and a summary
table at the end; otherwise one JSON object a line (cron, Kubernetes), each with an ISO
8601 `time` and a `level`. Everything goes to stderr, so stdout stays pure NDJSON in
`--out -` mode. rich is imported only when a display is actually shown: `harvester
--version` must start fast.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

import anyio
import orjson

from .errors import unwrap
from .live import TICK, LiveDisplay, wants_live
from .tables import make_console, plural, printable, summary_table

if TYPE_CHECKING:
    from rich.console import Console

    from .config import Settings
    from .job import JobResult
    from .ratelimit import RateGate
    from .scheduler import RunOutcome
    from .selection import Discovery
    from .stats import HarvestStats

#: The level of each event in JSON lines; the rest are "info".
LEVELS = {
    "run_started": "debug",
    "run_failed": "error",
    "cycle_failed": "warning",
    "warning": "warning",
    # A selected project or test the API does not know makes the job exit 1.
    "not_found": "warning",
    "stopping": "warning",
    "stopping_now": "warning",
    "interrupted": "warning",
    "error": "error",
}


def signal_name(signum: int) -> str:
    """SIGINT, not 2."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def now_iso() -> str:
    """The time in ISO 8601, UTC, to the millisecond: 2026-01-31T02:30:00.123Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Reporter:
    """Observer of a harvest (see `scheduler.RunObserver`) that writes to stderr."""

    def __init__(
        self,
        stream: TextIO,
        *,
        json_lines: bool,
        level: str = "info",
        live: bool = False,
        timestamps: bool = False,
        to_stdout: bool = False,
    ) -> None:
        self.stream = stream
        self.json_lines = json_lines
        self.level = level
        self.live = live
        self.timestamps = timestamps  # human lines of a long-running worker
        self.to_stdout = to_stdout  # NDJSON on stdout: every line written is kept
        self._console: Console | None = None
        self._display: LiveDisplay | None = None
        self._discovering = False
        self._in_flight: set[int] = set()
        self._gone = False  # the stream's reader went away: nothing more is written
        self.stats: HarvestStats | None = None
        self.started = time.monotonic()  # the summary's time: discovery included
        # What the runs that ended left: the summary after an error that ends the job
        # counts what was kept, as `kept` does when it ends by itself.
        self._kept_records: Counter[str] = Counter()
        self._kept_bytes = 0
        # The runs whose last harvest failed, by id: a worker's run failing every cycle
        # is one entry (a list grew by one each cycle, for the worker's whole life).
        self._failed: dict[int, dict[str, Any]] = {}

    @classmethod
    def for_settings(
        cls,
        settings: Settings,
        stream: TextIO | None = None,
        *,
        live_allowed: bool = True,
        timestamps: bool = False,
    ) -> Reporter:
        """Lines for people on a TTY, JSON lines otherwise; a live display where wanted
        (`live_allowed=False` for the long-running worker and `harvester runs`)."""
        stream = stream if stream is not None else sys.stderr
        live = live_allowed and wants_live(settings, stream)
        json_lines = not stream.isatty() and not live
        return cls(
            stream,
            json_lines=json_lines,
            level=settings.log_level,
            live=live,
            timestamps=timestamps,
            to_stdout=settings.to_stdout,
        )

    @contextlib.asynccontextmanager
    async def showing(
        self, stats: HarvestStats, gate: RateGate | None = None
    ) -> AsyncIterator[None]:
        """Show the live display (when this reporter is live) while the body runs."""
        self.stats = stats
        if not self.live:
            yield
            return
        self._console = make_console(self.stream, force_terminal=True)
        with LiveDisplay(self._console, stats, gate) as display:
            display.discovering = self._discovering
            self._display = display
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._redraw, display)
                    try:
                        yield
                    finally:
                        tg.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                # The body's own error (e.g. AuthRejected), not the task group's wrapper.
                raise unwrap(group) from None
            finally:
                self._display = None

    @staticmethod
    async def _redraw(display: LiveDisplay) -> None:
        while True:
            display.tick()
            await anyio.sleep(TICK)

    def event(self, event: str, message: str, **fields: Any) -> None:
        if self._gone:
            return
        try:
            self._write(event, message, fields)
        except BrokenPipeError:
            # Whoever read stderr went away (`2>&1 | head -1`). As with a stderr closed
            # from the start (`cli`), the messages are lost and the harvest goes on: its
            # files and its state say what happened.
            self._gone = True

    def _write(self, event: str, message: str, fields: dict[str, Any]) -> None:
        # A message quotes the API's words (a run's reason): shown, never obeyed by the
        # terminal (an ESC sequence in an error answer cleared it). The JSON fields keep
        # them exact, escaped by JSON.
        message = printable(message)
        if self.json_lines:
            doc = {
                "time": now_iso(),
                "level": LEVELS.get(event, "info"),
                "event": event,
                **fields,
                "message": message,
            }
            self.stream.write(orjson.dumps(doc).decode() + "\n")
        elif self._display is not None:
            # Printed above the live bar, which redraws below it.
            self._display.progress.console.print(
                f"harvester: {message}", markup=False, highlight=False
            )
            return
        else:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S ") if self.timestamps else ""
            self.stream.write(f"{stamp}harvester: {message}\n")
        self.stream.flush()

    # --- stopping ---------------------------------------------------------------------

    def discovering(self) -> None:
        """Discovery begins: the display and a stop say so."""
        self._discovering = True
        if self._display is not None:
            self._display.discovering = True

    def stopping(self, signum: int, grace: float) -> None:
        """The first signal: say at once what happens now."""
        name = signal_name(signum)
        again = "Ctrl-C" if signum == signal.SIGINT else name
        if self._discovering:
            what = "discovering, nothing written yet"
        else:
            runs = len(self._in_flight)
            what = (
                f"{plural(runs, 'run')} in flight get {grace:g} s" if runs else "nothing in flight"
            )
        self.event(
            "stopping",
            f"stopping ({name}): {what}; {again} again to stop now",
            signal=name,
            in_flight=sorted(self._in_flight),
        )

    def stopping_now(self, signum: int) -> None:
        name = signal_name(signum)
        self.event("stopping_now", f"{name} again: stopping now", signal=name)

    # --- run observer -------------------------------------------------------------------

    def run_started(self, run_id: int) -> None:
        self._in_flight.add(run_id)
        if self.level == "verbose":
            self.event("run_started", f"run {run_id}: started", run_id=run_id)

    def run_ended(self, outcome: RunOutcome) -> None:
        self._in_flight.discard(outcome.run_id)
        self._keep(outcome)
        if self.level == "quiet" and outcome.ok:
            return
        if outcome.ok:
            counts = outcome.summary.get("counts", {})
            missing = outcome.summary.get("missing_series", [])
            where = f" -> {outcome.path}" if outcome.path else ""
            gaps = f", {len(missing)} series missing" if missing else ""
            incomplete = "" if outcome.summary.get("complete", True) else " (incomplete)"
            self.event(
                "run_done",
                f"run {outcome.run_id}: {plural(sum(counts.values()), 'record')}"
                f"{gaps}{incomplete}{where}",
                run_id=outcome.run_id,
                counts=counts,
                missing_series=len(missing),
                complete=outcome.summary.get("complete", True),
                path=outcome.path,
            )
        else:
            self.event(
                "run_failed",
                f"run {outcome.run_id} failed: {outcome.reason}",
                run_id=outcome.run_id,
                reason=outcome.reason,
            )

    def _keep(self, outcome: RunOutcome) -> None:
        if not outcome.ok:
            self._failed[outcome.run_id] = {"run_id": outcome.run_id, "reason": outcome.reason}
            return
        self._failed.pop(outcome.run_id, None)
        self._kept_records.update(outcome.summary.get("counts", {}))
        self._kept_records["summary"] += 1
        # (the published file's size was counted: compressed, and 0 on s3://)
        self._kept_bytes += outcome.bytes

    def discovered(self, found: Discovery) -> None:
        """What discovery found; each run left for later is named with --verbose."""
        self._discovering = False
        if self._display is not None:
            self._display.discovering = False
        if self.level == "verbose":
            for pending in found.pending:
                self.event(
                    "run_pending",
                    f"run {pending.run_id}: left for later, {pending.reason}",
                    run_id=pending.run_id,
                    reason=pending.reason,
                )
        if self.level == "quiet":
            return
        outside = (
            f", {found.outside_window} outside --since/--until" if found.outside_window else ""
        )
        self.event(
            "discovered",
            f"discovery: {plural(found.found, 'run')}, {len(found.targets)} ready, "
            f"{len(found.pending)} still running or processing{outside} "
            f"({plural(found.requests, 'request')})",
            ready=len(found.targets),
            pending=len(found.pending),
            outside_window=found.outside_window,
            requests=found.requests,
        )

    # --- the end ------------------------------------------------------------------------

    def fatal(self, message: str, exit_status: int) -> None:
        """An error that ends the command, in JSON mode: a JSON line, then the summary
        (so a log pipeline can parse the last line): what was kept, the runs that failed,
        and how many the job did not reach (in flight or never started: a full disk ends
        a job of 6 runs after 2, which said "2 runs harvested, 0 failed" and counted the
        lines of the run it cut as kept)."""
        self.event("error", message, exit_status=exit_status)
        from .stats import HarvestStats

        stats = self.stats if self.stats is not None else HarvestStats()
        records, written = Counter(stats.records), stats.bytes_written
        if not self.to_stdout:
            records, written = self._kept_records, self._kept_bytes
        ended = stats.runs_done + stats.runs_failed
        # Ended before it knew its runs (discovery failed): how many is unknown, not 0.
        not_harvested = max(0, stats.runs_total - ended) if stats.runs_known else None
        failed = list(self._failed.values())
        self._summary_line(stats, records, written, failed, stats.runs_skipped, not_harvested)

    def finish(self, result: JobResult) -> None:
        if result.interrupted_by is not None:
            name = signal_name(result.interrupted_by)
            self.event(
                "interrupted",
                f"stopped by {name}: {plural(len(result.not_done), 'run')} not harvested "
                "(no partial files left; run the same command again to finish)",
                signal=name,
                not_done=result.not_done,
            )
        seconds = time.monotonic() - self.started  # the whole job, discovery included
        records, written = self.kept(result)
        if self.live:
            console = make_console(self.stream, force_terminal=True)
            summary_table(console, result, seconds, records, written)
            return
        failed = [{"run_id": o.run_id, "reason": o.reason} for o in result.report.failed]
        skipped, not_done = len(result.skipped), len(result.not_done)
        self._summary_line(result.stats, records, written, failed, skipped, not_done, seconds)

    def kept(self, result: JobResult) -> tuple[Counter[str], int]:
        """Records and bytes (of lines, before compression) that were kept: on stdout
        every line written; in a directory or bucket only the runs published (a failed or
        stopped run's file is removed)."""
        whole = result.interrupted_by is None and not result.report.failed
        if self.to_stdout or whole:
            return Counter(result.stats.records), result.stats.bytes_written
        return self._kept_records, self._kept_bytes

    def _summary_line(
        self,
        stats: HarvestStats,
        records: Counter[str],
        written: int,
        failed: list[dict[str, Any]],
        skipped: int,
        not_harvested: int | None,
        seconds: float | None = None,
    ) -> None:
        seconds = time.monotonic() - self.started if seconds is None else seconds
        total = sum(records.values())
        unreached = f", {not_harvested} not harvested" if not_harvested else ""
        if not_harvested is None:
            unreached = ", how many not harvested unknown (it ended before it knew its runs)"
        self.event(
            "summary",
            f"{plural(stats.runs_done, 'run')} harvested, {len(failed)} failed, "
            f"{skipped} already done{unreached}; {plural(stats.request_count, 'request')}, "
            f"{plural(total, 'record')}, {written / 1e6:.1f} MB in {seconds:.1f} s "
            f"({plural(stats.retries, 'retry', 'retries')}, {stats.throttled} throttled)",
            runs_done=stats.runs_done,
            runs_failed=len(failed),
            runs_skipped=skipped,
            runs_not_harvested=not_harvested,
            requests=stats.request_count,
            records=total,
            bytes=written,
            seconds=round(seconds, 3),
            retries=stats.retries,
            throttled=stats.throttled,
            failed=failed,
        )
