"""`harvester worker`: discover, harvest what is new, sleep, again, until SIGTERM.

One rate gate and one set of counters serve every cycle, so the limit holds across
cycles and `/metrics` counts since start. The state file's lock and the output
directory's are held for the worker's whole life (a one-shot job on the same archive is
refused, even between cycles, whatever its --state); its
database is opened per cycle, so a filesystem that went read-only and came back is
picked up again. A cycle that fails (API outage, retries exhausted, a full disk, a
read-only or busy state file: `StateUnavailable`) is logged and counted, and the next
one comes after a backoff that grows up to the interval: transient errors never end the
worker. A rejected token (`AuthRejected`) and broken settings or state (`ConfigError`,
any other `StateError`) do, since waiting will not fix them. The first SIGTERM/SIGINT
(or SIGHUP: `stopsignals.py`) stops cleanly: no new cycle or run starts, runs in flight
get `grace` seconds; a second one stops at once. A cycle cut short so is neither done
nor failed (`cycle_stopped`).

Health: `GET /healthz` is 200 while the loop runs and has shown a sign of life (a cycle
began or ended, a run started or ended, a request was answered) within `stale_after`
seconds (default 2 x interval + max_retry_after + request_timeout: the longest a healthy
worker stays quiet), 503 otherwise. `GET /metrics` is the Prometheus text format.
"""

from __future__ import annotations

import gc
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskStatus

from .config import Settings
from .discovery import Discovery, Selection, discover_runs, has_selectors, parse_duration
from .endpoints import serve_endpoints
from .errors import AuthRejected, ConfigError, HarvesterError, StateError, StateUnavailable, unwrap
from .job import SHUTDOWN_GRACE, JobResult, harvest_job, lock_output_dir, open_state, state_path
from .progress import Reporter, signal_name
from .ratelimit import RateGate
from .scheduler import RunOutcome
from .state_file import StateLock
from .stats import HarvestStats
from .stopsignals import STOP_SIGNALS
from .tables import plural
from .telemetry import Telemetry, WorkerStatus

#: Errors that waiting will not fix: the worker ends with their exit status.
FATAL = (AuthRejected, ConfigError, StateError)


@dataclass
class WorkerResult:
    cycles: int
    failed_cycles: int
    stopped_by: int | None  # the signal that stopped the worker, if any
    #: The runs a second signal cut short (in flight then): harvested by the next start.
    cut: list[int] = field(default_factory=list)


