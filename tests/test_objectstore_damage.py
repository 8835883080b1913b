"""`--out s3://`: a body damaged on its way to the store, which the store refuses
(`BadDigest`, as S3 answers when a body does not match its checksum), is sent again, and
the object stored is the file's bytes.

moto does not check a body against its checksum: the proxy here checks it as S3 does."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import zlib

import aiohttp
import anyio
import pytest
from aiohttp import web

from tests.harvest_helpers import serve
from tests.s3_helpers import PASSED, S3Server, store_run

pytest.importorskip("aiobotocore")
pytestmark = pytest.mark.timeout(120, method="thread")

BAD_DIGEST = (
    b"<Error><Code>BadDigest</Code><Message>The CRC32 you specified did not match the "
    b"calculated checksum.</Message></Error>"
)


def checked(headers: dict[str, str], body: bytes) -> bool:
    """Whether `body` is what its checksum header says (S3's check)."""
    if "x-amz-checksum-sha256" in headers:
        digest = hashlib.sha256(body).digest()
        return base64.b64encode(digest).decode() == headers["x-amz-checksum-sha256"]
    crc = zlib.crc32(body).to_bytes(4, "big")
    return base64.b64encode(crc).decode() == headers["x-amz-checksum-crc32"]


async def stored_through_damage(s3: S3Server, bucket: str, lines: bytes) -> list[bool]:
    """`lines` stored as run 3's file through a proxy that damages one byte of the first
    body of that file, checks each body as S3 does and refuses the damaged; the checks of
    that file's bodies, in order."""
    checks: list[bool] = []

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        if request.method == "PUT" and request.path.endswith("/3.ndjson"):
            if not checks:
                body = body[:1000] + bytes([body[1000] ^ 1]) + body[1001:]
            headers = {k.lower(): v for k, v in request.headers.items()}
            checks.append(checked(headers, body))
            if not checks[-1]:
                return web.Response(status=400, body=BAD_DIGEST, content_type="application/xml")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "expect")}
        async with aiohttp.ClientSession() as session:
            url = s3.url + request.path_qs
            data = io.BytesIO(body)  # (bytes past 1 MB: aiohttp warns)
            async with session.request(request.method, url, headers=headers, data=data) as got:
                kept = {k: v for k, v in got.headers.items() if k.lower() in PASSED}
                return web.Response(status=got.status, body=await got.read(), headers=kept)

    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/{tail:.*}", forward)
    async with serve(app) as url:
        await store_run(url, bucket, 3, lines)
    return checks


@pytest.mark.parametrize("size", [200_000, 20_000_000])  # one PUT; parts
async def test_a_body_damaged_on_the_way_is_refused_and_sent_again(
    s3: S3Server, bucket: str, size: int
) -> None:
    line = b'{"type":"x","data":"' + os.urandom(50).hex().encode() + b'"}\n'
    lines = line * (size // len(line))
    checks = await stored_through_damage(s3, bucket, lines)
    assert checks[:2] == [False, True]  # refused, then the same body sent whole
    assert await anyio.to_thread.run_sync(s3.runs, bucket) == {"pre/3.ndjson": lines}
