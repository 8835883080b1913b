"""v5 aggregates (the checks' and the thresholds') answered in shapes the simulator never
gives: an entry that is no object, labels that are no object, a point without its value,
a value that is no number. Each was an internal error that ended the whole job (its
other runs unharvested); a `"NaN"` (Prometheus' quantile of no samples) was judged a
crossed threshold, where k6 judges a Trend without samples as 0."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from harvester.backends.v6 import _duration
from harvester.job import harvest_job
from harvester.scheduler import RunTarget
from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator
from tests.harvest_helpers import read_dir, settings_for

AGGREGATE = re.compile(r"/test_runs/100001/query_aggregate_k6\(")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def harvested(tmp_path: Path, result: list[Any]) -> tuple[list[str], list[Any]]:
    """(the reasons runs failed, the check and threshold records of run 100001) when each
    v5 aggregate of run 100001 answers `result`; 100002 is harvested beside it, whole."""

    @web.middleware
    async def aggregates(request: web.Request, handler: Handler) -> web.StreamResponse:
        if AGGREGATE.search(request.raw_path):
            body = {"status": "success", "data": {"resultType": "vector", "result": result}}
            return web.json_response(body)
        return await handler(request)

    sim = Simulator(generate_cloud(runs=2, metrics=40))
    sim.app.middlewares.insert(0, aggregates)
    async with sim:
        settings = settings_for(sim, tmp_path, api="v6", stack_id=sim.stack_id, step=3)
        job = await harvest_job(settings, [RunTarget(100001), RunTarget(100002)])
    failed = [str(f.reason) for f in job.report.failed]
    assert sorted(o.run_id for o in job.report.succeeded) == [100001, 100002][bool(failed) :]
    records = read_dir(tmp_path).get(100001, [])
    return failed, [r for r in records if r["type"] in ("check", "threshold")]


@pytest.mark.parametrize("entry", [5, "x", [1, 2], None])
async def test_an_aggregate_entry_that_is_no_object_fails_its_run(
    tmp_path: Path, entry: Any
) -> None:
    failed, _ = await harvested(tmp_path, [entry])
    shown = re.escape(orjson.dumps(entry).decode())
    [reason] = failed
    assert re.fullmatch(
        r"unusable answer: v5_query /cloud/v5/test_runs/100001/query_aggregate_k6\(.*\): "
        f"item 0 of 'data.result' is {shown}, not an object",
        reason,
    )


@pytest.mark.parametrize(
    "entry",
    [
        {"metric": ["check"], "values": [[0, "3"]]},  # labels that are no object
        {"metric": {"check": "c"}, "values": [[0]]},  # a point without its value
        {"metric": {"check": "c"}, "values": [[0, "abc"]]},  # a value that is no number
        {"metric": {"check": "c"}, "values": "abc"},  # points that are no list
        {"metric": {"check": "c"}, "values": [[0, "NaN"]]},  # no samples, as Prometheus says
    ],
)
async def test_an_aggregate_without_a_usable_figure_is_judged_as_no_samples(
    tmp_path: Path, entry: dict[str, Any]
) -> None:
    failed, records = await harvested(tmp_path, [entry])
    assert failed == []
    figure = 3.0 if entry["metric"] == ["check"] else None  # the one usable figure
    thresholds = {r["data"]["expression"]: r["data"] for r in records if r["type"] == "threshold"}
    # Without a figure: a Trend is 0 (passes p(95)<800); a Rate passes, its value null.
    assert thresholds["p(95)<800"]["value"] == (figure or 0.0)
    assert thresholds["p(95)<800"]["crossed"] is False
    assert thresholds["rate<0.01"]["value"] == figure
    assert thresholds["rate<0.01"]["crossed"] is (figure is not None)
    [check] = [r["data"] for r in records if r["type"] == "check"]
    assert check == {"check": "", "passes": 3.0, "fails": 3.0} if figure else {
        "check": "c", "passes": 0.0, "fails": 0.0,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("created", "ended", "seconds"),
    [
        ("2024-06-02T16:08:05Z", "2024-06-02T16:11:10", 185.0),  # one zone said, one not
        ("2024-06-02T16:08:05", "2024-06-02T16:11:10+00:00", 185.0),
        ("2024-06-02T16:08:05Z", None, 0.0),
        (5, [1], 0.0),
        ("2024-06-02T16:11:10Z", "2024-06-02T16:08:05Z", 0.0),
    ],
)
def test_a_runs_duration_reads_its_times_as_every_api_time_is(
    created: Any, ended: Any, seconds: float
) -> None:
    """A time without a zone is UTC (it was TypeError: naive and aware datetimes, an
    internal error that ended the job at its first threshold on a Counter's rate)."""
    assert _duration({"created": created, "ended": ended}) == seconds


@pytest.mark.parametrize("odd_type", ["histogram", None, 5])
async def test_a_metric_of_a_type_no_query_fits_fails_its_run_naming_it(
    tmp_path: Path, odd_type: Any
) -> None:
    """Its series were silently missing: no query was asked for it, and the run was
    archived as complete."""

    @web.middleware
    async def metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if request.path != "/cloud/v5/test_runs/100001/metrics":
            return response
        assert isinstance(response, web.Response) and response.body is not None
        doc = orjson.loads(bytes(response.body))  # type: ignore[arg-type]
        vus = next(m for m in doc["value"] if m["name"] == "vus")
        vus["type"] = odd_type
        return web.json_response(doc)

    sim = Simulator(generate_cloud(runs=2, metrics=8))
    sim.app.middlewares.insert(0, metrics)
    async with sim:
        settings = settings_for(sim, tmp_path, api="v6", stack_id=sim.stack_id)
        job = await harvest_job(settings, [RunTarget(100001), RunTarget(100002)])
    [failed] = job.report.failed
    assert failed.run_id == 100001
    assert f"metrics of a type v5 has no queries for: vus ({odd_type})" in str(failed.reason)
    assert set(read_dir(tmp_path)) == {100002}
