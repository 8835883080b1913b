"""Helpers for tests that harvest from the simulator: settings, reading output, expectations."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from harvester.config import Settings, load_settings
from harvester.records import Chunk
from harvester.scheduler import RunTarget
from harvester.simulator.cloud import SimCloud
from harvester.simulator.server import Simulator

Record = dict[str, Any]


def settings_for(sim: Simulator, out: Path | str, **overrides: Any) -> Settings:
    """Fast, test-friendly settings aimed at `sim` (no real waits between retries)."""
    flags: dict[str, Any] = {
        "base_url": sim.base_url,
        "token": sim.token,
        "rate": 1000,
        "out": str(out),
        "backoff_base": 0.001,
        "backoff_cap": 0.01,
        "read_timeout": 5,
    }
    flags.update(overrides)
    return load_settings(flags, environ={})


def cli_args(sim: Simulator, out: Path | str, *extra: str) -> list[str]:
    return ["harvest", "--base-url", sim.base_url, "--token", sim.token, "--rate", "1000",
            "--out", str(out), *extra]  # fmt: skip


def parse_lines(data: bytes) -> list[Record]:
    return [orjson.loads(line) for line in data.splitlines() if line]


def read_dir(out: Path) -> dict[int, list[Record]]:
    """Every final run file in `out`, parsed."""
    return {int(path.stem): parse_lines(path.read_bytes()) for path in sorted(out.glob("*.ndjson"))}


def canonical(records: list[Record]) -> Counter[bytes]:
    """A run's records as a multiset of exact lines, without the summary (it carries
    counters that legitimately differ, e.g. the URL cap learned)."""
    return Counter(
        orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in records if r["type"] != "summary"
    )


def expected_records(
    cloud: SimCloud, run_id: int, methods: tuple[str | None, ...] = (None,)
) -> list[Record]:
    """What a complete harvest of `run_id` must contain, straight from the simulator's data."""
    run = cloud.runs[run_id]

    def rec(kind: str, data: Any) -> Record:
        return {"type": kind, "test_run_id": run_id, "data": data}

    records = [rec("metric", m) for m in run.metrics()]
    for method in methods:
        for metric in run.metrics():
            serie = run.serie(metric["id"], method)
            if serie is not None:
                records.append(rec("series", serie))
    threshold_metrics, thresholds = run.thresholds()
    records += [rec("threshold_metric", m) for m in threshold_metrics]
    records += [rec("threshold", t) for t in thresholds]
    records.append(rec("overview", run.overview()))
    return records


def targets(cloud: SimCloud) -> list[RunTarget]:
    """Every run of `cloud`, in id order."""
    return [RunTarget(run_id) for run_id in sorted(cloud.runs)]


def assert_exact(cloud: SimCloud, out: Path) -> None:
    """`out` holds every run of `cloud` whole, each record exactly once, and no partial file."""
    files = read_dir(out)
    assert sorted(files) == sorted(cloud.runs)
    for run_id, records in files.items():
        assert canonical(records) == canonical(expected_records(cloud, run_id)), run_id
        assert records[-1]["type"] == "summary"
    assert not list(out.glob(".*.partial"))


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Serve `app` on a free loopback port; yields its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


class NullSink:
    """A sink that keeps nothing, for scheduler tests: each overrides what it watches."""

    channel_size = 16

    async def begin(self, run_id: int) -> None:
        pass

    async def write(self, run_id: int, data: Chunk) -> None:
        pass

    async def commit(self, run_id: int, counts: Any = None, summary: Any = None) -> str:
        return ""

    async def abort(self, run_id: int) -> None:
        pass

    async def close(self) -> None:
        pass
