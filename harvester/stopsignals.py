"""The signals that stop a job or a worker gracefully: SIGINT, SIGTERM and SIGHUP.

SIGHUP is what a job gets when its terminal or ssh session closes: by default it killed
the job outright, files half written and runs left `running`. It now stops the job as
SIGTERM does (finished runs kept, runs in flight given their grace, the others recorded
cut short). Unless it was ignored when the process started: `nohup harvester ...` asks to
outlive the session, and watching SIGHUP would undo that (asyncio replaces an ignored
disposition with its handler), so it stays ignored.

Read once, at import: asyncio sets a signal back to SIG_DFL (not to what it was) when a
receiver closes, so after discovery's receiver nohup's SIG_IGN could not be seen again.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Awaitable, Callable, Iterator
from typing import Protocol, TypeVar

import anyio
from anyio.abc import TaskStatus

from .errors import unwrap

T = TypeVar("T")

#: SIGHUP ignored from the start (nohup): it is not ours to watch.
_HANGUP_IGNORED = signal.getsignal(signal.SIGHUP) == signal.SIG_IGN

STOP_SIGNALS: tuple[signal.Signals, ...] = (
    signal.SIGINT,
    signal.SIGTERM,
    *(() if _HANGUP_IGNORED else (signal.SIGHUP,)),
)


class StopListener(Protocol):
    """Told at once when a signal stops the job (the reporter says what happens next)."""

    def stopping(self, signum: int, grace: float) -> None: ...
    def stopping_now(self, signum: int) -> None: ...


class StopSignals:
    """The stop signals as a command sees them, from before discovery to the harvest's
    end: one receiver for it all. Discovery and the harvest each had their own, and
    asyncio puts SIG_DFL back when a receiver closes, so in the steps between (the state,
    the sink, the transport and the backend made ready) SIGTERM or SIGHUP killed the job.

    `first` is set by the first signal (the harvest starts no more runs), `again` by a
    second (runs in flight are cut now); work that writes nothing is run `cutting()`,
    which the first signal cancels."""

    def __init__(self, listener: StopListener | None, grace: float) -> None:
        self.received: list[int] = []
        self.first = anyio.Event()
        self.again = anyio.Event()
        self._listener = listener
        self._grace = grace  # for the listener's words: runs in flight get it
        self._cut: set[anyio.CancelScope] = set()

    @property
    def signum(self) -> int | None:
        """The signal that stopped the command, if one did."""
        return self.received[0] if self.received else None

    @contextlib.contextmanager
    def cutting(self) -> Iterator[None]:
        """A block the first signal cancels (at once, if it came already)."""
        with anyio.CancelScope() as scope:
            if self.first.is_set():
                scope.cancel()
            self._cut.add(scope)
            try:
                yield
            finally:
                self._cut.discard(scope)

    async def _watch(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
            task_status.started()
            async for signum in signals:
                self.received.append(signum)
                if len(self.received) > 1:
                    if self._listener is not None:
                        self._listener.stopping_now(signum)
                    self.again.set()
                    continue
                if self._listener is not None:  # said at once: the stop may take a while
                    self._listener.stopping(signum, self._grace)
                self.first.set()
                for scope in self._cut:
                    scope.cancel()


async def watching_stop_signals(
    work: Callable[[StopSignals], Awaitable[T]], listener: StopListener | None, grace: float
) -> T:
    """`await work(signals)` with the stop signals watched from start to end."""
    signals = StopSignals(listener, grace)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(signals._watch)
            result = await work(signals)
            tg.cancel_scope.cancel()
    except ExceptionGroup as group:  # work's own error (e.g. ApiUnreachable), not the wrapper
        raise unwrap(group) from None
    return result
