"""Recording a tiny real k6 run, for the tests that run only where a k6 binary is present."""

from __future__ import annotations

from pathlib import Path

import anyio
from aiohttp import web
from aiohttp.test_utils import TestServer

TINY_SCRIPT = """
import http from 'k6/http';
import { check } from 'k6';
export const options = { vus: 1, iterations: 5, thresholds: { http_req_duration: ['max<5000'] } };
export default function () {
  const r = http.get(__ENV.BASE);
  check(r, { 'is 200': (x) => x.status === 200 });
}
"""


async def record_k6_run(k6: str, tmp_path: Path) -> tuple[Path, Path]:
    """Run TINY_SCRIPT with `k6` against a loopback server: (JSON output, summary export)."""

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", hello)
    script, out, summary = tmp_path / "tiny.js", tmp_path / "out.json", tmp_path / "summary.json"
    script.write_text(TINY_SCRIPT)
    async with TestServer(app, host="127.0.0.1") as server:
        base = str(server.make_url("/"))
        command = [k6, "run", "--quiet", "--no-usage-report", f"--out=json={out}",
                   f"--summary-export={summary}", "-e", f"BASE={base}", str(script)]  # fmt: skip
        result = await anyio.run_process(command, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return out, summary
