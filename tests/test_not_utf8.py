"""An answer that is no JSON at all fails its request at once, naming the problem, on both
APIs: not UTF-8 (a server writing Latin-1), or an HTML page (a proxy's or login page).
Asked again, it would come back the same. A body cut inside a character is cut short,
retried as before; a byte-order mark is skipped."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from aiohttp import web

from harvester.job import harvest_job
from harvester.simulator.faults import FaultPlan
from harvester.simulator.server import Simulator
from tests.harvest_helpers import settings_for, targets
from tests.test_transport import harvest_one, tiny_api

LATIN1 = "answer is not UTF-8 (byte 0xe9 at offset "


@pytest.mark.parametrize(
    ("api", "endpoint"),
    [("v2", "thresholds"), ("v2", "metrics"), ("v2", "series"), ("v6", "v5_metrics")],
)
async def test_an_answer_in_latin1_fails_its_run_once_asked_naming_the_encoding(
    simulator: Simulator, tmp_path: Path, api: str, endpoint: str
) -> None:
    simulator.faults = FaultPlan(p_latin1=1.0, fault_endpoints=frozenset({endpoint}))
    v6 = {"api": "v6", "stack_id": simulator.stack_id, "step": 3} if api == "v6" else {}
    settings = settings_for(simulator, tmp_path, max_attempts=4, **v6)
    runs = targets(simulator.cloud)
    result = await harvest_job(settings, runs)
    assert len(result.report.failed) == len(runs)
    for outcome in result.report.failed:
        assert outcome.reason is not None and outcome.reason.startswith(
            f"unusable answer: {endpoint} /"
        )
        assert LATIN1 in (outcome.reason or ""), outcome.reason
        assert "JSON must be UTF-8" in (outcome.reason or "")
    assert len(simulator.requests_for(endpoint)) == len(runs)  # not one retry
    assert result.stats.retries == 0


async def test_a_body_cut_inside_a_character_is_cut_short_and_asked_again(
    tmp_path: Path,
) -> None:
    whole = orjson.dumps({"k6-metrics": [{"id": "a", "name": "é"}]})
    cut = web.Response(body=whole[: whole.index("é".encode()) + 1], content_type="application/json")
    async with tiny_api(cut) as (url, asked):
        assert await harvest_one(url, tmp_path) is None
    assert asked.count("/loadtests/v2/metrics") == 2


async def test_a_byte_order_mark_before_the_json_is_skipped(tmp_path: Path) -> None:
    marked = web.Response(
        body=b"\xef\xbb\xbf" + orjson.dumps({"k6-metrics": []}), content_type="application/json"
    )
    async with tiny_api(marked) as (url, asked):
        assert await harvest_one(url, tmp_path) is None
    assert asked.count("/loadtests/v2/metrics") == 1


async def test_an_html_page_answering_for_the_api_fails_its_run_once_asked(
    tmp_path: Path,
) -> None:
    page = web.Response(
        text="<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body></body></html>",
        content_type="text/html",
    )
    async with tiny_api(page) as (url, asked):
        reason = await harvest_one(url, tmp_path)
    assert reason is not None and reason.startswith("unusable answer: metrics /loadtests/v2/")
    assert (
        "HTTP 200 answer is HTML, not JSON ('<!DOCTYPE html> <html><head><title>Sign in" in reason
    )
    assert "check --base-url" in reason
    assert asked.count("/loadtests/v2/metrics") == 1  # a login page does not go away
