"""A store (or whatever answers at the endpoint) that redirects: aiohttp followed a 307 to
any host, and aiobotocore let it, so the request went there again with its
X-Amz-Security-Token and its body (a run's data). A redirect is now the store's answer,
said in one line naming where it pointed; nothing goes to the other host."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from harvester.config import load_settings
from tests.harvest_helpers import serve
from tests.s3_helpers import CREDENTIALS

pytest.importorskip("aiobotocore")
pytestmark = pytest.mark.timeout(120, method="thread")

SESSION_TOKEN = "IQoJb3JpZ2luX2VjEXAMPLE-session-DO-NOT-LEAK"


@asynccontextmanager
async def redirecting_store(
    monkeypatch: pytest.MonkeyPatch, status: int
) -> AsyncIterator[tuple[str, list[str]]]:
    """A store that answers every request `status` to the same path on another host;
    yields its URL and what the other host was sent (a line a request)."""
    for name, value in {**CREDENTIALS, "AWS_SESSION_TOKEN": SESSION_TOKEN}.items():
        monkeypatch.setenv(name, value)
    elsewhere: list[str] = []

    async def record(request: web.Request) -> web.Response:
        await request.read()
        elsewhere.append(f"{request.method} {request.path_qs} {dict(request.headers)}")
        return web.Response(status=200)

    other = web.Application()
    other.router.add_route("*", "/{tail:.*}", record)
    async with serve(other) as other_url:

        async def moved(request: web.Request) -> web.Response:
            await request.read()
            return web.Response(status=status, headers={"Location": other_url + request.path_qs})

        store = web.Application()
        store.router.add_route("*", "/{tail:.*}", moved)
        async with serve(store) as url:
            yield url, elsewhere


@pytest.mark.parametrize("status", [307, 302, 308])
async def test_a_redirect_is_not_followed_with_the_credentials_or_the_data(
    monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    from harvester.objectstore.failures import StoreError, StoreRefused
    from harvester.objectstore.store import Store

    async with redirecting_store(monkeypatch, status) as (url, elsewhere):
        settings = load_settings({"out": "s3://b/p/", "s3_endpoint_url": url, "token": "t"})
        store = Store(settings)
        with pytest.raises(StoreRefused) as refused:  # the job's first request
            await store.open()
        store = Store(settings)
        await store.open(check=False)
        try:
            with pytest.raises(StoreError) as failed:  # a run's data
                await store.put("p/1.ndjson", b"a run's records\n", create_only=True)
        finally:
            await store.close()
    assert elsewhere == []
    for said in (str(refused.value), str(failed.value)):
        assert f"the S3 store at {url} redirected the request to 127.0.0.1:" in said
        assert "not followed" in said and "\n" not in said
        assert SESSION_TOKEN not in said and CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in said


@pytest.mark.parametrize("body", [b"", b"<x/>"])
async def test_a_store_answering_what_s3_never_does_is_one_line_not_an_internal_error(
    monkeypatch: pytest.MonkeyPatch, body: bytes
) -> None:
    """Something that answers 200 to every request, as no S3 store does: botocore parses
    an empty CreateMultipartUpload answer as one without its UploadId (a KeyError was
    an internal error)."""
    from harvester.objectstore import ObjectSink
    from harvester.objectstore.failures import StoreError

    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)

    async def yes(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=200, body=body)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", yes)
    async with serve(app) as url:
        settings = load_settings({"out": "s3://b/p/", "s3_endpoint_url": url, "token": "t"})
        with pytest.raises(StoreError) as failed:
            async with ObjectSink(settings) as sink:
                await sink.begin(1)
                await sink.write(1, b"x\n" * 10)
                await sink.commit(1)
    assert str(failed.value) == (
        f"the S3 store at {url} answered create_multipart_upload without its UploadId: is "
        "it an S3 store? check --s3-endpoint-url"
    )


async def test_an_aiobotocore_without_the_hook_is_refused_before_any_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The redirects are stopped through aiobotocore's private `_get_session`: a version
    that renamed it would skip our override and follow them again, silently. Such a
    version (the hook removed here, as a future release might) is refused in one line."""
    from aiobotocore.httpsession import AIOHTTPSession

    from harvester.errors import ConfigError
    from harvester.objectstore.store import Store

    monkeypatch.delattr(AIOHTTPSession, "_get_session")
    async with redirecting_store(monkeypatch, 307) as (url, elsewhere):
        settings = load_settings({"out": "s3://b/p/", "s3_endpoint_url": url, "token": "t"})
        with pytest.raises(ConfigError) as refused:
            await Store(settings).open()
    assert elsewhere == []
    said = str(refused.value)
    assert "is not one harvester can stop S3 redirects with" in said and "\n" not in said
    assert "pip install 'aiobotocore>=2.15,<4'" in said


PORTAL = b"<!DOCTYPE html>\n<html><head><meta charset=utf-8><title>Sign in</title><body><br>"


@pytest.mark.parametrize("well_formed", [False, True])
async def test_a_web_page_answered_for_the_store_fails_at_once_saying_so(
    monkeypatch: pytest.MonkeyPatch, well_formed: bool
) -> None:
    """A captive portal answering 200 with its login page to every request: botocore took
    a page that is not XML for a partial answer of S3's, asked again until --max-attempts
    ran out and failed as "500"; one that parsed as XML was an empty listing. Each
    request now fails at its first answer, in one line."""
    from harvester.objectstore.failures import StoreError
    from harvester.objectstore.store import Store

    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    asked: list[str] = []
    page = b"<html><body><p>Sign in</p></body></html>" if well_formed else PORTAL

    async def portal(request: web.Request) -> web.Response:
        await request.read()
        asked.append(request.method)
        return web.Response(status=200, body=page, content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", portal)
    async with serve(app) as url:
        settings = load_settings({"out": "s3://b/p/", "s3_endpoint_url": url, "token": "t"})
        store = Store(settings)
        await store.open(check=False)
        try:
            with pytest.raises(StoreError) as listed:
                await store.call("list_objects_v2", Prefix="p/")
            with pytest.raises(StoreError) as stored:
                await store.put("p/1.ndjson", b"a run's records\n", create_only=True)
        finally:
            await store.close()
    assert asked == ["GET", "PUT"]  # one try each, none asked again
    assert str(listed.value) == (
        f"the S3 store at {url} answered GET /b with a web page (HTTP 200, text/html), "
        "not S3's XML: a proxy or a login page in the way? check --s3-endpoint-url and "
        "HTTPS_PROXY/NO_PROXY"
    )
    assert "answered PUT /b/p/1.ndjson with a web page" in str(stored.value)


async def test_the_user_agent_names_the_harvester_and_botocore_once_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """aiobotocore's session adds `botocore/V` to the agent it is given, which named
    botocore already: requests said `k6-harvester/V botocore/V botocore/V`."""
    import botocore

    from harvester import __version__
    from harvester.objectstore.store import Store

    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    agents: list[str] = []

    async def bucket(request: web.Request) -> web.Response:
        agents.append(request.headers["User-Agent"])
        return web.Response(status=200)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", bucket)
    async with serve(app) as url:
        settings = load_settings({"out": "s3://b/p/", "s3_endpoint_url": url, "token": "t"})
        store = Store(settings)
        await store.open()  # HeadBucket
        await store.close()
    assert agents == [f"k6-harvester/{__version__} botocore/{botocore.__version__}"]
