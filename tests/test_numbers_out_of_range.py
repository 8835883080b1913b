"""A whole answer that orjson will not read: a number past a double's range (a 400-digit
integer, `1e999`) or a string escaping half of a surrogate pair. It was taken for a body
cut short: asked again `--max-attempts` times, then the run failed saying "not whole
JSON", which it is. Now such numbers are archived as the API wrote them, and text no
UTF-8 file can hold fails the run at once saying so."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from tests.harvest_helpers import serve
from tests.test_series_as_sent import series_api
from tests.test_transport import EMPTY_RUN, harvest_one

LONG = b"1" * 400


def metrics(fields: bytes) -> bytes:
    return b'{"k6-metrics":[{"id":"a","name":"http_reqs",' + fields + b"}]}"


@asynccontextmanager
async def tiny_api(first: bytes) -> AsyncIterator[tuple[str, list[str]]]:
    """A v2 API whose first answer is `first`, then a run of metric `a` without series;
    yields its base URL and the paths asked."""
    asked: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        asked.append(request.path)
        if len(asked) == 1:
            return web.Response(body=first, content_type="application/json")
        if request.path.endswith("/series"):
            return web.json_response({"k6-serie": []})
        return web.json_response(EMPTY_RUN[request.path])

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    async with serve(app) as base_url:
        yield base_url, asked


@pytest.mark.parametrize("number", [LONG, b"-" + LONG, b"1e999", b"-2.5E+400", b"1" * 25])
@pytest.mark.parametrize("output_format", ["raw", "points"])
async def test_a_number_no_double_holds_is_archived_as_sent_at_the_first_answer(
    tmp_path: Path, number: bytes, output_format: str
) -> None:
    async with tiny_api(metrics(b'"extra":' + number)) as (url, asked):
        reason = await harvest_one(url, tmp_path, output_format=output_format)
    assert reason is None
    assert asked.count("/loadtests/v2/metrics") == 1  # whole: not asked again
    name = "1.ndjson" if output_format == "raw" else "1.meta.ndjson"
    lines = (tmp_path / name).read_bytes().splitlines()
    metric = [line for line in lines if line.startswith(b'{"type":"metric"')]
    assert metric == [
        b'{"type":"metric","test_run_id":1,"data":{"id":"a","name":"http_reqs","extra":'
        + number
        + b"}}"
    ]


async def test_half_a_surrogate_pair_fails_the_run_at_once_saying_so(tmp_path: Path) -> None:
    async with tiny_api(metrics(b'"tag":"\\ud800"')) as (url, asked):
        reason = await harvest_one(url, tmp_path)
    assert asked.count("/loadtests/v2/metrics") == 1
    assert reason is not None and "not whole" not in reason
    assert reason.startswith("unusable answer: metrics /loadtests/v2/metrics?test_run_id=1:")
    assert "half of a UTF-16 surrogate pair" in reason


async def test_an_answer_cut_in_a_number_is_still_asked_again(tmp_path: Path) -> None:
    async with tiny_api(b'{"k6-metrics":[{"id":"a","x":' + LONG) as (url, asked):
        assert await harvest_one(url, tmp_path) is None
    assert asked.count("/loadtests/v2/metrics") == 2
    assert orjson.loads((tmp_path / "1.ndjson").read_bytes().splitlines()[-1])["type"] == "summary"


@pytest.mark.parametrize("output_format", ["raw", "points", "parquet"])
async def test_a_point_value_past_a_doubles_range_is_kept_in_raw_and_null_in_points(
    tmp_path: Path, output_format: str
) -> None:
    pytest.importorskip("pyarrow")
    serie = (
        b'{"metric_id":"a","method":"default","values":[{"timestamp":"2024-06-01T00:00:00Z",'
        b'"value":1e999},{"timestamp":"2024-06-01T00:00:01Z","value":2}]}'
    )
    async with series_api(b'{"k6-serie":[' + serie + b"]}") as base_url:
        assert await harvest_one(base_url, tmp_path, output_format=output_format) is None
    if output_format == "raw":  # the point written value first (`_past_double_first`)
        lines = (tmp_path / "1.ndjson").read_bytes().splitlines()
        kept = serie.replace(b'{"timestamp":"2024-06-01T00:00:00Z","value":1e999}',
                             b'{"value":1e999,"timestamp":"2024-06-01T00:00:00Z"}')  # fmt: skip
        assert b'{"type":"series","test_run_id":1,"data":' + kept + b"}" in lines
    elif output_format == "points":
        lines = (tmp_path / "1.points.ndjson").read_bytes().splitlines()
        assert [orjson.loads(line)["value"] for line in lines] == [None, 2] * 2
    else:
        import pyarrow.parquet as pq

        values = pq.read_table(tmp_path / "1.parquet").column("value").to_pylist()
        assert values == [None, 2.0] * 2


def test_a_run_id_kept_as_sent_is_named_as_the_api_wrote_it() -> None:
    from harvester.jsontext import loads
    from harvester.selection import Discovery, by_run_id

    found = Discovery()
    assert by_run_id(loads(b'[{"id":' + LONG + b"}]"), found) == {}
    assert found.not_found[0].endswith(f": {'1' * 40}; skipped")


@pytest.mark.parametrize("record", ["metric", "series"])
async def test_the_report_reads_an_archive_holding_such_a_number(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], record: str
) -> None:
    """It refused the harvester's own archive: `not a JSON line ...; is this a harvester
    archive?` (exit 1), orjson refusing the `1e999` the harvest kept in a metric."""
    from harvester.cli import main

    if record == "metric":
        async with tiny_api(metrics(b'"type":"counter","tags":{},"extra":1e999')) as (url, _):
            assert await harvest_one(url, tmp_path / "a") is None
    else:
        serie = (
            b'{"metric_id":"a","method":"default","values":'
            b'[{"timestamp":"2024-06-01T00:00:00Z","value":1e999}]}'
        )
        async with series_api(b'{"k6-serie":[' + serie + b"]}") as base_url:
            assert await harvest_one(base_url, tmp_path / "a") is None
    assert main(["report", str(tmp_path / "a"), "--out", str(tmp_path / "r.html")]) == 0
    assert "not a JSON line" not in capsys.readouterr().err
    assert b"<html" in (tmp_path / "r.html").read_bytes()[:200].lower()
