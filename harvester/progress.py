"""What people and log collectors see on stderr: progress, per-run events and a summary.

Chosen once at start-up (`Reporter.for_settings`): on a TTY a live rich display (runs
done/total, requests, records, request rate against the limit, retries, ETA) and a summary
table at the end; otherwise one JSON object a line (cron, Kubernetes). Everything goes to
stderr, so stdout stays pure NDJSON in `--out -` mode. rich is imported only when a
display is actually shown: `harvester --version` must start fast.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, TextIO

import anyio
import orjson

from .errors import unwrap

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from .config import Settings
    from .discovery import Discovery
    from .job import JobResult
    from .ratelimit import RateGate
    from .scheduler import RunOutcome
    from .stats import HarvestStats

#: Seconds between redraws of the live display, and the window the request rate is
#: measured over.
TICK = 0.2
#: Seconds over which the shown request rate is measured. Answers arrive in bunches, so
#: a window can hold one more than R x window of them: 10 s keeps that under 0.1 req/s
#: (3 s showed "4.3/4 req/s" under a limit of 4 that was kept).
RATE_WINDOW = 10.0


def wants_live(settings: Settings, stream: TextIO) -> bool:
    """`--progress on`, or `auto` on a TTY unless `--quiet` or the NDJSON itself is
    going to the same terminal (the display would be torn by it)."""
    if settings.progress == "on":
        return True
    if settings.progress != "auto" or settings.log_level == "quiet" or not stream.isatty():
        return False
    return not (settings.to_stdout and sys.stdout.isatty())


def make_console(stream: TextIO, *, force_terminal: bool | None = None) -> Console:
    from rich.console import Console

    if stream is sys.stderr:
        return Console(stderr=True, force_terminal=force_terminal)
    return Console(file=stream, force_terminal=force_terminal)


class LiveDisplay:
    """A rich progress bar on stderr, redrawn from the event loop (no refresh thread, so
    the counters are only ever read on the loop that updates them)."""

    def __init__(self, console: Console, stats: HarvestStats, gate: RateGate | None) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.stats = stats
        self.gate = gate
        # redirect_stdout=False: with rich's default the NDJSON on stdout was captured
        # into the display and a redirected `--out -` file came out empty (STYLE.md #14).
        self.progress: Progress = Progress(
            TextColumn("[bold]runs"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeRemainingColumn(),
            console=console,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self.task: TaskID = self.progress.add_task("harvest", total=None, detail="discovering")
        self._samples: deque[tuple[float, int]] = deque()

    def request_rate(self, now: float) -> float:
        """Requests per second over the last `RATE_WINDOW` seconds (over at least one
        second, so the first request alone does not read as a burst)."""
        count = self.stats.request_count
        self._samples.append((now, count))
        while now - self._samples[0][0] > RATE_WINDOW:
            self._samples.popleft()
        first_at, first_count = self._samples[0]
        return (count - first_count) / max(now - first_at, 1.0)

    def detail(self, now: float) -> str:
        s = self.stats
        limit = f"/{self.gate.current:g}" if self.gate is not None else ""
        paused = self.gate.paused_for if self.gate is not None else 0.0
        text = (
            f"{s.request_count} req  {self.request_rate(now):.1f}{limit} req/s  "
            f"{s.record_count} records  {s.retries} retries"
        )
        if s.runs_failed:
            text += f"  {s.runs_failed} failed"
        if paused > 0:
            text += f"  paused {paused:.0f}s (429)"
        return text

    def tick(self, now: float) -> None:
        s = self.stats
        total = s.runs_total or None
        done = s.runs_done + s.runs_failed
        self.progress.update(self.task, total=total, completed=done, detail=self.detail(now))
        self.progress.refresh()

    def __enter__(self) -> LiveDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.tick(time.monotonic())
        self.progress.stop()


class Reporter:
    """Observer of a harvest (see `scheduler.RunObserver`) that writes to stderr."""

    def __init__(
        self, stream: TextIO, *, json_lines: bool, level: str = "info", live: bool = False
    ) -> None:
        self.stream = stream
        self.json_lines = json_lines
        self.level = level
        self.live = live
        self._console: Console | None = None
        self._display: LiveDisplay | None = None
        self.started = time.monotonic()  # the summary's time: discovery included

    @classmethod
    def for_settings(
        cls, settings: Settings, stream: TextIO | None = None, *, live_allowed: bool = True
    ) -> Reporter:
        """Lines for people on a TTY, JSON lines otherwise; a live display where wanted
        (`live_allowed=False` for the long-running worker and `harvester runs`)."""
        stream = stream if stream is not None else sys.stderr
        live = live_allowed and wants_live(settings, stream)
        json_lines = not stream.isatty() and not live
        return cls(stream, json_lines=json_lines, level=settings.log_level, live=live)

    @contextlib.asynccontextmanager
    async def showing(
        self, stats: HarvestStats, gate: RateGate | None = None
    ) -> AsyncIterator[None]:
        """Show the live display (when this reporter is live) while the body runs."""
        if not self.live:
            yield
            return
        self._console = make_console(self.stream, force_terminal=True)
        with LiveDisplay(self._console, stats, gate) as display:
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
            display.tick(time.monotonic())
            await anyio.sleep(TICK)

    def event(self, event: str, message: str, **fields: Any) -> None:
        if self.json_lines:
            doc = {"ts": round(time.time(), 3), "event": event, **fields, "message": message}
            self.stream.write(orjson.dumps(doc).decode() + "\n")
        elif self._display is not None:
            # Printed above the live bar, which redraws below it.
            self._display.progress.console.print(
                f"harvester: {message}", markup=False, highlight=False
            )
            return
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
            incomplete = "" if outcome.summary.get("complete", True) else " (incomplete)"
            self.event(
                "run_done",
                f"run {outcome.run_id}: {sum(counts.values())} records{gaps}{incomplete}{where}",
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

    def discovered(self, found: Discovery) -> None:
        """What discovery found; each run left for later is named with --verbose."""
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
            f"discovery: {found.found} runs, {len(found.targets)} ready, "
            f"{len(found.pending)} still running or processing{outside} "
            f"({found.requests} requests)",
            ready=len(found.targets),
            pending=len(found.pending),
            outside_window=found.outside_window,
            requests=found.requests,
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
        seconds = time.monotonic() - self.started  # the whole job, discovery included
        if self.live:
            summary_table(make_console(self.stream, force_terminal=True), result, seconds)
            return
        stats = result.stats
        failed = result.report.failed
        self.event(
            "summary",
            f"{stats.runs_done} runs harvested, {len(failed)} failed, "
            f"{len(result.skipped)} already done; {stats.request_count} requests, "
            f"{stats.record_count} records, {stats.bytes_written / 1e6:.1f} MB "
            f"in {seconds:.1f} s ({stats.retries} retries, {stats.throttled} throttled)",
            runs_done=stats.runs_done,
            runs_failed=len(failed),
            runs_skipped=len(result.skipped),
            requests=stats.request_count,
            records=stats.record_count,
            bytes=stats.bytes_written,
            seconds=round(seconds, 3),
            retries=stats.retries,
            throttled=stats.throttled,
            failed=[{"run_id": o.run_id, "reason": o.reason} for o in failed],
        )


# --- tables -----------------------------------------------------------------------------


def summary_table(console: Console, result: JobResult, seconds: float) -> None:
    """The closing summary for people: totals, then one line per failed run."""
    from rich.table import Table

    s = result.stats
    table = Table(title="harvest summary", show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("value", justify="right")
    rate = s.request_count / seconds if seconds > 0 else 0.0
    rows = [
        ("runs harvested", f"{s.runs_done}"),
        ("runs failed", f"{len(result.report.failed)}"),
        ("already archived", f"{len(result.skipped)}"),
        ("requests", f"{s.request_count} ({rate:.1f}/s)"),
        ("records", f"{s.record_count}"),
        *((f"  {kind}", f"{n}") for kind, n in sorted(s.records.items())),
        ("bytes written", f"{s.bytes_written / 1e6:.1f} MB"),
        ("retries", f"{s.retries}"),
        ("throttled (429)", f"{s.throttled}"),
        ("time", f"{seconds:.1f} s"),
    ]
    for what, value in rows:
        table.add_row(what, value)
    console.print(table)
    for outcome in result.report.failed:
        console.print(f"run {outcome.run_id} failed: {outcome.reason}", markup=False)


#: (row key, column header) of `harvester runs` on a TTY.
RUN_COLUMNS = (
    ("test_run_id", "run"),
    ("test_id", "test"),
    ("project_id", "project"),
    ("created", "created"),
    ("run_status", "status"),
    ("processing_status", "processing"),
    ("action", "action"),
    ("reason", "why"),
)


def runs_table(stream: TextIO, rows: Sequence[dict[str, Any]]) -> None:
    """`harvester runs` on a TTY: one row per discovered run."""
    from rich.table import Table

    table = Table(*(header for _, header in RUN_COLUMNS))
    for row in rows:
        table.add_row(*("" if row.get(key) is None else str(row[key]) for key, _ in RUN_COLUMNS))
    make_console(stream).print(table)
