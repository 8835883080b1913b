"""When the writer task ends with an error, the run workers blocked on the channel end
quietly: the job's error is the writer's, never their `BrokenResourceError` echo."""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from harvester.config import load_settings
from harvester.job import _run
from harvester.objectstore import StoreCut
from harvester.records import Chunk, Lines
from harvester.scheduler import RunTarget, Scheduler
from harvester.stats import HarvestStats
from tests.harvest_helpers import NullSink


class _CutSink(NullSink):
    """A sink whose first write fails as a store cut by a second stop signal does, once
    the fetcher waits on the full channel."""

    channel_size = 1

    async def write(self, run_id: int, data: Chunk) -> None:
        await wait_all_tasks_blocked()  # the fetcher blocked in `send`
        raise StoreCut("the store did not answer before the job was stopped", "Cut")


class _ManyBatches:
    async def run_object(self, run_id: int) -> dict[str, Any]:
        return {}

    async def fetch(self, run_id: int, run: Any, send: Any) -> dict[str, Any]:
        for _ in range(10):
            await send.send(Lines(run_id, b"{}\n", Counter(metric=1)))
        return {}


async def test_a_cut_writer_ends_the_job_as_cut_not_as_the_workers_broken_channel() -> None:
    """A stopped job whose store was cut had ended as `internal error: BrokenResourceError`
    (exit 1, not 130): the worker's send to the channel the failed writer closed was
    counted as a failure of its own."""
    settings = load_settings({"out": "o", "token": "t", "runs_in_flight": 2})
    scheduler = Scheduler(settings, _ManyBatches(), _CutSink(), HarvestStats())
    with pytest.raises(StoreCut), anyio.fail_after(10):
        await _run(scheduler, [RunTarget(1), RunTarget(2)], 10.0, None, None)
