"""Real k6 results end to end: serve every recorded k6 run with `harvester simulate
--from-k6`, harvest it with `harvester harvest`, and recompute k6's own summary from the
harvested NDJSON alone (issues 6 and 9)."""

from __future__ import annotations

from collections import defaultdict
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
from tests.k6_helpers import (
    RECORDINGS,
    SIM_TOKEN,
    k6_binary,
    record_k6_run,
    recording,
    simulate,
)

RUN_ID = 4242


class Harvested:
    """Figures recomputed from a run's harvested records, the way a user's script would."""

    def __init__(self, records: list[Record]) -> None:
        metrics = [r["data"] for r in records if r["type"] == "metric"]
        self.metrics = {m["id"]: m for m in metrics}
        self.totals: dict[tuple[str, str], float] = defaultdict(float)
        self.by_check: dict[tuple[str, str], float] = defaultdict(float)
        for record in records:
            if record["type"] == "series":
                serie = record["data"]
                metric = self.metrics[serie["metric_id"]]
                total = sum(point["value"] for point in serie["values"])
                self.totals[(metric["name"], serie["method"])] += total
                if metric["name"] == "checks":
                    self.by_check[(metric["tags"]["check"], serie["method"])] += total
        self.thresholds = [r["data"] for r in records if r["type"] == "threshold"]
        self.threshold_metrics = {
            r["data"]["id"]: r["data"] for r in records if r["type"] == "threshold_metric"
        }

    def names_of(self, metric_type: str) -> set[str]:
        return {m["name"] for m in self.metrics.values() if m["type"] == metric_type}

    def total(self, name: str) -> float:
        return self.totals[(name, "sum")]

    def passes_and_fails(self, name: str) -> tuple[float, float]:
        passes = self.totals[(name, "sum")]
        return passes, self.totals[(name, "count")] - passes

    def check(self, name: str) -> tuple[float, float]:
        passes = self.by_check[(name, "sum")]
        return passes, self.by_check[(name, "count")] - passes

    def mean(self, name: str) -> float:
        return self.totals[(name, "sum")] / self.totals[(name, "count")]

    def threshold_results(self) -> dict[tuple[str, str], bool]:
        """Crossed or not, under k6's name of the (sub)metric and the expression."""
        results = {}
        for threshold in self.thresholds:
            metric = self.threshold_metrics[threshold["metric_id"]]
            tags = ",".join(f"{key}:{value}" for key, value in metric["tags"].items())
            name = metric["name"] + (f"{{{tags}}}" if tags else "")
            results[(name, threshold["name"])] = threshold["tainted"]
        assert len(results) == len(self.thresholds)  # none hides another
        return results


def harvest(base_url: str, token: str, out: Path, run_id: int) -> Harvested:
    code = main(["harvest", "--base-url", base_url, "--token", token, "--run", str(run_id),
                 "--out", str(out), "--method", "sum", "--method", "count",
                 "--rate", "1000"])  # fmt: skip
    assert code == 0
    return Harvested(read_dir(out)[run_id])


def k6_threshold_results(figures: dict[str, Any]) -> dict[tuple[str, str], bool]:
    """Every threshold in k6's --summary-export, crossed (true) or not."""
    return {
        (name, expression): crossed
        for name, metric in figures.items()
        for expression, crossed in metric.get("thresholds", {}).items()
    }


def k6_checks(summary: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Passes and fails of each check, from the summary's group tree."""
    found: dict[str, tuple[int, int]] = {}
    groups = [summary["root_group"]]
    while groups:
        group = groups.pop()
        found.update({c["name"]: (c["passes"], c["fails"]) for c in group["checks"].values()})
        groups.extend(group["groups"].values())
    return found


@pytest.mark.parametrize("name", RECORDINGS)
def test_every_recording_survives_the_trip_through_the_api(name: str, tmp_path: Path) -> None:
    run_file, summary_file = recording(name)
    summary = orjson.loads(summary_file.read_bytes())
    figures = summary["metrics"]
    with simulate("--from-k6", str(run_file), "--summary", str(summary_file),
                  "--run-id", str(RUN_ID)) as (base_url, said):  # fmt: skip
        got = harvest(base_url, SIM_TOKEN, tmp_path, RUN_ID)
    assert said == []  # with the summary every threshold is served: no warning
    counters, rates = got.names_of("counter"), got.names_of("rate")
    assert {"http_reqs", "iterations"} <= counters and "checks" in rates
    for counter in counters:
        assert got.total(counter) == figures[counter]["count"], counter
    for rate in rates:
        assert got.passes_and_fails(rate) == (figures[rate]["passes"], figures[rate]["fails"])
    checks = k6_checks(summary)
    assert {check: got.check(check) for check in checks} == checks
    assert got.threshold_results() == k6_threshold_results(figures)
    assert got.mean("http_req_duration") == pytest.approx(
        figures["http_req_duration"]["avg"], rel=0.005
    )


@pytest.mark.parametrize("name", RECORDINGS)
def test_without_the_summary_submetric_thresholds_are_named_in_one_warning(
    name: str, tmp_path: Path
) -> None:
    run_file, summary_file = recording(name)
    figures = orjson.loads(summary_file.read_bytes())["metrics"]
    on_submetrics = [key for key in figures if "{" in key and figures[key].get("thresholds")]
    with simulate("--from-k6", str(run_file), "--run-id", str(RUN_ID)) as (base_url, said):
        got = harvest(base_url, SIM_TOKEN, tmp_path, RUN_ID)
    assert len(said) == 1 and "warning" in said[0] and "--summary" in said[0]
    assert on_submetrics and all(submetric in said[0] for submetric in on_submetrics)
    served = k6_threshold_results({k: v for k, v in figures.items() if k not in on_submetrics})
    assert got.threshold_results() == served


def test_a_run_recorded_here_by_k6_survives_the_trip_too(tmp_path: Path) -> None:
    out, summary_file = anyio.run(record_k6_run, k6_binary(), tmp_path)
    summary = orjson.loads(summary_file.read_bytes())
    figures = summary["metrics"]
    cloud = SimCloud()
    cloud.add_run(load_k6_run(out, run_id=7, summary_path=summary_file))
    with anyio.from_thread.start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(Simulator(cloud)) as sim:
            got = harvest(sim.base_url, sim.token, tmp_path / "out", 7)
    assert got.total("http_reqs") == figures["http_reqs"]["count"]
    assert got.total("iterations") == figures["iterations"]["count"]
    assert got.passes_and_fails("checks") == (
        figures["checks"]["passes"],
        figures["checks"]["fails"],
    )
    assert k6_checks(summary) == {"is 200": (6, 0), "found": (0, 3)}
    assert {check: got.check(check) for check in ("is 200", "found")} == k6_checks(summary)
    assert got.passes_and_fails("http_req_failed") == (3, 6)
    assert len(k6_threshold_results(figures)) == 3  # one on the {status:200} submetric
    assert got.threshold_results() == k6_threshold_results(figures)
    assert got.mean("http_req_duration") == pytest.approx(
        figures["http_req_duration"]["avg"], rel=0.005
    )
