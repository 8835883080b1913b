"""k6's thresholds in an imported run: both forms k6 writes, k6's figures for metrics
without samples, a Counter's rate over the test run, runs aborted by a threshold, and
submetric thresholds that only a summary can serve."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import orjson
import pytest

from harvester.simulator.k6import import K6Run, load_k6_run
from harvester.simulator.k6reader import K6OutputError
from harvester.simulator.k6thresholds import (
    ThresholdSpec,
    go_duration,
    quantile,
    tail_quantile,
    threshold_spec,
)
from tests.k6_helpers import RECORDINGS, metric_line, point_line, recording, write_lines

SHOP, SHOP_SUMMARY = recording("k6-shop-run")
CATALOG, CATALOG_SUMMARY = recording("k6-catalog-run")


def _by_key(run: K6Run) -> dict[tuple[str, str], dict[str, Any]]:
    """Each served threshold under (metric with its tags as k6 names it, expression)."""
    metrics, thresholds = run.thresholds()
    got = {}
    for metric, threshold in zip(metrics, thresholds, strict=True):
        assert metric["id"] == threshold["metric_id"] == f"threshold_{threshold['id']}"
        tags = ",".join(f"{k}:{v}" for k, v in metric["tags"].items())
        got[(metric["name"] + (f"{{{tags}}}" if tags else ""), threshold["name"])] = threshold
    return got


def _load(name: str, summary: bool = True) -> tuple[K6Run, dict[str, Any]]:
    run_file, summary_file = recording(name)
    if not run_file.is_file():
        pytest.skip(f"k6 recording not found at {run_file} (shared/ beside the repo)")
    run = load_k6_run(run_file, run_id=7, summary_path=summary_file if summary else None)
    return run, orjson.loads(summary_file.read_bytes())["metrics"]


# --- the recordings against k6's own summary ----------------------------------------------


@pytest.mark.parametrize("name", RECORDINGS)
def test_every_threshold_and_its_figure_equal_k6s(name: str) -> None:
    run, figures = _load(name)
    got = _by_key(run)
    expected = {
        (key, expression): crossed
        for key, metric in figures.items()
        for expression, crossed in (metric.get("thresholds") or {}).items()
    }
    assert {key: t["tainted"] for key, t in got.items()} == expected
    for (key, _), threshold in got.items():
        metric, stat = figures[key], threshold["stat"]
        k6_figure = (
            metric.get("value") if stat == "rate" and "passes" in metric else metric.get(stat)
        )
        if k6_figure is not None:  # the summary holds p(90), p(95) and the plain figures
            assert threshold["calculated_value"] == pytest.approx(k6_figure), key
        assert threshold["calc_state"]["tainted_value"] == (
            threshold["calculated_value"] if threshold["tainted"] else None
        )
    crossed = sum(expected.values())
    assert run.run["result_status"] == int(crossed > 0) and run.run["run_status"] == 3
    overview = run.overview()
    assert (overview["thresholds_successes"], overview["thresholds_total"]) == (
        len(expected) - crossed,
        len(expected),
    )


def test_the_shop_runs_thresholds() -> None:
    run, figures = _load("k6-shop-run")
    got = _by_key(run)
    assert len(got) == 6 and sum(t["tainted"] for t in got.values()) == 2
    p95 = got[("http_req_duration", "p(95)<50")]
    assert (p95["stat"], p95["value"]) == ("p(95)", 50.0)
    assert got[("http_req_duration{scenario:buy}", "p(99)<80")]["calculated_value"] < 80


def test_threshold_objects_are_read_beside_strings() -> None:
    """The catalog run writes `{"threshold": ..., "abortOnFail": ...}` in its Metric lines."""
    run, _ = _load("k6-catalog-run", summary=False)
    got = _by_key(run)
    assert {"p(95)<1500", "avg<800"} <= {expression for _, expression in got}
    assert not run.run["result_status"]  # crossed only on a submetric, not served here
    spec = {"threshold": "p(95)<1500", "abortOnFail": True, "delayAbortEval": "10s"}
    assert threshold_spec(spec) == ThresholdSpec("p(95)<1500", True, 10.0)
    assert threshold_spec(
        {"threshold": "rate<0.4", "abortOnFail": True, "delayAbortEval": None}
    ) == (ThresholdSpec("rate<0.4", True, 0.0))
    assert threshold_spec("count>20") == ThresholdSpec("count>20")
    assert go_duration("1m30s") == 90.0 and go_duration("250ms") == 0.25


@pytest.mark.parametrize(
    "entry",
    [{"abortOnFail": True}, 5, {"threshold": "avg<1", "delayAbortEval": "soon"}],
)
def test_a_threshold_k6_cannot_have_written_names_its_line(tmp_path: Path, entry: Any) -> None:
    path = write_lines(tmp_path / "r.json", [metric_line("a", "trend", [entry])])
    with pytest.raises(K6OutputError, match=r"r\.json:1: malformed Metric line"):
        load_k6_run(path)


def test_without_the_summary_the_submetric_thresholds_are_named() -> None:
    """k6 writes no submetric thresholds into its JSON output; only the summary has them."""
    run, figures = _load("k6-catalog-run", summary=False)
    on_submetrics = sorted(k for k in figures if "{" in k and figures[k].get("thresholds"))
    assert sorted(run.unserved_submetrics) == on_submetrics and len(on_submetrics) == 6
    assert all("{" not in name for name, _ in _by_key(run))  # only plain metrics' served
    assert _load("k6-catalog-run")[0].unserved_submetrics == []
    shop, _ = _load("k6-shop-run", summary=False)
    assert shop.unserved_submetrics == ["http_req_duration{scenario:buy}"]
    assert len(shop.thresholds()[1]) == 5


def test_submetric_thresholds_declared_in_metric_lines(tmp_path: Path) -> None:
    """Should a k6 version write them, a submetric's thresholds count its points only."""
    sub = {"name": "lat{s:a}", "suffix": "s:a", "tags": {"s": "a"}, "thresholds": ["max<5"]}
    metric = metric_line("lat", "trend", ["max<50"])
    metric["data"]["submetrics"] = [sub]
    points = [point_line("lat", 1, 4, s="a"), point_line("lat", 1, 9, s="b")]
    run = load_k6_run(write_lines(tmp_path / "r.json", [metric, *points]))
    metrics, thresholds = run.thresholds()
    assert [
        (m["tags"], t["calculated_value"], t["tainted"])
        for m, t in zip(metrics, thresholds, strict=True)
    ] == [({}, 9.0, False), ({"s": "a"}, 4.0, False)]
    assert run.unserved_submetrics == []


