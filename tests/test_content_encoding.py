"""An answer in a content encoding we never asked for (`Accept-Encoding: gzip, deflate`):
aiohttp cannot decode `br` without Brotli, and said so as a response error, which was
taken for a broken connection: asked again, then "cannot reach the API" (exit 2) though
the API had answered every time. Now the run fails at once saying what came."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from tests.harvest_helpers import serve
from tests.test_transport import harvest_one


async def test_an_answer_in_an_encoding_not_asked_for_fails_the_run_at_once_saying_so(
    tmp_path: Path,
) -> None:
    asked: list[str] = []

    async def brotli(request: web.Request) -> web.Response:
        asked.append(request.path)
        headers = {"Content-Encoding": "br", "Content-Type": "application/json"}
        return web.Response(body=b"\x8b\x02\x80{}\x03", headers=headers)

    app = web.Application()
    app.router.add_get("/{tail:.*}", brotli)
    async with serve(app) as url:
        reason = await harvest_one(url, tmp_path)
    assert asked == ["/loadtests/v2/metrics"]  # not asked again: the same would come
    assert reason is not None and "\n" not in reason
    said = "unusable answer: metrics /loadtests/v2/metrics?test_run_id=1: the answer is in a "
    assert reason.startswith(said + "content encoding"), reason
    assert "br" in reason and "a proxy in between?" in reason
