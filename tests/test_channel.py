"""The channel to the writer is bounded in bytes as well as in messages: while the writer
lags, fetchers wait once a few big answers are queued, rather than sixteen of them
(long series: ~5 MB an answer, ~65 MB of the peak), and a send that never went through
holds no room."""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from harvester import channel as channel_module
from harvester.channel import Channel
from harvester.config import load_settings
from harvester.records import Chunk, Lines, RunStarted
from harvester.scheduler import RunTarget, Scheduler
from harvester.stats import HarvestStats
from tests.harvest_helpers import NullSink

KB = b"x" * 1023 + b"\n"


def lines(kilobytes: int) -> Lines:
    return Lines(1, KB * kilobytes, Counter(metric=kilobytes))


async def test_a_send_waits_while_the_bytes_queued_would_pass_the_budget() -> None:
    send, receive = Channel.create(16, budget=3 * 1024)
    async with send, receive:
        await send.send(lines(2))
        blocked = True
        async with anyio.create_task_group() as tg:

            async def second() -> None:
                nonlocal blocked
                await send.send(lines(2))  # 4 KB > 3 KB: waits
                blocked = False

            tg.start_soon(second)
            await wait_all_tasks_blocked()
            assert blocked and send.queued_bytes == 2048
            first = await receive.receive()
            await wait_all_tasks_blocked()
            assert blocked  # received is not written: its lines are still held
            send.written(first)
        assert not blocked and send.queued_bytes == 2048


async def test_an_answer_larger_than_the_budget_goes_alone() -> None:
    send, receive = Channel.create(16, budget=1024)
    async with send, receive:
        with anyio.fail_after(5):
            await send.send(lines(8))
        assert send.queued_bytes == 8 * 1024
        send.written(await receive.receive())
        assert send.queued_bytes == 0


async def test_messages_without_lines_take_no_room() -> None:
    send, receive = Channel.create(16, budget=1024)
    async with send, receive:
        await send.send(lines(1))
        with anyio.fail_after(5):
            await send.send(RunStarted(2))  # the bytes are full, the messages are not
        assert send.queued_bytes == 1024


async def test_a_send_cancelled_while_waiting_gives_its_room_back() -> None:
    send, receive = Channel.create(1, budget=64 * 1024)
    async with send, receive:
        await send.send(lines(1))  # the one message the stream holds
        with anyio.move_on_after(0.2):
            await send.send(lines(2))  # room in bytes, none in messages: waits
        assert send.queued_bytes == 1024
        send.written(await receive.receive())
        assert send.queued_bytes == 0


class _SlowSink(NullSink):
    """A writer that lags: its first write waits until the test lets it go."""

    def __init__(self) -> None:
        self.go = anyio.Event()

    async def write(self, run_id: int, data: Chunk) -> None:
        await self.go.wait()


class _BigAnswers:
    def __init__(self) -> None:
        self.sent = 0

    async def run_object(self, run_id: int) -> dict[str, Any]:
        return {}

    async def fetch(self, run_id: int, run: Any, send: Channel) -> dict[str, Any]:
        for _ in range(10):
            await send.send(lines(100))
            self.sent += 1
        return {}


async def test_a_lagging_writer_holds_back_a_fetcher_once_the_bytes_are_queued(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sixteen answers of 100 KB fit the channel's messages; 250 KB of bytes take two:
    the fetcher waits at the third while the writer is held on the first."""
    monkeypatch.setattr(channel_module, "CHANNEL_BYTES", 250 * 1024)
    settings = load_settings({"out": "o", "token": "t", "runs_in_flight": 1})
    sink, fetcher = _SlowSink(), _BigAnswers()
    scheduler = Scheduler(settings, fetcher, sink, HarvestStats())
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(scheduler.harvest, [RunTarget(1)])
            await wait_all_tasks_blocked()
            assert fetcher.sent == 2
            sink.go.set()
    assert fetcher.sent == 10
    assert scheduler.report.outcomes[0].ok