class Worker:
    """The loop and its health/metrics endpoints; `await worker.run()` until stopped."""

    def __init__(
        self,
        settings: Settings,
        *,
        reporter: Reporter | None = None,
        handle_signals: bool = True,
        grace: float = SHUTDOWN_GRACE,
        stale_after: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        Selection.from_settings(settings)  # bad dates fail now, not in the first cycle
        if not has_selectors(settings):
            raise ConfigError(
                "the worker needs something to watch: give --project P or --test T "
                "(or --organization O, --all-projects)"
            )
        if settings.to_stdout:
            raise ConfigError(
                "the worker needs --out DIR: it keeps an archive and its state there "
                "(to stream runs to stdout, use `harvester harvest --out -`)"
            )
        self.settings = settings
        self.interval = parse_duration(settings.interval, "--interval")
        self.stale_after = stale_after or (
            2 * self.interval + settings.max_retry_after + settings.request_timeout
        )
        self.reporter = reporter or Reporter(sys.stderr, json_lines=True, level="info")
        self.handle_signals = handle_signals
        self.grace = grace
        self.clock = clock
        self.stats = HarvestStats()
        self.reporter.stats = self.stats  # for the summary after a fatal error
        self.gate = RateGate.for_settings(settings)
        self.status = WorkerStatus()
        self.telemetry = Telemetry(self.stats, self.status, self.gate)
        self.port: int | None = None
        self.stopped_by: int | None = None
        self._stop = anyio.Event()
        self._alive = False
        self._failures = 0
        self._beat = clock()
        self._requests_seen = 0
        self._harvested: set[int] = set()
        self._in_flight: set[int] = set()
        self._cut: list[int] = []  # (what a second signal cut: `WorkerResult.cut`)
        self._discovery_scope: anyio.CancelScope | None = None
        self._lock: StateLock | None = None
        self._now: anyio.CancelScope  # (made in `run`: a second signal cancels it)

    # --- control --------------------------------------------------------------------

    def stop(self) -> None:
        """Finish the current cycle's runs in flight (within `grace`) and end the loop;
        a discovery under way is cut short (it has written nothing)."""
        self._stop.set()
        if self._discovery_scope is not None:
            self._discovery_scope.cancel()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def run(
        self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED
    ) -> WorkerResult:
        """Take the state's lock, serve the endpoints, report the bound port through
        `task_status`, loop; then say it stopped. The stop signals are watched from
        before the lock is taken until that last line: asyncio puts SIG_DFL back when a
        receiver closes, so a signal before the watch began (right after `listening`) or
        after it ended (a third Ctrl-C during a second one's cleanup) killed the worker,
        exit -15, its runs left `running`."""
        self._now = anyio.CancelScope()
        try:
            async with anyio.create_task_group() as tg:
                if self.handle_signals:
                    await tg.start(self._watch_signals)
                result = await self._locked_run(task_status)
                self._say_stopped(result)
                tg.cancel_scope.cancel()
        except ExceptionGroup as group:
            raise unwrap(group) from None
        return result

    async def _locked_run(self, task_status: TaskStatus[int]) -> WorkerResult:
        path = state_path(self.settings)
        assert path is not None  # the worker always has --out
        self._lock = StateLock.acquire(path)
        try:
            with lock_output_dir(self.settings):  # whatever --state says
                await self._serve_and_loop(task_status)
        finally:
            self._lock.release()
            self._lock = None
        return WorkerResult(
            self.status.cycles, self.status.failed_cycles, self.stopped_by, self._cut
        )

    async def _serve_and_loop(self, task_status: TaskStatus[int]) -> None:
        async with serve_endpoints(self) as port:
            self.port = port
            host = self.settings.listen_host
            self.reporter.event(
                "listening", f"serving /healthz and /metrics on {host}:{port}", port=port
            )
            task_status.started(port)
            with self._now:  # (a second signal cancels it)
                await self._loop()

    async def _watch_signals(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """The first signal stops the loop gently, the second cuts its runs now; later
        ones change nothing (the stop is under way), and the receiver stays open."""
        with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
            task_status.started()
            async for signum in signals:
                if self.stopped_by is None:
                    self.stopped_by = signum
                    self.reporter.stopping(signum, self.grace)
                    self.stop()
                    continue
                self.reporter.stopping_now(signum)
                if not self._now.cancel_called:
                    self._cut = sorted(self._in_flight)
                    self._now.cancel()

    def _say_stopped(self, result: WorkerResult) -> None:
        # A second signal's runs are named: the line said only "0 cycles (0 failed)".
        cut = f"; cut short, harvested again by the next start: {', '.join(map(str, result.cut))}"
        self.reporter.event(
            "stopped",
            f"worker stopped after {plural(result.cycles, 'cycle')} "
            f"({result.failed_cycles} failed)" + (cut if result.cut else ""),
            cycles=result.cycles,
            failed_cycles=result.failed_cycles,
            signal=signal_name(result.stopped_by) if result.stopped_by is not None else None,
            cut_short=result.cut,
        )

    # --- health ---------------------------------------------------------------------

    def beat(self) -> None:
        self._beat = self.clock()

    def healthy(self) -> bool:
        """The loop runs and has shown a sign of life within `stale_after` seconds."""
        if self.stats.request_count != self._requests_seen:
            self._requests_seen = self.stats.request_count
            self.beat()
        return self._alive and self.clock() - self._beat <= self.stale_after

    def health(self) -> dict[str, object]:
        ok = self.healthy()
        return {
            "status": "ok" if ok else ("stale" if self._alive else "stopped"),
            "cycles": self.status.cycles,
            "failed_cycles": self.status.failed_cycles,
            "last_success": self.status.last_success,
            "quiet_seconds": round(self.clock() - self._beat, 3),
            "stale_after": self.stale_after,
        }

    # run observer: a run starting or ending is a sign of life
    def run_started(self, run_id: int) -> None:
        self.beat()
        self._in_flight.add(run_id)

    def run_ended(self, outcome: RunOutcome) -> None:
        self.beat()
        self._in_flight.discard(outcome.run_id)
        if outcome.ok:
            self._harvested.add(outcome.run_id)

    # --- the loop -------------------------------------------------------------------

    async def _loop(self) -> None:
        self._alive = True
        try:
            while not self.stopping:
                wait = await self._cycle()
                if self.stopping or wait is None:
                    break
                # The cycle's garbage goes now, while the worker waits, not at the rare
                # full collection `cli.run_async`'s thresholds leave: an S3 cycle's
                # closed client and session are ~55,000 cyclic objects (235 MB after
                # 400 cycles, ~100 MB so).
                gc.collect()
                with anyio.move_on_after(wait):
                    await self._stop.wait()
        finally:
            self._alive = False

    async def _cycle(self) -> float | None:
        """One discover-and-harvest; returns the seconds to wait before the next, or None
        when a stop cut the cycle short (it neither succeeded nor failed)."""
        self.beat()
        started = time.monotonic()
        # Whether the API answered is asked of this cycle: a token that read everything
        # yesterday and nothing today ends the worker; a harvest that meets 403s or
        # timeouts after this cycle's discovery was answered fails its runs instead.
        self.stats.answered = self.stats.allowed = False
        found: Discovery | None = None
        result: JobResult | None = None
        error: str | None = None
        try:
            found, result = await self._discover_and_harvest()
        except StateUnavailable as exc:  # a full disk, a read-only filesystem: wait it out
            error = str(exc)
        except FATAL:
            raise
        except (HarvesterError, OSError) as exc:
            error = str(exc)
        self.beat()
        if error is None and self.stopping and (found is None or (result and result.not_done)):
            self._log_cycle("cycle_stopped", "cycle stopped", started, found, result, 0.0)
            return None
        self.status.cycles += 1
        self.status.last_cycle_seconds = time.monotonic() - started
        if error is None and result is not None and result.report.failed:
            error = f"{plural(len(result.report.failed), 'run')} failed"
        if error is None and found is not None and found.not_found:
            error = "; ".join(found.not_found)
        if error is None:
            self._failures = 0
            self.status.last_success = time.time()
            wait, event, message = self.interval, "cycle_done", "cycle done"
        else:
            self._failures += 1
            self.status.failed_cycles += 1
            wait, event, message = self.backoff(), "cycle_failed", f"cycle failed ({error})"
        self._log_cycle(event, message, started, found, result, wait)
        return wait

    def backoff(self) -> float:
        """After n failed cycles in a row: backoff_cap x 2^(n-1), jittered, at most the
        interval (an outage is retried sooner than the next scheduled cycle)."""
        ceiling = min(self.interval, self.settings.backoff_cap * 2 ** (self._failures - 1))
        return random.uniform(ceiling / 2, ceiling)

    async def _discover_and_harvest(self) -> tuple[Discovery | None, JobResult | None]:
        """(what discovery found, what the harvest did); (None, None) when a stop cut the
        discovery short. The state is opened per cycle under the lock held for life."""
        selection = Selection.from_settings(self.settings)  # "7d" moves with the clock
        with open_state(self.settings, self._lock) as state:
            found: Discovery | None = None
            with anyio.CancelScope() as self._discovery_scope:
                if not self.stopping:
                    found = await discover_runs(
                        self.settings, selection, gate=self.gate, stats=self.stats, state=state
                    )
            if found is None or self.stopping:
                return None, None
            self.status.pending_runs = len(found.pending)
            if self.reporter.level == "verbose":  # otherwise the cycle line says enough
                self.reporter.discovered(found)
            todo = [t for t in found.targets if t.run_id not in self._harvested]
            if not todo:
                return found, None
            result = await harvest_job(
                self.settings,
                todo,
                observers=[self, self.reporter],
                stats=self.stats,
                gate=self.gate,
                grace=self.grace,
                stop=self._stop,
                state=state,
                notify=self.reporter.event,
                out_locked=True,
            )
        self._harvested.update(result.skipped)  # archived already: not asked about again
        return found, result

    def _log_cycle(
        self,
        event: str,
        message: str,
        started: float,
        found: Discovery | None,
        result: JobResult | None,
        wait: float,
    ) -> None:
        done = len(result.report.succeeded) if result else 0
        failed = len(result.report.failed) if result else 0
        # A cycle stopped during discovery has not counted the runs waiting, and a stopped
        # worker has no next cycle: neither is said as a 0.
        text = f"{message}: {plural(done, 'run')} harvested, {failed} failed"
        text += f", {len(found.pending)} waiting" if found else ""
        text += "" if event == "cycle_stopped" else f"; next cycle in {_seconds(wait)}"
        self.reporter.event(
            event,
            text,
            cycle=self.status.cycles,
            runs_done=done,
            runs_failed=failed,
            pending=len(found.pending) if found else None,
            seconds=round(time.monotonic() - started, 3),
            next_in=round(wait, 3),
        )


def _seconds(wait: float) -> str:
    """`--interval 0.5s` waits half a second, not '0 s'."""
    return f"{wait:.0f} s" if wait >= 10 else f"{wait:.2g} s"


async def run_worker(settings: Settings, reporter: Reporter | None = None) -> WorkerResult:
    """The CLI's entry: a worker with signal handling, run until stopped."""
    return await Worker(settings, reporter=reporter).run()
