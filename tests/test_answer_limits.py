"""A whole request has a deadline and an answer a size cap: a server that trickles its
bytes or sends without end costs a run its retries and a clear reason, never a job that
waits or holds for ever. Each server here is a tiny aiohttp.web app on loopback."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import pytest
from aiohttp import web
from yarl import URL

from harvester.cli import main
from harvester.config import Settings, load_settings
from harvester.errors import AnswerTooLarge, RetriesExhausted
from harvester.job import harvest_job
from harvester.ratelimit import RateGate
from harvester.scheduler import RunTarget
from harvester.stats import HarvestStats
from harvester.transport import Transport
from tests.harvest_helpers import serve

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Never reached by a passing test: it turns a hang into a failure.
HANG_GUARD = 30
#: A token as long as a real one: one shorter than 8 characters is not hidden in bodies.
TOKEN = "tok-1234567890abcdef"


@asynccontextmanager
async def api_with(odd: Handler) -> AsyncIterator[tuple[str, list[str]]]:
    """An API on loopback whose metrics answer comes from `odd`, every other one empty;
    yields its base URL and the paths asked."""
    asked: list[str] = []

    async def answer(request: web.Request) -> web.StreamResponse:
        asked.append(request.path)
        if request.path == "/loadtests/v2/metrics":
            return await odd(request)
        lists = {"thresholds": ["k6-metrics", "k6-thresholds"]}.get(request.path.split("/")[-1])
        key = "k6-run-overviews" if request.path.endswith("run-overviews") else "k6-metrics"
        return web.json_response({name: [] for name in lists or [key]})

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    async with serve(app) as base_url:
        yield base_url, asked


def settings(base_url: str, out: Path, **more: Any) -> Settings:
    flags = {"base_url": base_url, "token": "t", "out": str(out), "max_attempts": 2,
             "backoff_base": 0.001, "backoff_cap": 0.001, **more}  # fmt: skip
    return load_settings(flags, environ={})


async def failed_reason(base_url: str, out: Path, **more: Any) -> str:
    with anyio.fail_after(HANG_GUARD):
        result = await harvest_job(settings(base_url, out, **more), [RunTarget(1)])
    (failed,) = result.report.failed
    return failed.reason or ""


async def trickle(request: web.Request) -> web.StreamResponse:
    """A 200 whose body comes a byte at a time, each well within any read timeout."""
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    await resp.prepare(request)
    try:
        while True:
            await resp.write(b" ")
            await anyio.sleep(0.02)
    except (ConnectionError, RuntimeError):  # the client gave up: the connection is gone
        return resp


async def test_a_server_that_trickles_its_answer_fails_the_run_after_its_retries(
    tmp_path: Path,
) -> None:
    async with api_with(trickle) as (url, asked):
        reason = await failed_reason(url, tmp_path, request_timeout=0.3)
    assert reason == (
        "retries exhausted: metrics /loadtests/v2/metrics?test_run_id=1: gave up after 2 tries "
        "(last: the answer was not whole within 0.3 s (--request-timeout))"
    )
    assert asked.count("/loadtests/v2/metrics") == 2  # tried again, as any timeout is
    assert not list(tmp_path.glob("*.ndjson"))


def test_a_trickling_server_is_exit_1_with_one_line_naming_the_run(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with anyio.from_thread.start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(api_with(trickle)) as (url, _):
            args = ["harvest", "--token", "t", "--base-url", url, "--run", "1", "--out",
                    str(tmp_path), "--request-timeout", "0.3", "--max-attempts", "1"]  # fmt: skip
            assert main(args) == 1
    err = capfd.readouterr().err
    line = next(line for line in err.splitlines() if "run 1 failed" in line)
    assert "not whole within 0.3 s (--request-timeout)" in line and "Traceback" not in err


async def test_the_deadline_is_the_whole_requests_not_each_redirect_hops(tmp_path: Path) -> None:
    """Three redirects, each hop well within --request-timeout and all four past it: one
    deadline for the request (each hop had its own: four times the deadline in all)."""

    async def redirects(request: web.Request) -> web.StreamResponse:
        hop = int(request.query.get("hop", "0"))
        await anyio.sleep(0.4)
        if hop < 3:
            raise web.HTTPFound(f"{request.path}?test_run_id=1&hop={hop + 1}")
        return web.json_response({"k6-metrics": []})

    async with api_with(redirects) as (url, asked):
        reason = await failed_reason(url, tmp_path, request_timeout=1, max_attempts=1)
    assert reason.startswith("retries exhausted: metrics /loadtests/v2/metrics?test_run_id=1: ")
    assert "the answer was not whole within 1 s (--request-timeout)" in reason
    assert asked.count("/loadtests/v2/metrics") <= 3  # the last hop was never asked


async def test_a_downloads_redirects_share_its_deadline_too(tmp_path: Path) -> None:
    """A CSV export's file follows its redirects inside aiohttp, under one deadline."""

    async def redirects(request: web.Request) -> web.StreamResponse:
        hop = int(request.query.get("hop", "0"))
        await anyio.sleep(0.45)
        if hop < 2:
            raise web.HTTPFound(f"{request.path}?hop={hop + 1}")
        return web.Response(body=b"metric_name\n", content_type="text/csv")

    with pytest.raises(RetriesExhausted, match=r"not whole within 1 s \(--request-timeout\)"):
        await download_from(redirects, tmp_path, request_timeout=1, max_attempts=1)


