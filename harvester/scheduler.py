"""The orchestrator: fans out over runs, feeds one writer through a bounded channel.

Data flows one way: targets -> a fixed pool of run workers (at most `runs_in_flight` runs
at once) -> the API's `RunFetcher` (`backends/`: v2's `RunHarvest`, or v6) -> records ->
bounded memory object stream -> one writer task -> sink. A run counts as done only after
its sink has committed it; observers (the state file, progress) hear of it from the
writer, never earlier.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .api import JsonObject
from .backends.base import RunFetcher
from .channel import Channel
from .config import Settings
from .errors import JOB_FATAL, HarvesterError, describe, unwrap
from .layout import Places
from .provenance import harvest_block
from .records import Lines, Message, RunFailed, RunFinished, RunStarted, encode
from .retry import RetryBudget, current_budget
from .sinks import Sink
from .stats import HarvestStats


@dataclass(frozen=True)
class RunTarget:
    """A run to harvest; `run` is its `k6-run` object when discovery already has it."""

    run_id: int
    run: JsonObject | None = None
    incomplete_reason: str | None = None


@dataclass
class RunOutcome:
    run_id: int
    ok: bool
    reason: str | None = None
    path: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    #: Bytes of the run's lines (before compression): what the summary counts of it.
    bytes: int = 0


#: Finished runs waiting for their commit; each holds only a file handle.
PUBLISH_QUEUE = 64
#: Runs committed at once. A commit mostly waits on fsyncs, which the disk serves
#: together; one at a time fell behind the fetchers on a busy disk (medium: 25 of 40 runs
#: still to commit when the last answer came, half a second of the job's wall time).
COMMITS_AT_ONCE = 4


async def _next(receive: MemoryObjectReceiveStream[Message]) -> Message | None:
    """The next message, without yielding to the event loop while one is queued (a
    plain `receive()` yields first, letting fetchers parse more before each write)."""
    try:
        return receive.receive_nowait()
    except anyio.WouldBlock:
        try:
            return await receive.receive()
        except anyio.EndOfStream:
            return None
    except anyio.EndOfStream:
        return None


class RunObserver(Protocol):
    def run_started(self, run_id: int) -> None: ...
    def run_ended(self, outcome: RunOutcome) -> None: ...


@dataclass
class HarvestReport:
    outcomes: list[RunOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def succeeded(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.ok]


class Scheduler:
    """Harvests a list of runs into one sink."""

    def __init__(
        self,
        settings: Settings,
        fetcher: RunFetcher,
        sink: Sink,
        stats: HarvestStats,
        observers: Sequence[RunObserver] = (),
        places: Places | None = None,
    ) -> None:
        self.settings = settings
        #: Where each run's files go (--layout), decided before the sink opens them.
        self.places = places if places is not None else Places(settings.layout)
        #: The job's API backend's: fetches one run into the channel.
        self.fetcher = fetcher
        self.sink = sink
        self.stats = stats
        self.observers = list(observers)
        self.report = HarvestReport()
        self._stopping = False
        #: Records written of each run, by type: its manifest's counts.
        self._counts: dict[int, Counter[str]] = {}
        #: Bytes of lines written of each run (`RunOutcome.bytes`).
        self._bytes: Counter[int] = Counter()

    def stop(self) -> None:
        """Start no new runs; runs in flight go on until they finish or are cancelled."""
        self._stopping = True

    async def harvest(self, targets: Iterable[RunTarget]) -> HarvestReport:
        # A sink whose writes wait on the network may queue fewer (`ObjectSink.channel_size`).
        size = min(self.settings.channel_size, getattr(self.sink, "channel_size", 1 << 30))
        send, receive = Channel.create(size)
        todo = list(targets)
        pending = iter(todo)
        # No more workers than runs: `--runs-in-flight 1000000` for one run had started a
        # million tasks (3.6 GB, four minutes) before asking anything.
        workers = min(self.settings.runs_in_flight, len(todo))
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._writer, receive, send)
            async with send:
                for _ in range(workers):
                    tg.start_soon(self._run_worker, pending, send.clone())
        return self.report

    # --- fetching -------------------------------------------------------------------

    async def _run_worker(self, pending: Iterator[RunTarget], send: Channel) -> None:
        async with send:
            try:
                # One shared iterator: each worker takes the next run when it is free.
                for target in pending:
                    if self._stopping:
                        return
                    await self._harvest_one(target, send)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                # The writer task is gone: it failed (its error is the job's, and this
                # one only its echo: a store cut by a second signal had ended a stopped
                # job as an internal error) or the job is cancelled. Nothing more can be
                # written, so the worker ends without an error of its own.
                return

    async def _harvest_one(self, target: RunTarget, send: Channel) -> None:
        token = current_budget.set(RetryBudget(self.settings.retry_budget))
        reason = target.incomplete_reason
        started = False
        try:
            run = await self._place(target)
            await send.send(RunStarted(target.run_id))
            started = True
            summary = await self.fetcher.fetch(target.run_id, run, send)
            reason = reason or summary.pop("incomplete_reason", None)
        except (HarvesterError, ExceptionGroup) as exc:
            error = unwrap(exc)
            if isinstance(error, JOB_FATAL) or not isinstance(error, HarvesterError):
                raise error from None
            if not started:  # the state and progress hear of every run that ends
                await send.send(RunStarted(target.run_id))
            await send.send(RunFailed(target.run_id, describe(error)))
            return
        finally:
            current_budget.reset(token)
        summary["complete"] = reason is None
        if reason:
            summary["incomplete_reason"] = reason
        summary["harvest"] = harvest_block(self.settings)  # later jobs compare their settings
        await send.send(RunFinished(target.run_id, summary))

    async def _place(self, target: RunTarget) -> JsonObject | None:
        """Decide the run's directory before its files open (the sink writes there from
        the first line). --layout date needs the run's `created`: a run given by id is
        asked for its object, which then goes on as its `run` record."""
        run = target.run
        if self.places.needs_run_object(run):
            run = await self.fetcher.run_object(target.run_id)
        self.places.decide(target.run_id, run)
        return run

    # --- writing --------------------------------------------------------------------

    async def _writer(self, receive: MemoryObjectReceiveStream[Message], channel: Channel) -> None:
        """The one task that writes: drains every queued message per turn, and hands
        finished runs to a publisher task so an fsync never stalls the channel (while it
        is full, fetchers would sit holding their parsed answers). A message's bytes
        count in the channel until it is written (`Channel.written`)."""
        publish, to_publish = anyio.create_memory_object_stream[RunOutcome](PUBLISH_QUEUE)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._publisher, to_publish)
                async with publish, receive:
                    while (message := await _next(receive)) is not None:
                        try:
                            await self._handle(message, publish)
                        finally:
                            channel.written(message)
        finally:
            with anyio.CancelScope(shield=True):
                await self.sink.close()

    async def _handle(self, message: Message, publish: MemoryObjectSendStream[RunOutcome]) -> None:
        if isinstance(message, Lines):
            await self.sink.write(message.run_id, message.data)
            self.stats.records.update(message.counts)
            self._counts.setdefault(message.run_id, Counter()).update(message.counts)
            self.stats.bytes_written += message.size
            self._bytes[message.run_id] += message.size
        elif isinstance(message, RunStarted):
            self._counts[message.run_id] = Counter()
            await self.sink.begin(message.run_id)
            for observer in self.observers:
                observer.run_started(message.run_id)
        elif isinstance(message, RunFinished):
            await self._write_summary(message.run_id, message.summary)
            written = self._bytes.pop(message.run_id, 0)
            await publish.send(RunOutcome(message.run_id, True, summary=message.summary,
                                          bytes=written))  # fmt: skip
        else:
            # On stdout the lines already written cannot be taken back: say the run failed.
            if self.settings.to_stdout:
                summary = {"complete": False, "error": message.reason}
                await self._write_summary(message.run_id, summary)
            self._bytes.pop(message.run_id, None)
            await publish.send(RunOutcome(message.run_id, False, reason=message.reason))

    async def _publisher(self, outcomes: MemoryObjectReceiveStream[RunOutcome]) -> None:
        """Commits (or aborts) runs, `COMMITS_AT_ONCE` (or the sink's figure) at a time;
        observers hear of the runs in the order they ended, each only once its files are
        published."""
        # A sink may name its own figure (`ObjectSink.commits_at_once`, whose held runs
        # are bounded by it): one publisher with that many slots, so runs are still told
        # in order (several publishers multiplied the slots and each told its own order).
        slots = anyio.Semaphore(getattr(self.sink, "commits_at_once", COMMITS_AT_ONCE))
        told = anyio.Event()  # set once the run before has been dealt with
        told.set()
        async with outcomes, anyio.create_task_group() as tg:
            async for outcome in outcomes:
                await slots.acquire()
                turn = anyio.Event()
                tg.start_soon(self._publish, outcome, slots, told, turn)
                told = turn

    async def _publish(
        self, outcome: RunOutcome, slots: anyio.Semaphore, before: anyio.Event, turn: anyio.Event
    ) -> None:
        try:
            # A commit begun is finished and told, whatever fails or is cancelled
            # meanwhile: a published run is always in the state (its first observer).
            with anyio.CancelScope(shield=True):
                try:
                    counts = self._counts.pop(outcome.run_id, None)
                    if outcome.ok:
                        path = await self.sink.commit(outcome.run_id, counts, outcome.summary)
                        outcome.path = path
                    else:
                        await self.sink.abort(outcome.run_id)
                finally:
                    slots.release()
                await before.wait()
                self._ended(outcome)
        finally:
            turn.set()

    async def _write_summary(self, run_id: int, summary: dict[str, Any]) -> None:
        data = encode("summary", run_id, [summary])
        await self.sink.write(run_id, data)
        self.stats.records["summary"] += 1
        self._counts.setdefault(run_id, Counter())["summary"] += 1
        self.stats.bytes_written += len(data)
        self._bytes[run_id] += len(data)

    def _ended(self, outcome: RunOutcome) -> None:
        self.report.outcomes.append(outcome)
        if outcome.ok:
            self.stats.runs_done += 1
        else:
            self.stats.runs_failed += 1
        for observer in self.observers:
            observer.run_ended(outcome)
