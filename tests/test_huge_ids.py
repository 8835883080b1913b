"""A run record whose `test_id` and `project_id` are integers past 64 bits: orjson reads
them as floats, and every point of `--format points` (and Singer's rows) said
`"test_id":1.1805916207174113e+21`, a number the API never sent. They are now written as
sent; Parquet's int64 columns, which cannot hold them, say null (never a rounded number),
and its meta file keeps the run record as sent."""

from __future__ import annotations

import io
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from harvester.job import harvest_job
from harvester.scheduler import RunTarget
from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator
from tests.harvest_helpers import settings_for

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BIG = b"1180591620717411303424"  # 2**70
IDS = b'"test_id":' + BIG + b',"project_id":-' + BIG


def huge_ids() -> Simulator:
    """The simulator, whose run object of 100001 (v2 and v6) has `test_id` 2**70 and
    `project_id` -2**70."""

    @web.middleware
    async def huge(request: web.Request, handler: Handler) -> web.StreamResponse:
        answer = await handler(request)
        if request.path.endswith("runs/100001") and isinstance(answer, web.Response):
            body = bytes(answer.body)  # type: ignore[arg-type]
            body = body.replace(b'"test_id":720001', b'"test_id":' + BIG)
            body = body.replace(b'"project_id":3458575', b'"project_id":-' + BIG)
            assert BIG in body
            return web.Response(body=body, content_type="application/json")
        return answer

    sim = Simulator(generate_cloud(runs=2, metrics=3, points=3))
    sim.app.middlewares.insert(0, huge)
    return sim


@pytest.mark.parametrize("api", ["v2", "v6"])
async def test_points_keep_ids_past_64_bits_as_sent(tmp_path: Path, api: str) -> None:
    async with huge_ids() as sim:
        settings = settings_for(sim, tmp_path, api=api, stack_id=sim.stack_id, run_record=True,
                                format="points")  # fmt: skip
        job = await harvest_job(settings, [RunTarget(100001)])
    assert not job.report.failed
    lines = (tmp_path / "100001.points.ndjson").read_bytes().splitlines()
    assert lines and all(line.startswith(b'{"test_run_id":100001,' + IDS) for line in lines)
    assert IDS in (tmp_path / "100001.meta.ndjson").read_bytes()


async def test_parquet_says_null_for_ids_no_int64_holds_and_its_meta_file_keeps_them(
    tmp_path: Path,
) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    async with huge_ids() as sim:
        settings = settings_for(sim, tmp_path, run_record=True, format="parquet")
        job = await harvest_job(settings, [RunTarget(100001)])
    assert not job.report.failed
    table = pq.read_table(tmp_path / "100001.parquet")
    assert table.num_rows > 0
    assert set(table.column("test_id").to_pylist()) == {None}
    assert set(table.column("project_id").to_pylist()) == {None}
    assert IDS in (tmp_path / "100001.meta.ndjson").read_bytes()


async def test_singer_rows_keep_ids_past_64_bits_as_sent(tmp_path: Path) -> None:
    out = io.BytesIO()
    async with huge_ids() as sim:
        settings = settings_for(sim, "-", run_record=True, format="singer")
        job = await harvest_job(settings, [RunTarget(100001)], stdout=out)
    assert not job.report.failed
    records = [line for line in out.getvalue().splitlines() if b'"type":"RECORD"' in line]
    points = [line for line in records if b'"stream":"points"' in line]
    [run] = [line for line in records if b'"stream":"runs"' in line]
    assert points and all(IDS in line for line in points)
    assert run.count(IDS) == 2  # its columns, and the run record it carries
    assert b"e+21" not in out.getvalue()
    assert json.loads(run)["record"]["test_id"] == 2**70
