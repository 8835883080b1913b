"""A run whose v5 `/labels` lists a name no query can hold (`my-tag`, `1st`): every
series query groups by every label, and v5 refused each (HTTP 400: 'bad label list'), so
the run failed on the API's words, naming neither the label nor the query, after up to
--concurrency refused requests. The syntax has no quoting for a label name, and leaving
it out would merge the series it tells apart: the run fails before its queries, in one
line naming the label and the query."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from harvester.backends import v5_query
from harvester.job import harvest_job
from harvester.scheduler import RunTarget
from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator
from tests.harvest_helpers import settings_for

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def listing_label(name: str) -> Simulator:
    """The simulator, whose `/labels` of run 100001 lists `name` too."""

    @web.middleware
    async def odd(request: web.Request, handler: Handler) -> web.StreamResponse:
        answer = await handler(request)
        if request.path.endswith("100001/labels") and isinstance(answer, web.Response):
            doc = orjson.loads(bytes(answer.body))  # type: ignore[arg-type]
            return web.json_response({**doc, "data": [*doc["data"], name]})
        return answer

    sim = Simulator(generate_cloud(runs=2, metrics=3, points=3))
    sim.app.middlewares.insert(0, odd)
    return sim


@pytest.mark.parametrize("name", ["my-tag", "1st", "r\u00e9gion", "a b"])
async def test_a_label_no_query_can_hold_fails_its_run_naming_it(tmp_path: Path, name: str) -> None:
    async with listing_label(name) as sim:
        settings = settings_for(sim, tmp_path, api="v6", stack_id=sim.stack_id)
        job = await harvest_job(settings, [RunTarget(100001), RunTarget(100002)])
        asked = [r.path for r in sim.log if r.endpoint == "v5_query" and "100001" in r.path]
    [failed] = job.report.failed
    assert failed.run_id == 100001
    reason = str(failed.reason)
    assert reason.startswith(
        f"v5_labels /cloud/v5/test_runs/100001/labels: the run's label {name!r} cannot be "
        "written in a v5 query ("
    ), reason
    assert f",{name})'" in reason  # the query, as it would be sent
    assert asked == []  # not asked: v5 refuses every one
    assert (tmp_path / "100002.ndjson").exists()


def test_label_names_a_query_can_hold() -> None:
    assert v5_query.unwritable(["name", "_x", "a1", "expected_response"]) == []
    assert v5_query.unwritable(["ok", "my-tag", "1st", "", "é"]) == ["my-tag", "1st", "", "é"]
