"""`--out s3://` takes its credentials the way every AWS tool does: beside the environment
and the profiles (tests/test_objectstore.py), a container's role (ECS, EKS pod identity:
`AWS_CONTAINER_CREDENTIALS_FULL_URI`) and an instance's role (EC2's metadata service,
IMDSv2), each served here by a tiny server on loopback, as those services answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import anyio.from_thread
import pytest
from aiohttp import web

from tests.harvest_helpers import serve
from tests.s3_helpers import CREDENTIALS, S3Cli

pytest.importorskip("aiobotocore")
#: Bounded hard (the thread method ends the session): a stalled store never holds the run.
pytestmark = pytest.mark.timeout(120, method="thread")

ROLE = "archiver"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _credentials() -> dict[str, str]:
    """Temporary credentials as both services give them (moto takes any key)."""
    expires = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"AccessKeyId": "ASIATEMPORARY000000", "SecretAccessKey": "temporary-s3cret",
            "Token": "session-token", "Expiration": expires}  # fmt: skip


@contextmanager
def _serving(app: web.Application) -> Iterator[str]:
    with anyio.from_thread.start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(serve(app)) as url:
            yield url


def _no_other_credentials(s3cli: S3Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing earlier in the chain: no keys in the environment, no files, no profile."""
    for key in CREDENTIALS:
        if key != "AWS_DEFAULT_REGION":
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(s3cli.tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(s3cli.tmp_path / "none"))
    for key in (
        "AWS_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_EC2_METADATA_DISABLED",
    ):
        monkeypatch.delenv(key, raising=False)


def _archived_with(
    s3cli: S3Cli, monkeypatch: pytest.MonkeyPatch, app: web.Application, where: tuple[str, str]
) -> list[str]:
    """A run archived under `PREFIX/` with only the credentials `app` serves on loopback,
    its URL (and `where`'s path) in `where`'s variable; the paths `app` was asked."""
    variable, path = where
    asked: list[str] = []

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        asked.append(request.path)
        return await handler(request)

    app.middlewares.append(record)
    _no_other_credentials(s3cli, monkeypatch)
    with _serving(app) as url:
        monkeypatch.setenv(variable, url + path)
        code, err = s3cli.main(s3cli.args(f"s3://{s3cli.bucket}/{variable}/", "--run", "100001"))
    assert code == 0, err
    assert sorted(s3cli.s3.runs(s3cli.bucket)) == [f"{variable}/100001.ndjson"]
    return asked


def test_a_container_role_s_credentials_are_used(
    s3cli: S3Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def credentials(request: web.Request) -> web.Response:
        return web.json_response(_credentials())

    app = web.Application()
    app.router.add_get("/creds", credentials)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    where = ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "/creds")
    assert _archived_with(s3cli, monkeypatch, app, where) == ["/creds"]


def test_an_instance_role_s_credentials_are_used(
    s3cli: S3Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def token(request: web.Request) -> web.Response:
        return web.Response(text="imds-token")

    async def role(request: web.Request) -> web.Response:
        if request.headers.get("X-aws-ec2-metadata-token") != "imds-token":
            return web.Response(status=401)
        if not request.match_info["name"]:
            return web.Response(text=ROLE)
        return web.json_response({"Code": "Success", "Type": "AWS-HMAC", **_credentials()})

    app = web.Application()
    app.router.add_put("/latest/api/token", token)
    app.router.add_get("/latest/meta-data/iam/security-credentials/{name:.*}", role)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    asked = _archived_with(s3cli, monkeypatch, app, ("AWS_EC2_METADATA_SERVICE_ENDPOINT", ""))
    assert f"/latest/meta-data/iam/security-credentials/{ROLE}" in asked
