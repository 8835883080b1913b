"""Real k6 results through the v6 API: serve each recorded k6 run with `harvester simulate
--from-k6`, harvest it with `--api v6`, and recompute k6's summary from the NDJSON alone;
the same run harvested through v2 gives the same totals (issue 10)."""

from __future__ import annotations

import gzip
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from harvester.cli import main
from tests.harvest_helpers import Record, read_dir
from tests.k6_helpers import (
    RECORDINGS,
    SIM_TOKEN,
    metric_line,
    point_line,
    recording,
    simulate,
    write_lines,
)
from tests.test_k6_roundtrip import RUN_ID, harvest, k6_checks, k6_threshold_results


class HarvestedV6:
    """Figures a user's script recomputes from a v6 archive: series carry their `query`."""

    def __init__(self, records: list[Record]) -> None:
        self.types = {
            r["data"]["name"]: r["data"]["type"] for r in records if r["type"] == "metric"
        }
        self.sums: dict[tuple[str, str], float] = defaultdict(float)
        #: (metric, labels, timestamp) -> {method: value}, to weight means by counts.
        self.points: dict[tuple[str, bytes, float], dict[str, float]] = defaultdict(dict)
        for record in records:
            if record["type"] != "series":
                continue
            query, data = record["query"], record["data"]
            labels = orjson.dumps(data["metric"], option=orjson.OPT_SORT_KEYS)
            for stamp, value in data["values"]:
                self.sums[(query["metric"], query["method"])] += value
                self.points[(query["metric"], labels, stamp)][query["method"]] = value
        self.checks = {r["data"]["check"]: (r["data"]["passes"], r["data"]["fails"])
                       for r in records if r["type"] == "check"}  # fmt: skip
        self.thresholds = {(r["data"]["metric"], r["data"]["expression"]): r["data"]["crossed"]
                           for r in records if r["type"] == "threshold"}  # fmt: skip
        self.threshold_values = {(r["data"]["metric"], r["data"]["expression"]): r["data"]["value"]
                                 for r in records if r["type"] == "threshold"}  # fmt: skip
        assert all(r["data"]["computed"] for r in records if r["type"] == "threshold")
        self.summary = next(r["data"] for r in records if r["type"] == "summary")

    def names_of(self, metric_type: str) -> set[str]:
        return {name for name, kind in self.types.items() if kind == metric_type}

    def mean(self, name: str) -> float:
        """histogram_avg weighted by histogram_count_increase, point by point."""
        weighted = count = 0.0
        for (metric, _, _), methods in self.points.items():
            if metric == name:
                weighted += methods["histogram_avg"] * methods["histogram_count_increase"]
                count += methods["histogram_count_increase"]
        return weighted / count


def harvest_v6(base_url: str, out: Path, *extra: str) -> HarvestedV6:
    code = main(["harvest", "--api", "v6", "--stack-id", "1", "--base-url", base_url,
                 "--token", SIM_TOKEN, "--run", str(RUN_ID), "--out", str(out),
                 "--rate", "1000", *extra])  # fmt: skip
    assert code == 0
    return HarvestedV6(read_dir(out)[RUN_ID])


@pytest.mark.parametrize("name", RECORDINGS)
def test_v6_harvest_gives_k6_summary_and_the_v2_totals(name: str, tmp_path: Path) -> None:
    run_file, summary_file = recording(name)
    summary = orjson.loads(summary_file.read_bytes())
    figures: dict[str, Any] = summary["metrics"]
    with simulate("--from-k6", str(run_file), "--summary", str(summary_file),
                  "--run-id", str(RUN_ID)) as (base_url, _):  # fmt: skip
        got = harvest_v6(base_url, tmp_path / "v6", "--step", "5")
        v2 = harvest(base_url, SIM_TOKEN, tmp_path / "v2", RUN_ID)
    assert got.summary["complete"] is True
    counters, rates = got.names_of("counter"), got.names_of("rate")
    assert {"http_reqs", "iterations"} <= counters and "checks" in rates
    for counter in counters:
        assert got.sums[(counter, "increase")] == figures[counter]["count"], counter
        assert got.sums[(counter, "increase")] == v2.total(counter), counter
    for rate in rates:
        passes, fails = got.sums[(rate, "increase_nz")], got.sums[(rate, "increase_z")]
        assert (passes, fails) == (figures[rate]["passes"], figures[rate]["fails"]), rate
        assert (passes, fails) == v2.passes_and_fails(rate), rate
    checks = k6_checks(summary)
    assert got.checks == {check: (float(p), float(f)) for check, (p, f) in checks.items()}
    assert got.thresholds == k6_threshold_results(figures)
    assert got.thresholds == v2.threshold_results()
    assert got.mean("http_req_duration") == pytest.approx(
        figures["http_req_duration"]["avg"], rel=1e-9
    )


