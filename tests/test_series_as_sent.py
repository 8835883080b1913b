"""A v2 serie is archived as the text the API sent (`series_answers.series_answer`), not parsed
and encoded again; an answer that is not plainly whole UTF-8 JSON on one line is read as
any answer is, with the same errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from aiohttp import web

from harvester.errors import MalformedAnswer, UnusableAnswer
from harvester.series_answers import series_answer
from tests.harvest_helpers import serve
from tests.test_transport import harvest_one

#: Written by orjson as `100.0` and `1.2345678901234568e+29`: kept as sent.
AS_SENT = (
    b'{"metric_id":"a","values":[{"timestamp":"2024-06-03T12:00:00Z","value":1E+2}],'
    b'"big":123456789012345678901234567890,"name":"caf\xc3\xa9"}'
)
OTHER = b'{"metric_id":"b","values":[]}'
RUN = {
    "/loadtests/v2/metrics": {"k6-metrics": [{"id": "a"}, {"id": "b"}]},
    "/loadtests/v2/thresholds": {"k6-metrics": [], "k6-thresholds": []},
    "/loadtests/v2/run-overviews": {"k6-run-overviews": []},
}


def where() -> str:
    return "/loadtests/v2/series"


@asynccontextmanager
async def series_api(body: bytes) -> AsyncIterator[str]:
    """Run 1 of two metrics, whose series request is answered `body`."""

    async def answer(request: web.Request) -> web.Response:
        if request.path.endswith("/series"):
            return web.Response(body=body, content_type="application/json")
        return web.json_response(RUN[request.path])

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    async with serve(app) as base_url:
        yield base_url


async def harvest_series(body: bytes, out: Path) -> list[bytes] | str:
    """The `series` lines of run 1 as published, or why the run failed."""
    async with series_api(body) as base_url:
        reason = await harvest_one(base_url, out)
    if reason is not None:
        return reason
    lines = (out / "1.ndjson").read_bytes().splitlines()
    return [line for line in lines if line.startswith(b'{"type":"series"')]


async def test_a_serie_is_archived_as_the_text_the_api_sent(tmp_path: Path) -> None:
    lines = await harvest_series(b'{"k6-serie":[' + AS_SENT + b"," + OTHER + b"]}", tmp_path)
    head = b'{"type":"series","test_run_id":1,"data":'
    assert lines == [head + AS_SENT + b"}", head + OTHER + b"}"]


async def test_series_sent_over_several_lines_are_one_line_each(tmp_path: Path) -> None:
    served = {"k6-serie": [orjson.loads(AS_SENT), orjson.loads(OTHER)]}
    lines = await harvest_series(json.dumps(served, indent=2).encode(), tmp_path)
    assert isinstance(lines, list)
    assert [orjson.loads(line)["data"] for line in lines] == served["k6-serie"]


async def test_a_serie_that_is_not_an_object_fails_the_run_as_for_any_list(
    tmp_path: Path,
) -> None:
    reason = await harvest_series(b'{"k6-serie":[' + OTHER + b",null]}", tmp_path)
    assert isinstance(reason, str) and reason.startswith("unusable answer: series /")
    assert reason.endswith("item 1 of 'k6-serie' is null, not an object")


@pytest.mark.parametrize(
    "body",
    [
        b'{"k6-serie":[' + AS_SENT + b"," + OTHER + b"]}",  # read as sent
        b'{"k6-serie":[' + AS_SENT + b",\n" + OTHER + b"]}",  # parsed and encoded
    ],
)
def test_an_answer_tells_its_metric_ids_and_its_longest_serie(body: bytes) -> None:
    answer = series_answer(body, 200, "series", where)
    assert answer.metric_ids == ["a", "b"]
    assert answer.points == 1
    assert [orjson.loads(bytes(text)) for text in answer.texts] == [
        orjson.loads(AS_SENT),
        orjson.loads(OTHER),
    ]


def test_series_without_a_values_list_or_an_id_are_read_alike_either_way() -> None:
    series = b'[{"values":{"x":1}},{"metric_id":7,"values":null},{"metric_id":"c"}]'
    for body in (b'{"k6-serie":' + series + b"}", b'{"k6-serie":\n' + series + b"}"):
        answer = series_answer(body, 200, "series", where)
        assert answer.metric_ids == ["None", "7", "c"]
        assert answer.points is None


def test_an_answer_not_utf8_or_without_its_list_is_refused_as_any_answer() -> None:
    # Latin-1 in what is skipped (msgspec checks the UTF-8 of the strings it reads only)
    for serie in (b'{"name":"caf\xe9"}', b'{"values":[{"timestamp":"\xe9"}]}'):
        with pytest.raises(UnusableAnswer, match="not UTF-8"):
            series_answer(b'{"k6-serie":[' + serie + b"]}", 200, "series", where)
    with pytest.raises(MalformedAnswer, match="without its 'k6-serie' list"):
        series_answer(b'{"detail":"glitch"}', 200, "series", where)


def test_a_value_past_a_doubles_range_is_read_as_any_answer_and_kept_as_sent() -> None:
    # Copied as sent into a points file, `1e999` would break its rule (a finite number
    # or null): the answer is read as any answer is (`jsontext.loads`: whole JSON, the
    # number kept as the API wrote it; the points file holds null for it).
    # The point is written value first, so that the points writers read it parsed.
    serie = b'{"metric_id":"a","values":[{"timestamp":"t","value":1e999}]}'
    answer = series_answer(b'{"k6-serie":[' + serie + b"]}", 200, "series", where)
    kept = b'{"metric_id":"a","values":[{"value":1e999,"timestamp":"t"}]}'
    assert [bytes(text) for text in answer.texts] == [kept] and answer.points == 1


@pytest.mark.parametrize(
    ("serie", "time"),
    [
        (b'{"metric_id":"a","big":1e999,"values":[{"timestamp":"t","value":1}]}', "t"),
        (b'{"metric_id":"a","n":1' + b"0" * 400 + b',"values":[{"timestamp":"t","value":1}]}', "t"),
        (b'{"metric_id":"a","values":[{"timestamp":-2E+308,"value":1}]}', None),
    ],
)
@pytest.mark.parametrize("output_format", ["points", "parquet"])
async def test_a_number_past_a_doubles_range_in_a_field_not_read_leaves_the_points_whole(
    tmp_path: Path, serie: bytes, time: str | None, output_format: str
) -> None:
    # Kept as sent (msgspec skips it unread), it is in the series line, which orjson
    # refuses: the points and Parquet writers stopped the whole job ("cannot write to").
    async with series_api(b'{"k6-serie":[' + serie + b"]}") as base_url:
        assert await harvest_one(base_url, tmp_path, output_format=output_format) is None
    if output_format == "points":  # the same serie for each of the run's two metrics
        lines = (tmp_path / "1.points.ndjson").read_bytes().splitlines()
        assert [(p["time"], p["value"]) for p in map(orjson.loads, lines)] == [(time, 1)] * 2
    else:  # (a time that is no RFC 3339 time is null in Parquet's timestamp column)
        assert pq.read_table(tmp_path / "1.parquet").column("value").to_pylist() == [1.0] * 2


def test_a_value_that_is_no_number_makes_the_serie_encoded_again() -> None:
    serie = b'{"metric_id":"a","values":[{"timestamp":"t","value":"1.5"}]}'
    answer = series_answer(b'{"k6-serie":[' + serie + b"]}", 200, "series", where)
    assert [bytes(text) for text in answer.texts] == [orjson.dumps(orjson.loads(serie))]
    assert answer.texts[0] is not serie and answer.points == 1
