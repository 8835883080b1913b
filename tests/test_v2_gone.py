"""When v2 answers 404/410 to everything, the error says v2 looks gone and shows the v6
form; an unknown run on a live v2 stays an unknown run."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestServer

from harvester.job import harvest_job
from harvester.scheduler import RunTarget
from harvester.simulator.server import Simulator
from tests.harvest_helpers import settings_for
from tests.process_helpers import run_cli


async def test_all_404_or_410_names_v2_gone_and_shows_the_v6_form(
    simulator: Simulator, tmp_path: Path
) -> None:
    asked: list[str] = []

    async def gone(request: web.Request) -> web.Response:
        asked.append(request.path)
        status = 410 if request.path.startswith("/loadtests/v2/runs") else 404
        return web.json_response({"error": {"message": "gone"}}, status=status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", gone)
    async with TestServer(app, host="127.0.0.1") as server:
        base = str(server.make_url("")).rstrip("/")
        done = await run_cli(simulator, "harvest", "--base-url", base, "--run", "5",
                             "--run", "6", "--out", str(tmp_path))  # fmt: skip
    assert done.returncode == 2
    assert b"v2 API looks gone" in done.stderr
    assert b"--api v6 --stack-id" in done.stderr
    assert asked.count("/loadtests/v2/runs") == 1  # one probe


async def test_an_unknown_run_on_a_live_v2_is_just_unknown(
    simulator: Simulator, tmp_path: Path
) -> None:
    result = await harvest_job(settings_for(simulator, tmp_path), [RunTarget(999)])
    assert [o.run_id for o in result.report.failed] == [999]
    assert "looks gone" not in (result.report.failed[0].reason or "")
    assert len(simulator.requests_for("runs")) == 1  # the probe answered: v2 is there


async def test_v2_gone_is_named_when_discovery_met_only_404s(
    simulator: Simulator, tmp_path: Path
) -> None:
    async def gone(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "gone"}}, status=404)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", gone)
    async with TestServer(app, host="127.0.0.1") as server:
        base = str(server.make_url("")).rstrip("/")
        done = await run_cli(simulator, "harvest", "--base-url", base, "--project", "7",
                             "--out", str(tmp_path))  # fmt: skip
        listed = await run_cli(simulator, "runs", "--base-url", base, "--project", "7")
    assert done.returncode == 2, done.stderr
    assert b"v2 API looks gone" in done.stderr and b"--api v6 --stack-id" in done.stderr
    assert listed.returncode == 2, listed.stderr
    assert b"v2 API looks gone" in listed.stderr
