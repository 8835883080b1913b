"""v6 listings (`$top`/`$skip`, `@nextLink`) from a server that pages wrongly: one that
ignores `$skip` answered the same page with its `@nextLink` for ever, and the harvester
asked on for ever, its list of rows growing without bound; one whose pages overlap
listed a run twice."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

from harvester.backends.v6_api import V6Api
from harvester.config import load_settings
from harvester.errors import ApiStatusError, UnusableAnswer
from harvester.ratelimit import RateGate
from harvester.stats import HarvestStats
from harvester.transport import Transport
from tests.harvest_helpers import serve

PATH = "/cloud/v6/projects/1/load_tests"


async def listed(page: Callable[[int, int], list[dict[str, Any]]], total: int) -> list[Any]:
    """The rows `V6Api.pages` reads from a listing of `total` rows whose page at ($skip,
    $top) is `page(skip, top)`; at most 50 requests are answered."""
    asked: list[int] = []

    async def answer(request: web.Request) -> web.Response:
        skip, top = int(request.query["$skip"]), int(request.query["$top"])
        asked.append(skip)
        if len(asked) > 50:
            return web.json_response({"detail": "asked too often"}, status=400)
        rows = page(skip, top)
        more = {"@nextLink": "http://x/next"} if skip + len(rows) < total else {}
        return web.json_response({"value": rows, **more})

    app = web.Application()
    app.router.add_get(PATH, answer)
    settings = load_settings({"token": "t"}, environ={})
    async with serve(app) as base_url:
        settings = load_settings({"token": "t", "base_url": base_url}, environ={})
        async with Transport(settings, gate=RateGate(1000), stats=HarvestStats()) as transport:
            return await V6Api(transport).pages("v6_tests", PATH, {}, 3)


def rows(start: int, stop: int) -> list[dict[str, Any]]:
    return [{"id": i, "name": f"t{i}"} for i in range(start, stop)]


async def test_pages_that_overlap_list_each_row_once() -> None:
    # Each page repeats the last row of the one before (a row added meanwhile, say).
    got = await listed(lambda skip, top: rows(max(0, skip - 1), skip - 1 + top), total=10)
    assert [row["id"] for row in got] == list(range(10))


async def test_a_server_ignoring_skip_ends_in_one_line_not_a_loop() -> None:
    said = r"^v6_tests /cloud/v6/projects/1/load_tests\?\$top=3&\$skip=3&\$count=true: a page of 3 "
    said += "rows that "
    with pytest.raises(ApiStatusError, match=said + "brings no row not on the pages before"):
        await listed(lambda skip, top: rows(0, top), total=10**9)


@pytest.mark.parametrize("row", [1, "x", None, [1]])
async def test_a_row_that_is_no_object_is_one_line_not_an_internal_error(row: Any) -> None:
    """As a v2 listing's item (it was AttributeError: 'int' object has no attribute 'get')."""
    with pytest.raises(UnusableAnswer, match=r"item 1 of 'value' is .*, not an object"):
        await listed(lambda skip, top: [{"id": 1}, row], total=2)


async def test_rows_whose_id_is_a_list_or_an_object_are_each_listed() -> None:
    """Kept for `by_run_id` to name as no run id (an unhashable id was TypeError)."""
    odd: list[dict[str, Any]] = [{"id": [1]}, {"id": {"a": 1}}, {"id": [1]}, {"id": 2}]
    got = await listed(lambda skip, top: odd[skip : skip + top], total=4)
    assert got == odd


@pytest.mark.parametrize("row", [{"name": "t"}, {"id": None}, {"id": [1]}])
async def test_a_server_ignoring_skip_with_rows_without_an_id_ends_too(row: Any) -> None:
    """Rows without a usable id were keyed by their place, so each page brought new ones
    and the listing was asked for ever (here, until the server's cap of 50 requests)."""
    with pytest.raises(ApiStatusError, match="brings no row not on the pages before"):
        await listed(lambda skip, top: [row, {**row, "n": 1}, row][:top], total=10**9)