# --- k6's figures for metrics without samples ---------------------------------------------


def test_a_metric_without_samples_is_judged_on_k6s_zeros(tmp_path: Path) -> None:
    lines = [
        metric_line("seen", "counter"),
        metric_line("hits", "counter", ["count>0", "rate<1"]),
        metric_line("lat", "trend", ["p(95)<100", "avg>1", "max<=0"]),
        metric_line("level", "gauge", ["value>0"]),
        metric_line("ok", "rate", ["rate>0.9"]),
        point_line("seen", 1, 1),
    ]
    run = load_k6_run(write_lines(tmp_path / "r.json", lines))
    got = {(m["name"], t["name"]): t for m, t in zip(*run.thresholds(), strict=True)}
    figures = {key: (t["calculated_value"], t["tainted"]) for key, t in got.items()}
    assert figures == {
        ("hits", "count>0"): (0.0, True),
        ("hits", "rate<1"): (0.0, False),
        ("lat", "p(95)<100"): (0.0, False),
        ("lat", "avg>1"): (0.0, True),
        ("lat", "max<=0"): (0.0, False),
        ("level", "value>0"): (0.0, True),
        ("ok", "rate>0.9"): (None, False),  # a Rate without samples is not evaluated
    }
    assert run.run["result_status"] == 1


# --- the test run's duration ----------------------------------------------------------------


def _counter_run(tmp_path: Path, summary: dict[str, Any] | None) -> K6Run:
    """Five hits in 4 s (first to last sample) under a `rate<1` threshold."""
    lines = [metric_line("hits", "counter", ["rate<1"])]
    lines += [point_line("hits", second, 1) for second in range(1, 6)]
    path = write_lines(tmp_path / "r.json", lines)
    if summary is None:
        return load_k6_run(path)
    (tmp_path / "s.json").write_bytes(orjson.dumps(summary))
    return load_k6_run(path, summary_path=tmp_path / "s.json")


