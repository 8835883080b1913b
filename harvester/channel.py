"""The channel from the fetchers to the writer, bounded in messages and in bytes (`Channel`).

A bound in messages alone let memory follow the answers' size: while the writer is the
slower end (a fast API, a slow disk, `--format points` building 5x raw's bytes), the
channel stays full, and its 16 messages were 16 answers' lines. With long series
(`scripts/bench --size long`: 20,000 points a serie, ~5 MB an answer) that was ~65 MB of
a 222 MB peak; with `--format points`, whose writer lags the most, the parent reached
260 MB. Bounded in bytes too, the channel holds a few long answers, or as many small ones
as before: medium's answers (~2.3 MB) still queue 7 deep, which keeps a writer that
drains the channel in turns busy.
"""

from __future__ import annotations

import contextlib
from types import TracebackType

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .records import Lines, Message

#: Bytes of lines the channel holds before a fetcher waits to add more: a message larger
#: than this still goes alone (an answer is never split to fit).
CHANNEL_BYTES = 16 << 20


class _Bytes:
    """Bytes of lines sent and not yet written, shared by every clone of a channel."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.queued = 0
        self._freed: anyio.Event | None = None  # set when bytes are given back

    async def take(self, size: int) -> None:
        """Wait until `size` more bytes fit (or nothing is queued), then count them."""
        while self.queued and self.queued + size > self.budget:
            if self._freed is None:
                self._freed = anyio.Event()
            await self._freed.wait()
        self.queued += size

    def give(self, size: int) -> None:
        self.queued -= size
        if self._freed is not None:
            freed, self._freed = self._freed, None
            freed.set()


class Channel:
    """The fetchers' end: `send` waits while the channel is full, in messages or bytes.
    Each fetcher holds a `clone`; the writer's end is `receive`, and `written` gives back
    a message's bytes once the writer is done with it (its lines are held until then)."""

    def __init__(self, send: MemoryObjectSendStream[Message], room: _Bytes | None = None) -> None:
        self._send = send
        self._room = room if room is not None else _Bytes(CHANNEL_BYTES)

    @classmethod
    def create(
        cls, messages: int, budget: int | None = None
    ) -> tuple[Channel, MemoryObjectReceiveStream[Message]]:
        """A channel of at most `messages` messages and `budget` bytes (`CHANNEL_BYTES`)."""
        send, receive = anyio.create_memory_object_stream[Message](messages)
        return cls(send, _Bytes(CHANNEL_BYTES if budget is None else budget)), receive

    async def send(self, message: Message) -> None:
        if not isinstance(message, Lines):
            await self._put(message)
            return
        await self._room.take(message.size)
        try:
            await self._put(message)
        except BaseException:  # not sent (cancelled, the writer gone): it holds no room
            self._room.give(message.size)
            raise

    async def _put(self, message: Message) -> None:
        with contextlib.suppress(anyio.WouldBlock):
            # The stream's `send` always yields first, even with room; this does not.
            self._send.send_nowait(message)
            return
        await self._send.send(message)

    def written(self, message: Message) -> None:
        """The writer is done with `message`: its bytes no longer count."""
        if isinstance(message, Lines):
            self._room.give(message.size)

    @property
    def queued_bytes(self) -> int:
        return self._room.queued

    def clone(self) -> Channel:
        return Channel(self._send.clone(), self._room)

    async def aclose(self) -> None:
        await self._send.aclose()

    async def __aenter__(self) -> Channel:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
