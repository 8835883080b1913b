"""One harvest, callable from Python: wire state, transport, API, sink and scheduler, then run.

The CLI is a thin layer over `harvest_job`; tests and the worker call it directly.
Runs already archived are skipped (the output file is the truth), and SIGINT/SIGTERM
stop the job cleanly: no new runs start, runs in flight get `grace` seconds to finish,
the rest leave no partial file behind and are harvested again next time.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import anyio

from . import outdir
from .archived import Notify, archived_short, places_for, split_done, warn_short
from .backends.choose import backend_for
from .config import Settings
from .errors import HarvesterError, StateError, unwrap
from .formats.singer import SingerEncoder
from .formats.singer_state import DoneRuns
from .formats.singer_state import read_state as read_singer_state
from .layout import Places
from .manifest import job_facts
from .objectstore import ObjectSink, StoreCut, default_state_path
from .ratelimit import RateGate
from .scheduler import HarvestReport, RunObserver, RunTarget, Scheduler
from .sinks import (
    DirectorySink,
    Sink,
    prepare_output_dir,
    writing_to,
)
from .state import STATE_FILE_NAME, HarvestState
from .state_file import StateLock
from .stats import HarvestStats
from .stopsignals import StopSignals
from .streamsink import StreamSink
from .transport import Transport

SHUTDOWN_GRACE = 10.0


@dataclass
class JobResult:
    report: HarvestReport
    stats: HarvestStats
    seconds: float
    skipped: list[int] = field(default_factory=list)
    not_done: list[int] = field(default_factory=list)
    interrupted_by: int | None = None  # the signal that stopped the job, if any
    #: Selected projects or tests the API does not know, one line each (exit status 1).
    not_found: list[str] = field(default_factory=list)


def lock_output_dir(settings: Settings) -> contextlib.AbstractContextManager[object]:
    """The output directory, created if need be, locked (`OutputBusy` if another holds it).
    An object store has no lock: create-only writes keep its jobs apart."""
    if settings.to_object_store:
        return contextlib.nullcontext()
    out_dir = prepare_output_dir(settings.out)
    with writing_to(out_dir):
        return outdir.DirectoryLock(out_dir)


@contextlib.contextmanager
def make_sink(
    settings: Settings,
    stdout: BinaryIO | None = None,
    *,
    locked: bool = False,
    places: Places | None = None,
    done: DoneRuns | None = None,
) -> Iterator[Sink]:
    """The sink for the job, with the output directory's lock held while it is open (a
    second job on the directory is refused with `OutputBusy`); `locked`: the caller
    holds it already (the worker, for its whole life); `done`: runs a Singer state
    listed, carried into the STATE messages of --format singer."""
    if settings.to_stdout:
        singer = settings.format == "singer"
        encoder = SingerEncoder(done, settings.singer_streams) if singer else None
        yield StreamSink(stdout if stdout is not None else sys.stdout.buffer, encoder=encoder)
        return
    if settings.to_object_store:
        yield ObjectSink(settings, places=places)
        return
    lock = contextlib.nullcontext() if locked else lock_output_dir(settings)
    with lock:
        yield DirectorySink(
            Path(settings.out),
            settings.file_mode_bits,
            replace=settings.force,
            codec=settings.compress,
            level=settings.compress_level,
            facts=job_facts(settings),
            output_format=settings.format,
            places=places if places is not None else places_for(settings),
        )


def state_path(settings: Settings) -> Path | None:
    """--state, or beside the output files; stdout mode keeps no state unless asked."""
    if settings.state:
        return Path(settings.state)
    if settings.to_object_store:
        return default_state_path(settings.out)
    return None if settings.to_stdout else Path(settings.out) / STATE_FILE_NAME


@contextlib.contextmanager
def open_state(settings: Settings, lock: StateLock | None = None) -> Iterator[HarvestState | None]:
    """The job's state (None in stdout mode without --state); `lock`: already held."""
    if settings.on_disk:
        prepare_output_dir(settings.out)  # a bad --out is named as such, not as its state
    path = state_path(settings)
    if path is None:
        yield None
        return
    with HarvestState.open(path, lock) as state:
        yield state


def remove_leftovers(settings: Settings) -> int:
    """Partial files (NDJSON and CSV) that a crashed harvester left behind. Whatever
    --state says: a partial file is removed only when no live process holds its flock
    (`outdir`), so this never touches a file another harvester is writing."""
    if not settings.on_disk:
        return 0
    return outdir.remove_leftovers(Path(settings.out))