async def test_a_download_that_trickles_ends_too(tmp_path: Path) -> None:
    app = web.Application()
    app.router.add_get("/f.csv", trickle)
    async with serve(app) as base_url:
        transport = Transport(
            settings(base_url, tmp_path, request_timeout=0.3),
            gate=RateGate(1000),
            stats=HarvestStats(),
        )
        async with transport:
            with anyio.fail_after(HANG_GUARD), pytest.raises(RetriesExhausted) as raised:
                await transport.download(URL(f"{base_url}/f.csv"), io.BytesIO())
    assert "not whole within 0.3 s (--request-timeout)" in str(raised.value)


# --- the size cap ----------------------------------------------------------------------

MB = 1 << 20


class Flood:
    """A 200 of 64 MB sent as it is made (no Content-Length), counting what got out
    before the client hung up."""

    def __init__(self) -> None:
        self.sent = 0

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        try:
            await resp.write(b'{"k6-metrics": [')
            while self.sent < 64 * MB:
                await resp.write(b'{"id": "x"},' * 5000)
                self.sent += 5000 * 12
        except (ConnectionError, RuntimeError):  # the client hung up
            pass
        return resp


async def test_an_answer_past_the_cap_fails_the_run_without_reading_the_rest(
    tmp_path: Path,
) -> None:
    flood = Flood()
    async with api_with(flood) as (url, asked):
        reason = await failed_reason(url, tmp_path, max_answer_size=1, token=TOKEN)
    assert reason == (
        "unusable answer: metrics /loadtests/v2/metrics?test_run_id=1: answer larger than 1 MB "
        "(its first bytes only were read); raise --max-answer-size if the API's answers are "
        "really that big"
    )
    assert TOKEN not in reason
    assert asked.count("/loadtests/v2/metrics") == 1  # asking again would bring as much
    assert flood.sent < 32 * MB  # the rest was never sent: the connection was closed


async def test_a_content_length_past_the_cap_is_refused_before_its_body(tmp_path: Path) -> None:
    async def big(_: web.Request) -> web.Response:
        return web.Response(body=b" " * (2 * MB), content_type="application/json")

    async with api_with(big) as (url, _):
        reason = await failed_reason(url, tmp_path, max_answer_size=1)
    assert "answer larger than 1 MB (it says 2,097,152 bytes)" in reason


async def download_from(handler: Handler, out: Path, **more: Any) -> int:
    """`Transport.download` of the one file `handler` serves (`--max-answer-size` 1 MB)."""

    async def answer(request: web.Request) -> web.StreamResponse:
        return await handler(request)

    app = web.Application()
    app.router.add_get("/f.csv", answer)
    async with serve(app) as base_url:
        flags = settings(base_url, out, max_answer_size=1, **more)
        async with Transport(flags, gate=RateGate(1000), stats=HarvestStats()) as transport:
            with anyio.fail_after(HANG_GUARD):
                return await transport.download(URL(f"{base_url}/f.csv?sig=s3cr3t"), io.BytesIO())


async def test_a_csv_download_past_the_cap_fails_as_an_answer_does(tmp_path: Path) -> None:
    """The CSV export's file is capped by --max-answer-size like an API answer: it was
    written to disk without end. Not asked again (it would bring as much); the signed
    URL's query stays out of the message."""
    flood = Flood()
    with pytest.raises(AnswerTooLarge) as raised:
        await download_from(flood, tmp_path)
    assert str(raised.value) == (
        "export_file 127.0.0.1/f.csv: answer larger than 1 MB (its first bytes only were "
        "read); raise --max-answer-size if the API's answers are really that big"
    )
    assert raised.value.url == "127.0.0.1/f.csv" and flood.sent < 32 * MB

    async def big(_: web.Request) -> web.Response:
        return web.Response(body=b" " * (2 * MB), content_type="text/csv")

    with pytest.raises(AnswerTooLarge, match=r"larger than 1 MB \(it says 2,097,152 bytes\)"):
        await download_from(big, tmp_path)

    async def exactly(_: web.Request) -> web.Response:
        return web.Response(body=b"x" * MB, content_type="text/csv")

    assert await download_from(exactly, tmp_path) == MB


async def test_an_answer_within_the_cap_is_read_whole(tmp_path: Path) -> None:
    """Just under the cap, in many chunks: every byte is kept (the count is not off by one
    chunk), and the run is published."""
    body = b'{"k6-metrics": [' + b" " * (MB - 18) + b"]}"
    assert len(body) == MB

    async def exactly(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        for start in range(0, len(body), 4096):
            await resp.write(body[start : start + 4096])
        await resp.write_eof()
        return resp

    async with api_with(exactly) as (url, _):
        with anyio.fail_after(HANG_GUARD):
            result = await harvest_job(settings(url, tmp_path, max_answer_size=1), [RunTarget(1)])
    assert not result.report.failed and (tmp_path / "1.ndjson").exists()
