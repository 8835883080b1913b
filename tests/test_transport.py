"""How answers become errors, and what happens when the base URL is not an HTTP server."""

from __future__ import annotations

import contextlib
import io
import re
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import anyio.from_thread
import orjson
import pytest
from aiohttp import web
from anyio.abc import SocketAttribute, SocketStream
from yarl import URL

from harvester.cli import main
from harvester.config import Settings, load_settings
from harvester.error_answers import classify, error_message, parse_retry_after
from harvester.errors import (
    ApiStatusError,
    ApiUnreachable,
    AuthRejected,
    Forbidden,
    NotFound,
    RateLimited,
    RetryableError,
    ServerError,
    UnusableAnswer,
    UrlTooLong,
)
from harvester.job import harvest_job
from harvester.ratelimit import RateGate
from harvester.scheduler import RunTarget
from harvester.simulator.faults import FaultPlan
from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator
from harvester.stats import HarvestStats
from harvester.transport import Transport
from tests.harvest_helpers import cli_args, read_dir, serve, settings_for, targets


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (401, b'{"error": {"message": "bad token"}}', AuthRejected),
        (403, b"{}", Forbidden),
        (404, b'{"detail": "Not found."}', NotFound),
        (408, b"", ServerError),
        (414, b"", UrlTooLong),
        (400, b'{"error": {"message": "Request URL too long"}}', UrlTooLong),
        (400, b'{"error": {"message": "invalid metric id"}}', ApiStatusError),
        (422, b"{}", ApiStatusError),
        (429, b"{}", RateLimited),
        (500, b"<html>oops</html>", ServerError),
        (503, b"", ServerError),
    ],
)
def test_each_status_becomes_the_right_error(
    status: int, body: bytes, kind: type[Exception]
) -> None:
    error = classify(status, body, {"Retry-After": "2"}, "http://x/y")
    assert type(error) is kind
    assert error.status == status


def test_retry_after_is_kept_for_429_and_5xx() -> None:
    def wait(status: int, headers: dict[str, str]) -> float | None:
        error = classify(status, b"", headers, "u")
        assert isinstance(error, RetryableError)
        return error.retry_after

    assert wait(429, {"Retry-After": "7"}) == 7.0
    assert wait(503, {"Retry-After": "3"}) == 3.0
    assert wait(503, {}) is None


def test_the_servers_own_words_are_shown() -> None:
    assert (
        error_message(b'{"error": {"message": "Test run 7 not found."}}') == "Test run 7 not found."
    )
    assert error_message(b'{"detail": "Invalid token."}') == "Invalid token."
    assert error_message(b"<html>Bad gateway</html>") == "<html>Bad gateway</html>"
    assert "rejected the token (HTTP 401: nope)" in str(
        classify(401, b'{"message": "nope"}', {}, "u")
    )


@pytest.fixture
async def not_http() -> AsyncIterator[str]:
    """A loopback TCP server that answers every connection with a line that is not HTTP."""

    async def answer(stream: SocketStream) -> None:
        async with stream:
            await stream.send(b"SSH-2.0-OpenSSH_9.6\r\n")

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, answer)
        yield f"http://127.0.0.1:{port}"
        tg.cancel_scope.cancel()


async def test_a_base_url_that_is_not_an_http_server_ends_the_job_clearly(
    not_http: str, tmp_path: Path
) -> None:
    from harvester.config import load_settings

    settings = load_settings(
        {"base_url": not_http, "token": "t", "out": str(tmp_path), "max_attempts": 2,
         "backoff_base": 0.001, "backoff_cap": 0.001},
        environ={},
    )  # fmt: skip
    with pytest.raises(ApiUnreachable, match=f"cannot reach the API at {not_http}"):
        await harvest_job(settings, [RunTarget(1), RunTarget(2)])


def test_messages_count_a_series_requests_ids_instead_of_listing_them() -> None:

    from harvester.wire import short_url

    ids = "&".join(f"ids%5B%5D={i:032x}" for i in range(180))
    url = URL(f"http://h:1/loadtests/v2/series?test_run_id=5&{ids}&method=p95", encoded=True)
    assert short_url(url) == "/loadtests/v2/series?test_run_id=5&method=p95 (180 ids)"
    one = URL(f"http://h:1/loadtests/v2/series?test_run_id=5&ids%5B%5D={0:032x}", encoded=True)
    assert short_url(one) == "/loadtests/v2/series?test_run_id=5 (1 id)"


# --- an API that only times out (issue 14.9) -----------------------------------------