def test_a_counters_rate_is_over_the_test_runs_duration(tmp_path: Path) -> None:
    """handleSummary's data says the run lasted 10 s: 5 hits are 0.5/s, not 5 in 4 s."""
    handle_summary = {
        "state": {"testRunDurationMs": 10_000.0},
        "metrics": {"hits": {"type": "counter", "values": {"count": 5, "rate": 0.5},
                             "thresholds": {"rate<1": {"ok": True}}}},
    }  # fmt: skip
    run = _counter_run(tmp_path, handle_summary)
    (threshold,) = run.thresholds()[1]
    assert (threshold["calculated_value"], threshold["tainted"]) == (0.5, False)
    assert run.seconds == 10.0 and run.run["duration"] == 10
    span = _counter_run(tmp_path, None)  # no summary: the samples' span is all there is
    assert span.thresholds()[1][0]["calculated_value"] == 1.25 and span.seconds == 4.0


def test_a_summary_exports_duration_is_its_counters_count_over_rate(tmp_path: Path) -> None:
    export = {"metrics": {"hits": {"count": 5, "rate": 0.25, "thresholds": {"rate<1": False}}}}
    assert _counter_run(tmp_path, export).seconds == 20.0
    run, figures = _load("k6-catalog-run")
    assert run.overview()["http_reqs_avg"] == pytest.approx(figures["http_reqs"]["rate"], rel=1e-9)
    no_rate = {"metrics": {"lat": {"avg": 1.0}}}
    assert _counter_run(tmp_path, no_rate).seconds == 4.0


# --- runs aborted by a threshold -----------------------------------------------------------


@pytest.mark.parametrize(
    ("threshold", "run_status"),
    [
        ({"threshold": "max<5", "abortOnFail": True}, 8),
        ({"threshold": "max<5", "abortOnFail": True, "delayAbortEval": "4s"}, 8),
        ({"threshold": "max<5", "abortOnFail": True, "delayAbortEval": "1m"}, 3),
        ({"threshold": "max<5", "abortOnFail": False}, 3),
        ({"threshold": "max<50", "abortOnFail": True}, 3),
        ("max<5", 3),
    ],
)
def test_a_crossed_abort_on_fail_threshold_serves_run_status_8(
    tmp_path: Path, threshold: Any, run_status: int
) -> None:
    """k6 ends the run at an abortOnFail threshold's crossing once delayAbortEval passed."""
    lines = [metric_line("lat", "trend", [threshold])]
    lines += [point_line("lat", second, 3 * second) for second in range(1, 6)]  # 4 s, max 15
    run = load_k6_run(write_lines(tmp_path / "r.json", lines))
    crossed = run.thresholds()[1][0]["tainted"]
    assert (run.run["run_status"], run.run["result_status"]) == (run_status, int(crossed))


# --- bad input, percentiles ------------------------------------------------------------------


def test_bad_summary_and_bad_threshold_expressions(tmp_path: Path) -> None:
    run_file = write_lines(tmp_path / "r.json", [metric_line("a", "trend"), point_line("a", 1, 1)])
    (tmp_path / "s.json").write_text('{"root_group": {}}')
    with pytest.raises(K6OutputError, match="not a k6 summary export"):
        load_k6_run(run_file, summary_path=tmp_path / "s.json")
    broken = write_lines(
        tmp_path / "b.json", [metric_line("a", "trend", ["p95<1"]), point_line("a", 1, 1)]
    )
    with pytest.raises(K6OutputError, match=r"cannot read threshold 'p95<1' on a"):
        load_k6_run(broken)


def test_whole_run_quantiles_agree_with_statistics_quantiles() -> None:
    """Thresholds use a partial heap instead of a full sort; same 'inclusive' figures."""
    values = [float((i * 7919) % 1009) / 7 for i in range(2001)]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    for percent in range(1, 100):
        assert tail_quantile(values, percent / 100) == pytest.approx(cuts[percent - 1])
        assert quantile(sorted(values), percent / 100) == pytest.approx(cuts[percent - 1])
    assert tail_quantile([3.0], 0.99) == tail_quantile([3.0], 0.01) == 3.0
