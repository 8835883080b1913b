"""A listing whose server ignores its paging parameter (`page`, `$skip`) and makes up new
ids on every page: each page brought rows not seen before, so discovery asked for ever.
It now ends in one line naming the request, once the rows read make the listing's own
count (v6 `@count`, asked of every page), or a page is the page before but for its ids;
a legitimate long listing is read whole, one whose rows hold nothing but ids included."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from harvester.discovery import Selection, discover_runs
from harvester.errors import ApiStatusError
from harvester.simulator.generated import FIRST_PROJECT_ID, generate_cloud
from harvester.simulator.server import Simulator
from tests.harvest_helpers import settings_for

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TEST = 720001
MOST = 40  # requests a listing may take before the simulator refuses, for the test's sake


def making_up_ids(*, counted: bool, varied: bool = False) -> tuple[Simulator, list[str]]:
    """The simulator, whose listings of test `TEST`'s runs (v2 and v6) answer the first
    page whatever page is asked, each row's id made new (plus 10**6 a page), and say the
    listing goes on; `counted`: with the count of rows each API declares (v2 `meta.count`,
    v6 `@count` when asked), else none; `varied`: each row's note new too."""
    asked: list[str] = []

    @web.middleware
    async def made_up(request: web.Request, handler: Handler) -> web.StreamResponse:
        v2 = request.path == "/loadtests/v2/runs"
        if not (v2 or request.path.endswith(f"/load_tests/{TEST}/test_runs")):
            return await handler(request)
        asked.append(request.path_qs)
        if len(asked) > MOST:
            return web.json_response({"detail": "asked for ever"}, status=400)
        first = {"page": "1"} if v2 else {"$skip": "0"}
        answer = await handler(request.clone(rel_url=request.rel_url.update_query(first)))
        assert isinstance(answer, web.Response) and answer.body is not None
        doc: dict[str, Any] = orjson.loads(bytes(answer.body))  # type: ignore[arg-type]
        rows = doc["k6-runs"] if v2 else doc["value"]
        for row in rows:
            row["id"] += 10**6 * len(asked)
            if varied:
                row["note"] = f"page {len(asked)}"
        if v2:
            doc["meta"] = {"count": 10**9} if counted else {}
        else:
            doc["@nextLink"] = "http://x/next"
            if not counted:
                doc.pop("@count", None)
        return web.json_response(doc)

    sim = Simulator(generate_cloud(runs=8, metrics=5, points=5, projects=1, tests=1))
    sim.app.middlewares.insert(0, made_up)
    return sim, asked


@pytest.mark.parametrize("counted", [True, False])
async def test_a_v6_listing_making_up_ids_ends_in_one_line(tmp_path: Path, counted: bool) -> None:
    sim, asked = making_up_ids(counted=counted, varied=counted)
    async with sim:
        settings = settings_for(sim, tmp_path, api="v6", stack_id=sim.stack_id, tests=[TEST],
                                page_size=3)  # fmt: skip
        with pytest.raises(ApiStatusError) as raised:
            await discover_runs(settings, Selection.from_settings(settings))
    said = str(raised.value)
    assert said.startswith(f"v6_runs /cloud/v6/load_tests/{TEST}/test_runs?"), said
    if counted:  # rows that differ: the 9 read make the 8 the listing counts, on page 3
        assert "though the 9 rows read make the listing's @count of 8" in said
        assert len(asked) == 3
    else:  # the second page is the first but for its ids
        assert "a page of 3 rows the same as the page before but for their ids" in said
        assert len(asked) == 2


async def test_a_v2_listing_making_up_ids_without_a_count_ends_in_one_line(
    tmp_path: Path,
) -> None:
    sim, asked = making_up_ids(counted=False)
    async with sim:
        settings = settings_for(sim, tmp_path, tests=[TEST], page_size=3)
        with pytest.raises(ApiStatusError) as raised:
            await discover_runs(settings, Selection.from_settings(settings))
    said = str(raised.value)
    assert said.startswith(f"runs /loadtests/v2/runs?test_id={TEST}&page=2&page_size=3: "), said
    ending = "for their ids, and the listing goes on (does the API ignore page?)"
    assert said.endswith(f"a page of 3 rows the same as the page before but {ending}"), said
    assert len(asked) == 2


async def test_a_v2_listing_making_up_ids_with_a_count_ends_there_too(tmp_path: Path) -> None:
    """(`meta.count` says a billion: its own pages, the same but for their ids, end it.)"""
    sim, asked = making_up_ids(counted=True)
    async with sim:
        settings = settings_for(sim, tmp_path, tests=[TEST], page_size=3)
        with pytest.raises(ApiStatusError, match="the same as the page before but for their"):
            await discover_runs(settings, Selection.from_settings(settings))
    assert len(asked) == 2


@pytest.mark.parametrize("api", ["v2", "v6"])
async def test_a_long_listing_is_read_whole(tmp_path: Path, api: str) -> None:
    """40 runs of one test in pages of 3 (14 pages): every run, each asked once."""
    cloud = generate_cloud(runs=40, metrics=2, points=2, projects=1, tests=1)
    async with Simulator(cloud) as sim:
        settings = settings_for(sim, tmp_path, api=api, stack_id=sim.stack_id, tests=[TEST],
                                page_size=3)  # fmt: skip
        found = await discover_runs(settings, Selection.from_settings(settings))
        listed = sim.requests_for("runs" if api == "v2" else "v6_runs")
    assert found.found == 40 and len(listed) == 14


def bare_ids() -> Simulator:
    """The simulator with a project (`FIRST_PROJECT_ID`) of 8 tests, whose listings of a
    project's tests (v2 and v6) hold each test's id and nothing else, paged as ever."""

    @web.middleware
    async def bare(request: web.Request, handler: Handler) -> web.StreamResponse:
        answer = await handler(request)
        v2 = request.path == "/loadtests/v2/tests"
        if answer.status != 200 or not (v2 or request.path.endswith("/load_tests")):
            return answer
        assert isinstance(answer, web.Response) and answer.body is not None
        doc: dict[str, Any] = orjson.loads(bytes(answer.body))  # type: ignore[arg-type]
        rows = "k6-tests" if v2 else "value"
        doc[rows] = [{"id": row["id"]} for row in doc[rows]]
        return web.json_response(doc)

    sim = Simulator(generate_cloud(runs=8, metrics=2, points=2, projects=1, tests=8))
    sim.app.middlewares.insert(0, bare)
    return sim


@pytest.mark.parametrize("api", ["v2", "v6"])
async def test_a_listing_of_bare_ids_is_read_whole(tmp_path: Path, api: str) -> None:
    """A project's 8 tests listed by their ids alone, in pages of 3: each page is the page
    before but for its ids, as a made-up page is, yet the listing is real (it ended on its
    second page, the job failing on 'the same as the page before but for their ids')."""
    async with bare_ids() as sim:
        settings = settings_for(sim, tmp_path, api=api, stack_id=sim.stack_id,
                                projects=[FIRST_PROJECT_ID], page_size=3)  # fmt: skip
        found = await discover_runs(settings, Selection.from_settings(settings))
        listed = sim.requests_for("tests" if api == "v2" else "v6_tests")
    assert found.found == 8 and not found.not_found
    assert len(listed) == 3
