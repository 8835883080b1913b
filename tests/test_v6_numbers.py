"""v5 range queries holding a number no double or 64-bit integer holds. An integer of
20-odd digits was archived rounded (`-9999999999999999999999999` as `-1e+25`: orjson
makes a double of it), and `1e999` failed its run; each is now kept as the API wrote it,
as v2's answers are, and is null in the points files."""

from __future__ import annotations

import re
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

VUS = re.compile(r"/test_runs/1/query_range_k6\(query='last%20by.*metric='vus'")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MARK = 424242.5


async def harvested(tmp_path: Path, number: bytes, pad: int, output_format: str) -> list[bytes]:
    """The published lines of run 1 (raw: its `.ndjson`; points: the `vus` points) when
    the `vus` range query's first series has `number` as its second point's value and a
    label of `pad` bytes (past `v5_series.SPILL_AT` the answer is read from a file)."""

    @web.middleware
    async def answer(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if not VUS.search(request.raw_path):
            return response
        assert isinstance(response, web.Response) and response.body is not None
        doc = orjson.loads(bytes(response.body))  # type: ignore[arg-type]
        entry = doc["data"]["result"][0]
        entry["metric"]["pad"] = "x" * pad
        entry["values"][1][1] = MARK
        body = orjson.dumps(doc).replace(str(MARK).encode(), number, 1)
        return web.Response(body=body, content_type="application/json")

    sim = Simulator(generate_cloud(runs=1, metrics=8, points=20, first_run_id=1))
    sim.app.middlewares.insert(0, answer)
    async with sim:
        settings = settings_for(
            sim, tmp_path, api="v6", stack_id=sim.stack_id, format=output_format
        )
        job = await harvest_job(settings, [RunTarget(1)])
    assert [str(f.reason) for f in job.report.failed] == []
    if output_format == "raw":
        return (tmp_path / "1.ndjson").read_bytes().splitlines()
    lines = (tmp_path / "1.points.ndjson").read_bytes().splitlines()
    return [line for line in lines if b'"metric":"vus"' in line]


NUMBERS = [b"1" * 25, b"-" + b"9" * 25, b"1" * 400, b"1e999"]


@pytest.mark.parametrize("pad", [0, 1_200_000])
@pytest.mark.parametrize("number", NUMBERS)
async def test_a_number_no_double_holds_is_archived_as_the_api_wrote_it(
    tmp_path: Path, number: bytes, pad: int
) -> None:
    lines = await harvested(tmp_path, number, pad, "raw")
    [kept] = [line for line in lines if b'"pad"' in line]
    assert re.search(rb'"values":\[\[\d+,[-0-9.e]+\],\[\d+,' + re.escape(number) + rb"\]", kept)


@pytest.mark.parametrize("number", NUMBERS)
async def test_such_a_number_is_a_double_or_null_in_the_points(
    tmp_path: Path, number: bytes
) -> None:
    lines = await harvested(tmp_path, number, 0, "points")
    values = [orjson.loads(line)["value"] for line in lines if b'"pad"' in line]
    assert values[1] == (None if number in (b"1e999", b"1" * 400) else float(number))
