"""Real k6 results end to end: serve a recorded k6 run, harvest it with `harvester harvest`,
and recompute k6's own summary from the harvested NDJSON alone (issue 6)."""

from __future__ import annotations

import shutil
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import orjson
import pytest

from harvester.cli import main
from harvester.simulator.cloud import SimCloud
from harvester.simulator.k6import import load_k6_run
from harvester.simulator.server import Simulator
from tests.harvest_helpers import Record, read_dir
from tests.k6_helpers import record_k6_run

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RUN_FILE, SUMMARY_FILE = DATA / "k6-shop-run.json.gz", DATA / "k6-shop-run.summary.json"
RUN_ID = 4242


class Harvested:
    """Figures recomputed from a run's harvested records, the way a user's script would."""

    def __init__(self, records: list[Record]) -> None:
        self.names = {r["data"]["id"]: r["data"]["name"] for r in records if r["type"] == "metric"}
        self.totals: dict[tuple[str, str], float] = defaultdict(float)
        for record in records:
            if record["type"] == "series":
                serie = record["data"]
                key = (self.names[serie["metric_id"]], serie["method"])
                self.totals[key] += sum(point["value"] for point in serie["values"])
        self.thresholds = [r["data"] for r in records if r["type"] == "threshold"]

    def total(self, name: str) -> float:
        return self.totals[(name, "sum")]

    def passes_and_fails(self, name: str) -> tuple[float, float]:
        passes = self.totals[(name, "sum")]
        return passes, self.totals[(name, "count")] - passes

    def mean(self, name: str) -> float:
        return self.totals[(name, "sum")] / self.totals[(name, "count")]

    def failed_thresholds(self) -> set[str]:
        return {t["name"] for t in self.thresholds if t["tainted"]}


@pytest.fixture
def shop_sim() -> Iterator[Simulator]:
    cloud = SimCloud()
    cloud.add_run(load_k6_run(RUN_FILE, run_id=RUN_ID, summary_path=SUMMARY_FILE))
    with anyio.from_thread.start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(Simulator(cloud)) as sim:
            yield sim


def harvest(sim: Simulator, out: Path, run_id: int) -> Harvested:
    code = main(["harvest", "--base-url", sim.base_url, "--token", sim.token, "--run",
                 str(run_id), "--out", str(out), "--method", "sum", "--method", "count",
                 "--rate", "1000"])  # fmt: skip
    assert code == 0
    return Harvested(read_dir(out)[run_id])


def k6_failed_thresholds(figures: dict[str, Any]) -> set[str]:
    # In k6's --summary-export a threshold's value is true when it was crossed.
    return {
        expression
        for metric in figures.values()
        for expression, crossed in metric.get("thresholds", {}).items()
        if crossed
    }


@pytest.mark.skipif(not RUN_FILE.exists(), reason=f"{RUN_FILE} is not there")
def test_the_shop_run_survives_the_trip_through_the_api(
    shop_sim: Simulator, tmp_path: Path
) -> None:
    figures = orjson.loads(SUMMARY_FILE.read_bytes())["metrics"]
    got = harvest(shop_sim, tmp_path, RUN_ID)
    for counter in ("http_reqs", "iterations", "items_seen"):
        assert got.total(counter) == figures[counter]["count"], counter
    assert got.passes_and_fails("checks") == (
        figures["checks"]["passes"],
        figures["checks"]["fails"],
    )
    thresholds = sum(len(m.get("thresholds", {})) for m in figures.values())
    assert len(got.thresholds) == thresholds == 6
    assert got.failed_thresholds() == k6_failed_thresholds(figures) == {"p(95)<50", "avg<20"}
    assert got.mean("http_req_duration") == pytest.approx(
        figures["http_req_duration"]["avg"], rel=0.005
    )


def test_a_run_recorded_here_by_k6_survives_the_trip_too(tmp_path: Path) -> None:
    k6 = shutil.which("k6")
    if k6 is None:
        pytest.skip("k6 binary not installed (the package index has no trustworthy one)")
    out, summary = anyio.run(record_k6_run, k6, tmp_path)
    figures = orjson.loads(summary.read_bytes())["metrics"]
    cloud = SimCloud()
    cloud.add_run(load_k6_run(out, run_id=7, summary_path=summary))
    with anyio.from_thread.start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(Simulator(cloud)) as sim:
            got = harvest(sim, tmp_path / "out", 7)
    assert got.total("http_reqs") == figures["http_reqs"]["count"]
    assert got.total("iterations") == figures["iterations"]["count"]
    assert got.passes_and_fails("checks") == (
        figures["checks"]["passes"],
        figures["checks"]["fails"],
    )
    assert got.failed_thresholds() == k6_failed_thresholds(figures)
    assert got.mean("http_req_duration") == pytest.approx(
        figures["http_req_duration"]["avg"], rel=0.005
    )
