"""An API (or a proxy) answering run 100002's object when asked for run 100001: the
harvester archived it as run 100001's `run` record, in silence. It is now that run's
failure, in one line naming the request, and not asked again (the server holds it so)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from harvester.job import harvest_job
from harvester.scheduler import RunTarget
from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator
from tests.harvest_helpers import settings_for

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def answering_another_run() -> Simulator:
    """The simulator, whose run object of 100001 (v2 and v6) says it is run 100002."""

    @web.middleware
    async def other(request: web.Request, handler: Handler) -> web.StreamResponse:
        answer = await handler(request)
        if request.path.endswith("runs/100001") and isinstance(answer, web.Response):
            assert answer.body is not None
            doc = orjson.loads(bytes(answer.body))  # type: ignore[arg-type]
            (doc.get("k6-run") or doc)["id"] = 100002
            return web.json_response(doc)
        return answer

    sim = Simulator(generate_cloud(runs=2, metrics=5, points=5))
    sim.app.middlewares.insert(0, other)
    return sim


@pytest.mark.parametrize(
    ("api", "request_of"),
    [("v2", "run /loadtests/v2/runs/100001"), ("v6", "v6_run /cloud/v6/test_runs/100001")],
)
async def test_a_run_object_of_another_run_fails_its_run_once_not_archived(
    tmp_path: Path, api: str, request_of: str
) -> None:
    async with answering_another_run() as sim:
        settings = settings_for(sim, tmp_path, api=api, stack_id=sim.stack_id, run_record=True)
        job = await harvest_job(settings, [RunTarget(100001), RunTarget(100002)])
        asked = [r.endpoint for r in sim.log if r.path.endswith("runs/100001")]
    [failed] = job.report.failed
    assert failed.run_id == 100001
    assert f"{request_of}: the answer is the run object of run 100002, not of run 100001" in str(
        failed.reason
    )
    assert len(asked) == 1  # not retried
    assert not (tmp_path / "100001.ndjson").exists()
    assert (tmp_path / "100002.ndjson").exists()
