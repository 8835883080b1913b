"""Settings and inputs at their limits cost what the job needs, not what the number says."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from pathlib import Path
from typing import Any

from harvester.job import harvest_job
from harvester.scheduler import RunTarget
from harvester.simulator.server import Simulator
from tests.harvest_helpers import settings_for


async def tasks_made_by_a_harvest(simulator: Simulator, out: Path, **overrides: Any) -> int:
    """How many tasks the event loop made while harvesting run 100001."""
    loop = asyncio.get_running_loop()
    made = 0

    def counting(
        loop: asyncio.AbstractEventLoop,
        coro: Generator[Any, None, Any] | Coroutine[Any, Any, Any],
        **kwargs: Any,
    ) -> asyncio.Future[Any]:
        nonlocal made
        made += 1
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(counting)
    try:
        result = await harvest_job(settings_for(simulator, out, **overrides), [RunTarget(100001)])
    finally:
        loop.set_task_factory(None)
    assert [o.run_id for o in result.report.succeeded] == [100001]
    return made


async def test_runs_in_flight_far_above_the_runs_starts_a_worker_per_run_only(
    simulator: Simulator, tmp_path: Path
) -> None:
    one = await tasks_made_by_a_harvest(simulator, tmp_path / "a", runs_in_flight=1)
    many = await tasks_made_by_a_harvest(simulator, tmp_path / "b", runs_in_flight=5000)
    assert many <= one + 5, (one, many)  # not 5000 workers for one run