async def harvest_job(
    settings: Settings,
    targets: Sequence[RunTarget],
    *,
    stdout: BinaryIO | None = None,
    observers: Sequence[RunObserver] = (),
    stats: HarvestStats | None = None,
    gate: RateGate | None = None,
    signals: StopSignals | None = None,
    grace: float = SHUTDOWN_GRACE,
    stop: anyio.Event | None = None,
    state: HarvestState | None = None,
    notify: Notify | None = None,
    out_locked: bool = False,
) -> JobResult:
    """Harvest `targets` as `settings` say and return what happened. One failed run does
    not raise; a rejected token raises `AuthRejected`, bad settings `ConfigError`.
    `signals`: the command's stop signals (`stopsignals.watching_stop_signals`): the first
    starts no more runs and gives those in flight `grace` seconds, a second cuts them.
    Setting `stop` (the worker's own signal handling) acts like a first signal. `state`:
    the caller's open state (else the job opens the one `settings` name); `notify` hears
    of archived runs that lack what is asked; `out_locked`: the caller holds the output
    directory's lock (`lock_output_dir`)."""
    stats = stats if stats is not None else HarvestStats()
    gate = gate if gate is not None else RateGate.for_settings(settings)
    started = time.monotonic()
    # One target per run: two tasks must never share a run's temporary file.
    targets = list({target.run_id: target for target in targets}.values())
    opened: contextlib.AbstractContextManager[HarvestState | None] = (
        contextlib.nullcontext(state) if state is not None else open_state(settings)
    )
    places = places_for(settings)
    resumed = read_singer_state(settings.singer_state) if settings.singer_state else None
    async with contextlib.AsyncExitStack() as stack:
        sink = stack.enter_context(
            make_sink(settings, stdout, locked=out_locked, places=places, done=resumed)
        )
        state = stack.enter_context(opened)
        remove_leftovers(settings)
        try:
            first, cut = (signals.first, signals.again) if signals else (stop, None)
            stored = await _open_store(sink, targets, stack, cut, first)
        except StoreCut:  # (only a second stop signal cuts: `signals` is there)
            return JobResult(HarvestReport(), stats, time.monotonic() - started,
                             not_done=[t.run_id for t in targets],
                             interrupted_by=signals.signum if signals else None)  # fmt: skip
        todo, skipped = split_done(settings, targets, state, stored, places, resumed)
        if notify is not None:
            warn_short(archived_short(settings, skipped, state, places), notify)
        stats.runs_total += len(todo)
        stats.runs_known = True
        stats.runs_skipped += len(skipped)
        # The state first: a run published is recorded even if a later observer fails
        # (the reporter, on a closed stderr).
        watchers = [*([state] if state else []), *observers]
        async with Transport(settings, gate=gate, stats=stats) as transport:
            backend = backend_for(settings, transport)
            spool = sink.spool if isinstance(sink, ObjectSink) else None
            fetcher = backend.fetcher(places, spool)  # bad --method first: before any request
            with signals.cutting() if signals else contextlib.nullcontext():
                await backend.prepare()  # (v6: may ask the stack id: nothing written yet)
            scheduler = Scheduler(settings, fetcher, sink, stats, watchers, places)
            now = None
            if signals is not None:
                stop, now = signals.first, signals.again
            try:
                await _run(scheduler, todo, grace, stop, now)
            except StoreCut:
                pass  # the store's requests that the second signal cut: the job was stopped
            except BaseException as exc:
                _cut_short(state, exc)
                raise
            interrupted = signals.signum if signals else None
            _cut_short(state, interrupted)
            if interrupted is None:
                await backend.after_job()
    done = {o.run_id for o in scheduler.report.outcomes}
    return JobResult(
        scheduler.report,
        stats,
        time.monotonic() - started,
        skipped=skipped,
        not_done=[t.run_id for t in todo if t.run_id not in done],
        interrupted_by=interrupted,
    )


def _cut_short(state: HarvestState | None, why: BaseException | int | None) -> None:
    """Record the runs the job started and did not finish as failed, saying why: the
    job's error (a closed stdout), the signal, or a stop. A state that cannot be written
    now does not hide the error that ended the job."""
    if state is None:
        return
    if isinstance(why, HarvesterError):
        reason = f"cut short: {why}"
    elif isinstance(why, int):
        reason = f"cut short: stopped by {signal.Signals(why).name}"
    else:
        reason = "cut short: the job stopped before it finished"
    with contextlib.suppress(StateError):
        state.cut_short(reason)


async def _open_store(
    sink: Sink,
    targets: Sequence[RunTarget],
    stack: contextlib.AsyncExitStack,
    cut: anyio.Event | None,
    stop: anyio.Event | None,
) -> set[int] | None:
    """For an object store: connect, check the bucket, and say which runs are stored.
    `cut` (a second stop signal) gives its requests a few seconds more at most; `stop` (a
    first one) ends its wait for other jobs (`ObjectSink.survey`): no run starts then."""
    if not isinstance(sink, ObjectSink):
        return None
    # Closed also when the job fails before its writer ends.
    await stack.enter_async_context(sink)
    if cut is not None:
        sink.hurry_on(cut)
    stored = await sink.survey((t.run_id for t in targets), stop)
    # (made meanwhile: a store that refuses leases is said before any run is fetched)
    await sink.lease_made()
    return stored


async def _run(
    scheduler: Scheduler,
    todo: list[RunTarget],
    grace: float,
    stop: anyio.Event | None,
    now: anyio.Event | None,
) -> None:
    """The harvest; once `stop` is set, no new runs, and those in flight are cut after
    `grace` seconds, or when `now` is set."""
    try:
        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as harvest_scope:
                if stop is not None:
                    if stop.is_set():  # before the harvest began: it starts nothing
                        scheduler.stop()
                    tg.start_soon(_watch_stop, scheduler, harvest_scope, grace, stop, now)
                await scheduler.harvest(todo)
            tg.cancel_scope.cancel()  # the harvest is over: stop watching
    except ExceptionGroup as group:
        # A store's failure wins over the requests the second signal cut (`StoreCut`):
        # the job stopped only when nothing but the cut went wrong.
        _, failed = group.split(StoreCut)
        raise unwrap(failed or group) from None


async def _watch_stop(
    scheduler: Scheduler,
    harvest_scope: anyio.CancelScope,
    grace: float,
    stop: anyio.Event,
    now: anyio.Event | None,
) -> None:
    await stop.wait()
    scheduler.stop()
    # Runs in flight may finish within the grace period; a second signal ends it now.
    with anyio.move_on_after(grace):
        await (now or anyio.Event()).wait()
    harvest_scope.cancel()