@pytest.fixture
def silent() -> Iterator[str]:
    """A loopback port whose connections are accepted (the kernel completes them into the
    backlog) and never answered: a server that hangs."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as server:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


@pytest.fixture
def dropping() -> Iterator[str]:
    """A loopback port that ignores connection attempts, like a firewall dropping packets:
    its backlog is full and never drained, so the kernel drops new SYNs."""
    with socket.create_server(("127.0.0.1", 0), backlog=0) as server:
        port = server.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            for filler in fillers:
                filler.close()


def quick(base_url: str, out: Path) -> Settings:
    return load_settings(
        {"base_url": base_url, "token": "t", "out": str(out), "max_attempts": 2,
         "connect_timeout": 0.2, "read_timeout": 0.2, "backoff_base": 0.001,
         "backoff_cap": 0.001},
        environ={},
    )  # fmt: skip


async def test_a_server_that_never_answers_is_an_unreachable_api(
    silent: str, tmp_path: Path
) -> None:
    with pytest.raises(ApiUnreachable, match="no answer in time, and no request has had an"):
        await harvest_job(quick(silent, tmp_path), [RunTarget(1), RunTarget(2)])


async def test_connecting_that_times_out_is_an_unreachable_api(
    dropping: str, tmp_path: Path
) -> None:
    with pytest.raises(ApiUnreachable, match=r"cannot connect to 127\.0\.0\.1:\d+ \(timed out\)"):
        await harvest_job(quick(dropping, tmp_path), [RunTarget(1), RunTarget(2)])


def test_an_api_that_only_times_out_is_one_line_and_exit_2(
    silent: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    args = ["harvest", "--token", "t", "--base-url", silent, "--run", "1", "--run", "2",
            "--out", str(tmp_path), "--max-attempts", "2", "--read-timeout", "0.2"]  # fmt: skip
    assert main(args) == 2
    error = orjson.loads(capfd.readouterr().err.splitlines()[0])
    assert error["exit_status"] == 2 and "cannot reach the API at" in error["message"]
    assert not list(tmp_path.glob("*.ndjson"))


# --- a 403 fails its run; only 401, or 403 for everything, blames the token (14.10) ----


async def test_a_403_on_one_run_fails_that_run_and_the_others_are_published(
    tmp_path: Path,
) -> None:
    cloud = generate_cloud(runs=3, metrics=10, points=3)
    async with Simulator(cloud, faults=FaultPlan(forbidden_runs=frozenset({100002}))) as sim:
        result = await harvest_job(settings_for(sim, tmp_path), targets(cloud))
    (failed,) = result.report.failed
    said = "forbidden: metrics /loadtests/v2/metrics?test_run_id=100002: HTTP 403"
    assert failed.run_id == 100002 and said in (failed.reason or "")  # naming the request
    assert sorted(read_dir(tmp_path)) == [100001, 100003]


async def test_403_for_everything_means_the_token(tmp_path: Path) -> None:
    cloud = generate_cloud(runs=4, metrics=10, points=3)
    plan = FaultPlan(forbidden_runs=frozenset(cloud.runs))
    async with Simulator(cloud, faults=plan) as sim:
        with pytest.raises(AuthRejected, match="refused all of the first 3 requests"):
            await harvest_job(settings_for(sim, tmp_path), targets(cloud))
    assert not list(tmp_path.glob("*.ndjson"))


def test_a_403_on_one_run_is_exit_1_naming_it(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    cloud = generate_cloud(runs=2, metrics=5, points=3)
    plan = FaultPlan(forbidden_runs=frozenset({100002}))
    with anyio.from_thread.start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(Simulator(cloud, faults=plan)) as sim:
            args = cli_args(sim, tmp_path, "--run", "100001", "--run", "100002")
            assert main(args) == 1
    err = capfd.readouterr().err
    said = (
        "run 100002 failed: forbidden: metrics /loadtests/v2/metrics?test_run_id=100002: HTTP 403"
    )
    assert said in err and "rejected the token" not in err
    assert sorted(read_dir(tmp_path)) == [100001]


# --- malformed answers are faults of their request or run (14.11) ----------------------

#: A run with nothing in it, as the API would answer it.
EMPTY_RUN: dict[str, dict[str, list[object]]] = {
    "/loadtests/v2/metrics": {"k6-metrics": []},
    "/loadtests/v2/thresholds": {"k6-metrics": [], "k6-thresholds": []},
    "/loadtests/v2/run-overviews": {"k6-run-overviews": []},
}
FAR_DATE = "Wed, 21 Oct 99999999999999999999 07:28:10 GMT"


@contextlib.asynccontextmanager
async def tiny_api(*odd: web.Response) -> AsyncIterator[tuple[str, list[str]]]:
    """An API on loopback whose first answers are `odd`, then the empty run's; yields its
    base URL and the paths asked, in order."""
    asked: list[str] = []
    pending = list(odd)

    async def answer(request: web.Request) -> web.Response:
        asked.append(request.path)
        if pending:
            return pending.pop(0)
        return web.json_response(EMPTY_RUN[request.path])

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    async with serve(app) as base_url:
        yield base_url, asked


async def harvest_one(base_url: str, out: Path, output_format: str = "raw") -> str | None:
    """Harvest run 1; the reason it failed, or None when it was published."""
    settings = load_settings(
        {"base_url": base_url, "token": "t", "out": str(out), "max_attempts": 3,
         "backoff_base": 0.001, "backoff_cap": 0.001, "format": output_format},
        environ={},
    )  # fmt: skip
    result = await harvest_job(settings, [RunTarget(1)])
    failed = result.report.failed
    return (failed[0].reason or "") if failed else None


async def test_a_refusal_names_its_request_once(tmp_path: Path) -> None:
    """'API error: HTTP 400: nope' named no request; a retried answer's request is named
    once, not again in its last words."""
    async with tiny_api(web.json_response({"detail": "nope"}, status=400)) as (url, _asked):
        refused = await harvest_one(url, tmp_path)
    assert refused == "API error: metrics /loadtests/v2/metrics?test_run_id=1: HTTP 400: nope"
    busy = [web.json_response({"detail": "busy"}, status=503) for _ in range(3)]
    async with tiny_api(*busy) as (url, _asked):
        exhausted = await harvest_one(url, tmp_path / "again")
    assert exhausted == (
        "retries exhausted: metrics /loadtests/v2/metrics?test_run_id=1: gave up after 3 tries "
        "(last: HTTP 503: busy)"
    )


async def test_a_list_item_that_is_not_an_object_fails_the_run_naming_the_endpoint(
    tmp_path: Path,
) -> None:
    async with tiny_api(web.json_response({"k6-metrics": [{"id": "a"}, None]})) as (url, asked):
        reason = await harvest_one(url, tmp_path)
    assert reason == (
        "unusable answer: metrics /loadtests/v2/metrics?test_run_id=1: item 1 of 'k6-metrics' "
        "is null, not an object"
    )
    assert asked == ["/loadtests/v2/metrics"]  # asking again would bring the same


async def test_an_answer_without_its_list_is_asked_again(tmp_path: Path) -> None:
    async with tiny_api(web.json_response({"detail": "glitch"})) as (url, asked):
        assert await harvest_one(url, tmp_path) is None
    assert asked.count("/loadtests/v2/metrics") == 2


async def test_a_retry_after_date_past_year_9999_is_a_429_without_one(tmp_path: Path) -> None:
    throttled = web.json_response({}, status=429, headers={"Retry-After": FAR_DATE})
    async with tiny_api(throttled) as (url, asked):
        assert await harvest_one(url, tmp_path) is None  # waited its backoff, then retried
    assert asked.count("/loadtests/v2/metrics") == 2


async def test_a_redirect_to_a_malformed_url_fails_the_run(tmp_path: Path) -> None:
    moved = web.Response(status=302, headers={"Location": "http://[::1"})
    async with tiny_api(moved) as (url, _asked):
        reason = await harvest_one(url, tmp_path)
    assert reason is not None
    assert reason.startswith(
        "unusable answer: metrics /loadtests/v2/metrics?test_run_id=1: the API redirected to a "
        "malformed URL 'http://[::1'"
    )


@pytest.mark.parametrize("value", [FAR_DATE, "nan", "inf", "1e999", "Sun, 99 Foo 2020", " "])
def test_a_retry_after_that_cannot_be_read_is_none(value: str) -> None:
    assert parse_retry_after(value) is None


async def test_a_download_redirected_to_a_malformed_url_fails_clearly() -> None:
    async def moved(_: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "http://[::1"})

    app = web.Application()
    app.router.add_get("/f.csv", moved)
    settings = load_settings({"token": "t"}, environ={})
    async with serve(app) as base_url:
        async with Transport(settings, gate=RateGate(1000), stats=HarvestStats()) as transport:
            with pytest.raises(UnusableAnswer, match="redirected to a malformed URL"):
                await transport.download(URL(f"{base_url}/f.csv"), io.BytesIO())


async def test_a_broken_connection_is_said_in_words_not_a_class_name(tmp_path: Path) -> None:
    """A server that hangs up on every request without a word: the message says what
    happened, with no Python class name in it (it said "(ServerDisconnectedError)"), and
    names the request, the token hidden, as an error answer's words do (it said only
    'metrics: connection broke')."""

    async def hang_up(stream: SocketStream) -> None:
        async with stream:
            await stream.receive()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    base = f"http://127.0.0.1:{listener.extra(SocketAttribute.local_port)}"
    token = "tok-1234567890abcdef"
    settings = load_settings(
        {"base_url": base, "token": token, "out": str(tmp_path), "max_attempts": 1}, environ={}
    )
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, hang_up)
        with pytest.raises(ApiUnreachable) as raised:
            await harvest_job(settings, [RunTarget(1)])
        tg.cancel_scope.cancel()
    message = str(raised.value)
    named = r"\w+ /loadtests/v2/\S+\?\S*test_run_id=1\S*: connection broke \(Server disconnected\)"
    assert re.search(named, message), message
    assert token not in message
    assert not re.search(r"\b[A-Z][a-z]+[A-Z]\w*(Error|Exception)\b", message)
