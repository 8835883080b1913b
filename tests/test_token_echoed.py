"""An error answer that echoes the request's headers (a proxy's or a debug page: `bad
request: Authorization: Bearer <token>`). The API's words are quoted in the run's
reason, so the token went to stderr, to the state file and to `harvester status`; it is
now shown as `***` wherever the answer is quoted."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from harvester.cli import main
from harvester.errors import AuthRejected
from harvester.job import harvest_job
from harvester.scheduler import RunTarget
from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator
from tests.harvest_helpers import settings_for

TOKEN = "tok-DO-NOT-LEAK-4f1c"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def echoing(status: int, run_id: int, *, html: bool = False) -> Simulator:
    """The simulator, whose metrics of `run_id` (v2 and v5) answer `status` with a body
    quoting the request's Authorization header (`html`: a web page, not JSON)."""

    @web.middleware
    async def echo(request: web.Request, handler: Handler) -> web.StreamResponse:
        if str(run_id) in request.raw_path and "metrics" in request.path:
            said = f"bad request: Authorization: {request.headers.get('Authorization')}"
            if html:
                return web.Response(text=f"<p>{said}</p>", status=status, content_type="text/html")
            return web.json_response({"detail": said}, status=status)
        return await handler(request)

    sim = Simulator(generate_cloud(runs=2, metrics=5, points=5), token=TOKEN)
    sim.app.middlewares.insert(0, echo)
    return sim


@pytest.mark.parametrize(
    ("status", "html"), [(400, False), (403, False), (500, False), (200, True)]
)
@pytest.mark.parametrize("api", ["v2", "v6"])
async def test_a_token_echoed_in_an_error_answer_is_not_in_the_reason_nor_the_state(
    tmp_path: Path, status: int, html: bool, api: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`html`: a web page answered 200 (a captive portal, a proxy's), quoted in the run's
    reason (its first 60 characters) as an unusable answer."""
    async with echoing(status, 100001, html=html) as sim:
        settings = settings_for(sim, tmp_path, api=api, stack_id=sim.stack_id, max_attempts=2)
        job = await harvest_job(settings, [RunTarget(100001), RunTarget(100002)])
    [failed] = job.report.failed
    assert "bad request: Authorization:" in str(failed.reason)
    assert TOKEN not in str(failed.reason)
    for path in tmp_path.iterdir():  # the state file and its WAL
        assert TOKEN.encode() not in path.read_bytes(), path.name
    assert main(["status", "--out", str(tmp_path), "--output", "json"]) == 0
    assert TOKEN not in capsys.readouterr().out


async def test_a_token_echoed_in_a_401_is_not_in_the_message(tmp_path: Path) -> None:
    async with echoing(401, 100001) as sim:
        settings = settings_for(sim, tmp_path, api="v6", stack_id=sim.stack_id)
        with pytest.raises(AuthRejected) as raised:
            await harvest_job(settings, [RunTarget(100001)])
    assert "Authorization: Bearer ***" in str(raised.value)
    assert TOKEN not in str(raised.value)
