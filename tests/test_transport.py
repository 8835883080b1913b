"""How answers become errors, and what happens when the base URL is not an HTTP server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketStream

from harvester.errors import (
    ApiStatusError,
    ApiUnreachable,
    AuthRejected,
    NotFound,
    RateLimited,
    RetryableError,
    ServerError,
    UrlTooLong,
)
from harvester.job import harvest_job
from harvester.scheduler import RunTarget
from harvester.transport import classify, error_message


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (401, b'{"error": {"message": "bad token"}}', AuthRejected),
        (403, b"{}", AuthRejected),
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
    from yarl import URL

    from harvester.transport import short_url

    ids = "&".join(f"ids%5B%5D={i:032x}" for i in range(180))
    url = URL(f"http://h:1/loadtests/v2/series?test_run_id=5&{ids}&method=p95", encoded=True)
    assert short_url(url) == "/loadtests/v2/series?test_run_id=5&method=p95 (180 ids)"