def k6_samples(run_file: Path, key: str) -> list[float]:
    """The values of every Point of a k6 (sub)metric (`http_req_duration{scenario:buy}`)
    in k6's JSON output: what k6 computes a statistic its summary leaves out from."""
    name, _, selector = key.partition("{")
    wanted = dict(part.split(":", 1) for part in selector.removesuffix("}").split(",") if part)
    values = []
    with gzip.open(run_file) as lines:
        for line in lines:
            item = orjson.loads(line)
            tags = item["data"].get("tags") or {}
            if item["type"] == "Point" and item["metric"] == name:
                if all(tags.get(tag) == value for tag, value in wanted.items()):
                    values.append(float(item["data"]["value"]))
    return values


def k6_figure(figures: dict[str, Any], key: str, expression: str, run_file: Path) -> float:
    """k6's own figure for a threshold: the summary's statistic (`p(95)`, `avg`, a Rate's
    `value`, a Counter's `count` or `rate`); a percentile the summary does not list
    (`p(99)`) from the recorded points, interpolated between closest ranks as k6 does."""
    stat = expression.split("<")[0].split(">")[0].split("=")[0].strip()
    figure = figures[key]
    if stat in figure:
        return float(figure[stat])
    if stat == "rate" and "value" in figure:
        return float(figure["value"])  # a Rate's share of non-zero samples
    percent = float(stat.removeprefix("p(").removesuffix(")"))
    assert percent.is_integer(), stat
    cuts = statistics.quantiles(k6_samples(run_file, key), n=100, method="inclusive")
    return cuts[int(percent) - 1]


@pytest.mark.parametrize("name", RECORDINGS)
def test_every_threshold_value_is_k6s_own_figure(name: str, tmp_path: Path) -> None:
    """Not only the verdicts: the value the harvester computes through v5 is the figure
    k6 printed, submetrics on tags v2 does not tell apart (`scenario`, `name`) included."""
    run_file, summary_file = recording(name)
    figures: dict[str, Any] = orjson.loads(summary_file.read_bytes())["metrics"]
    with simulate("--from-k6", str(run_file), "--summary", str(summary_file),
                  "--run-id", str(RUN_ID)) as (base_url, _):  # fmt: skip
        got = harvest_v6(base_url, tmp_path / "v6", "--step", "5")
    expected = {
        (key, expression): k6_figure(figures, key, expression, run_file)
        for key, expression in k6_threshold_results(figures)
    }
    assert any("{scenario:" in key for key, _ in expected)
    assert got.threshold_values.keys() == expected.keys()
    for threshold, value in expected.items():
        assert got.threshold_values[threshold] == pytest.approx(value, rel=1e-9), threshold


def test_a_counters_rate_and_a_gauges_value_are_k6s_figures(tmp_path: Path) -> None:
    """A Counter's rate is over the test run's duration (the summary's 10 s, not the 4 s
    between samples); a Gauge's value is its latest sample, whichever tag set has it."""
    lines = [
        metric_line("hits", "counter", ["rate<100"]),
        metric_line("level", "gauge", ["value>0"]),
    ]
    lines += [point_line("hits", second, 1, scenario="ab"[second % 2]) for second in range(1, 6)]
    lines += [point_line("level", 2, 3.0, scenario="b"), point_line("level", 4, 7.0, scenario="a")]
    run_file = write_lines(tmp_path / "run.json", lines)
    summary = {"metrics": {"hits": {"count": 5, "rate": 0.5, "thresholds": {"rate<100": False}},
                           "level": {"value": 7, "min": 3, "max": 7}}}  # fmt: skip
    summary_file = tmp_path / "summary.json"
    summary_file.write_bytes(orjson.dumps(summary))
    with simulate("--from-k6", str(run_file), "--summary", str(summary_file),
                  "--run-id", str(RUN_ID)) as (base_url, _):  # fmt: skip
        got = harvest_v6(base_url, tmp_path / "v6")
    assert got.threshold_values == {("hits", "rate<100"): 0.5, ("level", "value>0"): 7.0}
