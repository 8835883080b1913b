"""Archives for the report tests: harvested from the simulator with the real CLI."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio.from_thread
import orjson

from harvester.cli import main
from harvester.simulator.cloud import SimCloud
from harvester.simulator.server import Simulator
from tests.k6_helpers import SIM_TOKEN, recording, simulate

K6_RUN_ID = 4242
#: Every aggregation the report draws from: default, passes/fails (sum, count) and p95.
K6_METHODS = ("default", "sum", "count", "p95")


def harvest(base_url: str, token: str, out: Path, *args: str) -> Path:
    code = main(["harvest", "--base-url", base_url, "--token", token, "--rate", "1000",
                 "--out", str(out), "--progress", "off", "--quiet", *args])  # fmt: skip
    assert code == 0
    return out


def harvest_cloud(cloud: SimCloud, out: Path, *args: str) -> Path:
    """Every run of `cloud` harvested by id into `out`."""
    runs = [arg for run_id in sorted(cloud.runs) for arg in ("--run", str(run_id))]
    with anyio.from_thread.start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(Simulator(cloud)) as sim:
            return harvest(sim.base_url, sim.token, out, *runs, *args)


@contextmanager
def serving(name: str) -> Iterator[str]:
    """A real k6 recording from ../shared/data served by `harvester simulate --from-k6`
    (v2 and v6) as run `K6_RUN_ID`: its base URL."""
    run_file, summary_file = recording(name)
    with simulate("--from-k6", str(run_file), "--summary", str(summary_file),
                  "--run-id", str(K6_RUN_ID)) as (base_url, _):  # fmt: skip
        yield base_url


def harvest_k6(base_url: str, out: Path, *args: str) -> Path:
    """The served recording harvested with `K6_METHODS` into `out`."""
    methods = [arg for method in K6_METHODS for arg in ("--method", method)]
    return harvest(base_url, SIM_TOKEN, out, "--run", str(K6_RUN_ID), *methods, *args)


def harvest_recording(name: str, out: Path, *args: str) -> Path:
    """A real k6 recording harvested with its run record and `K6_METHODS`."""
    with serving(name) as base_url:
        return harvest_k6(base_url, out, *args)


def page_data(html: str) -> dict[str, Any]:
    match = re.search(r'id="report-data">(.*?)</script>', html, re.S)
    assert match
    data: dict[str, Any] = orjson.loads(match.group(1).replace("<\\/", "</"))
    return data
