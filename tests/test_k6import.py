"""The k6 import: a real k6 JSON output becomes one k6 Cloud test run with k6's figures."""

from __future__ import annotations

import gzip
import inspect
import math
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from harvester.simulator.k6import import K6Run, load_k6_run, supports_method
from harvester.simulator.k6reader import K6OutputError, MetricDecl, ReadStats, read_k6_output
from tests.k6_helpers import (
    k6_binary,
    metric_line,
    point_line,
    record_k6_run,
    recording,
    write_lines,
)

SHOP, SHOP_SUMMARY = recording("k6-shop-run")


@pytest.fixture(scope="module")
def shop() -> K6Run:
    if not SHOP.is_file():
        pytest.skip(f"k6 sample run not found at {SHOP} (shared/ beside the repo)")
    return load_k6_run(SHOP, run_id=7, summary_path=SHOP_SUMMARY)


@pytest.fixture(scope="module")
def summary() -> dict[str, Any]:
    if not SHOP_SUMMARY.is_file():
        pytest.skip(f"k6 summary not found at {SHOP_SUMMARY}")
    loaded: dict[str, Any] = orjson.loads(SHOP_SUMMARY.read_bytes())
    return loaded


def _total(run: K6Run, name: str, method: str) -> float:
    """Fold every bucket of every metric called `name` (as a harvest would)."""
    total = 0.0
    for metric in run.metrics():
        serie = run.serie(metric["id"], method) if metric["name"] == name else None
        total += sum(v["value"] for v in serie["values"]) if serie else 0.0
    return total


def _weighted_mean(run: K6Run, name: str) -> float:
    weighted = count = 0.0
    for metric in (m for m in run.metrics() if m["name"] == name):
        means, counts = run.serie(metric["id"], "mean"), run.serie(metric["id"], "count")
        assert means is not None and counts is not None
        for mean, n in zip(means["values"], counts["values"], strict=True):
            assert mean["timestamp"] == n["timestamp"]
            weighted += mean["value"] * n["value"]
            count += n["value"]
    return weighted / count


# --- the shared k6 run against its own summary ------------------------------------------


def test_counters_equal_the_summary(shop: K6Run, summary: dict[str, Any]) -> None:
    figures = summary["metrics"]
    for name in ("http_reqs", "iterations", "items_seen", "data_sent", "data_received"):
        assert _total(shop, name, "sum") == figures[name]["count"], name
    assert _total(shop, "http_reqs", "count") == figures["http_reqs"]["count"]
    assert _total(shop, "iterations", "count") == 413
    cart_ok = figures["cart_ok"]  # a rate: sum = passes, count = passes + fails
    assert _total(shop, "cart_ok", "sum") == cart_ok["passes"]
    assert _total(shop, "cart_ok", "count") == cart_ok["passes"] + cart_ok["fails"]
    assert _weighted_mean(shop, "cart_latency") == pytest.approx(figures["cart_latency"]["avg"])


def test_checks_equal_the_summary_check_by_check(shop: K6Run, summary: dict[str, Any]) -> None:
    expected = {
        check["name"]: (check["passes"], check["fails"])
        for group in summary["root_group"]["groups"].values()
        for check in group["checks"].values()
    }
    seen = {}
    for metric in (m for m in shop.metrics() if m["name"] == "checks"):
        detail = shop.metric_detail(metric["id"])
        assert detail is not None and detail["k6-check"]["id"] == metric["check_id"]
        sums, counts = shop.serie(metric["id"], "sum"), shop.serie(metric["id"], "count")
        assert sums is not None and counts is not None
        passes = sum(v["value"] for v in sums["values"])
        seen[detail["k6-check"]["name"]] = (
            passes,
            sum(v["value"] for v in counts["values"]) - passes,
        )
    assert seen == expected
    overview = shop.overview()
    assert overview["checks_hits_successes"] == summary["metrics"]["checks"]["passes"] == 764
    assert overview["checks_hits_total"] == 764 + summary["metrics"]["checks"]["fails"]
    assert (overview["checks_successes"], overview["checks_total"]) == (0, 4)  # each failed once


def test_http_req_duration_mean_from_buckets(shop: K6Run, summary: dict[str, Any]) -> None:
    expected = summary["metrics"]["http_req_duration"]["avg"]
    assert _weighted_mean(shop, "http_req_duration") == pytest.approx(expected, rel=0.005)
    assert shop.overview()["http_req_duration_avg"] == pytest.approx(expected, rel=1e-9)


def test_run_overview_and_urls(shop: K6Run, summary: dict[str, Any]) -> None:
    run, overview = shop.run, shop.overview()
    assert (run["id"], run["run_status"], run["processing_status"]) == (7, 3, 2)
    assert run["vus"] == summary["metrics"]["vus"]["max"] == 5
    assert run["started"] < run["ended"] and run["duration"] == 12
    assert overview["urls_hits_total"] == 754 and overview["urls_hits_successes"] == 683
    assert (overview["urls_successes"], overview["urls_total"]) == (3, 8)
    assert overview["http_reqs_avg"] == pytest.approx(
        summary["metrics"]["http_reqs"]["rate"], rel=0.01
    )
    url_metric = next(
        m for m in shop.metrics() if m["name"] == "http_reqs" and m["tags"]["url"] == "items"
    )
    detail = shop.metric_detail(url_metric["id"])
    assert detail is not None and set(detail) == {"k6-metric", "k6-group", "k6-url"}
    assert detail["k6-group"] == {"id": url_metric["group_id"], "name": "catalog"}
    assert detail["k6-url"]["url"] == "items" and isinstance(detail["k6-url"]["status"], int)


def test_ids_are_stable_across_loads_and_distinct_across_runs(shop: K6Run) -> None:
    again = load_k6_run(SHOP, run_id=7, summary_path=SHOP_SUMMARY)
    other = load_k6_run(SHOP, run_id=8)
    ids = [m["id"] for m in shop.metrics()]
    assert ids == [m["id"] for m in again.metrics()] and len(set(ids)) == len(ids)
    assert not set(ids) & {m["id"] for m in other.metrics()}
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    serie, serie_again = shop.serie(ids[0], "p95"), again.serie(ids[0], "p95")
    assert serie is not None and serie == serie_again
    assert shop.thresholds() == again.thresholds()


def test_gzip_and_plain_give_the_same_model(shop: K6Run, tmp_path: Path) -> None:
    plain = tmp_path / "run.json"
    plain.write_bytes(gzip.decompress(SHOP.read_bytes()))
    same = load_k6_run(plain, run_id=7, summary_path=SHOP_SUMMARY)
    assert same.metrics() == shop.metrics()
    assert same.thresholds() == shop.thresholds() and same.overview() == shop.overview()
    assert {**same.run, "note": ""} == {**shop.run, "note": ""}
    for metric in shop.metrics():
        assert same.serie(metric["id"], None) == shop.serie(metric["id"], None)


# --- series methods on a tiny hand-made run ------------------------------------------------


@pytest.fixture
def tiny(tmp_path: Path) -> K6Run:
    lines = [metric_line("lat", "trend"), metric_line("hits", "counter")]
    lines += [
        point_line("lat", 1.0 + i / 100, float(v))
        for i, v in enumerate([4, 1, 10, 3, 2, 7, 5, 9, 6, 8])
    ]
    lines += [
        point_line("lat", 2.5, 100.0),
        point_line("hits", 1.2, 2),
        point_line("hits", 1.9, 3),
    ]
    return load_k6_run(write_lines(tmp_path / "tiny.json", lines))


def _values(run: K6Run, name: str, method: str | None) -> list[float]:
    metric = next(m for m in run.metrics() if m["name"] == name)
    serie = run.serie(metric["id"], method)
    assert serie is not None and serie["method"] == (method or serie["method"])
    return [v["value"] for v in serie["values"]]


@pytest.mark.parametrize(
    ("method", "first_bucket"),
    [
        ("mean", 5.5), ("avg", 5.5), ("min", 1.0), ("max", 10.0), ("sum", 55.0),
        ("count", 10.0), ("last", 8.0), ("median", 5.5), ("med", 5.5), ("0.5", 5.5),
        ("p90", 9.1), ("p(90)", 9.1), ("0.95", 9.55), ("p99.9", 9.991), ("1", 10.0), ("0", 1.0),
        ("value", 8.0), ("MEAN", 5.5), (" P95 ", 9.55), ("stddev", 8.25**0.5), ("rate", 10.0),
    ],
)  # fmt: skip
def test_series_methods_on_known_values(tiny: K6Run, method: str, first_bucket: float) -> None:
    """1..10 in the first second: quantiles interpolate linearly between closest ranks."""
    assert supports_method(method)
    second = {"count": 1.0, "rate": 1.0, "stddev": 0.0}.get(method, 100.0)  # just 100 in 2nd
    assert _values(tiny, "lat", method) == pytest.approx([first_bucket, second])


def test_series_buckets_defaults_and_timestamps(tiny: K6Run, tmp_path: Path) -> None:
    metric = next(m for m in tiny.metrics() if m["name"] == "lat")
    serie = tiny.serie(metric["id"], None)
    assert serie is not None and serie["method"] == "mean" and serie["agg"] == {}
    assert [v["timestamp"] for v in serie["values"]] == [
        "2026-01-01T00:00:01Z",
        "2026-01-01T00:00:02Z",
    ]
    assert _values(tiny, "hits", None) == [5.0]  # counters default to sum
    assert _values(tiny, "hits", "rate") == [5.0]  # per second: the sum over a 1 s bucket
    halves = load_k6_run(tmp_path / "tiny.json", bucket_seconds=0.5)
    stamps = [v["timestamp"] for v in (halves.serie(metric["id"], "count") or {})["values"]]
    assert stamps == ["2026-01-01T00:00:01.000000Z", "2026-01-01T00:00:02.500000Z"]


@pytest.mark.parametrize("method", ["p101", "average", "1.5", "p(95", "", "p-5", "nan"])
def test_unknown_methods_are_refused(tiny: K6Run, method: str) -> None:
    assert not supports_method(method)
    with pytest.raises(ValueError, match="unknown series method"):
        tiny.serie(tiny.metrics()[0]["id"], method)


def test_declared_metric_without_samples_has_no_serie(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "r.json",
        [
            metric_line("a", "trend"),
            metric_line("b", "rate", ["rate>0.5"]),
            point_line("a", 1, 1),
        ],
    )
    run = load_k6_run(path)
    b = next(m for m in run.metrics() if m["name"] == "b")
    assert b["tags"] == {} and run.serie(b["id"], None) is None and run.serie("nope", "max") is None
    _, (threshold,) = run.thresholds()
    assert threshold["calculated_value"] is None and threshold["tainted"] is False


# --- the reader ---------------------------------------------------------------------------


def test_unknown_line_types_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    lines = [b'{"type":"Metadata","data":{"x":1}}', orjson.dumps(metric_line("a", "gauge")), b"  ",
             b'{"type":"Future"}', orjson.dumps(point_line("a", 1, 3))]  # fmt: skip
    stats = ReadStats()
    items = list(read_k6_output(write_lines(tmp_path / "r.json", lines), stats=stats))
    assert [type(i).__name__ for i in items] == ["MetricDecl", "Point"]
    assert (stats.lines, stats.unknown_lines, stats.bad_lines) == (5, 2, 0)


@pytest.mark.parametrize(
    "bad",
    [b'{"type":"Point","data":{"time":', b"[1, 2]",
     b'{"metric":"a","type":"Point","data":{"value":1}}',
     b'{"metric":"a","type":"Point","data":{"time":"nope","value":1}}',
     b'{"metric":"a","type":"Point","data":{"time":"2026-01-01T00:00:00Z","value":"1"}}'],
)  # fmt: skip
def test_a_broken_line_is_reported_with_its_number(tmp_path: Path, bad: bytes) -> None:
    lines = [orjson.dumps(metric_line("a", "trend")), orjson.dumps(point_line("a", 1, 1)), bad,
             orjson.dumps(point_line("a", 2, 2))]  # fmt: skip
    path = write_lines(tmp_path / "r.json", lines)
    with pytest.raises(K6OutputError, match=r"r\.json:3: ") as caught:
        load_k6_run(path)
    assert caught.value.line_no == 3 and isinstance(caught.value, ValueError)
    run = load_k6_run(path, skip_bad_lines=True)
    assert run.read_stats.bad_lines == 1 and run.read_stats.first_bad_lines == [3]
    assert _values(run, "a", "count") == [1.0, 1.0]


def test_a_point_before_its_metric_line_is_an_error(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "r.json", [point_line("a", 1, 1), metric_line("a", "trend")])
    with pytest.raises(K6OutputError, match=r"r\.json:1: Point of metric 'a' before"):
        load_k6_run(path)


def test_gz_name_without_gzip_data_and_truncated_gzip(tmp_path: Path) -> None:
    fake = tmp_path / "r.json.gz"
    fake.write_bytes(orjson.dumps(metric_line("a", "trend")))
    with pytest.raises(K6OutputError, match="not gzip"):
        load_k6_run(fake)
    body = b"\n".join(orjson.dumps(point_line("a", i % 60, i)) for i in range(5000))
    cut = tmp_path / "cut.gz"
    cut.write_bytes(gzip.compress(orjson.dumps(metric_line("a", "trend")) + b"\n" + body)[:4000])
    with pytest.raises(K6OutputError, match="read error after line"):
        load_k6_run(cut)
    with pytest.raises(K6OutputError, match="cannot open"):
        load_k6_run(tmp_path / "absent.json")


def _generated_lines(count: int) -> Iterator[bytes]:
    yield orjson.dumps(metric_line("lat", "trend", ["p(99)<900"])) + b"\n"
    for i in range(count):
        yield (
            orjson.dumps(point_line("lat", (i / 4000) % 60, i % 1000, group="::g", scenario="s"))
            + b"\n"
        )


def test_reader_streams_and_memory_stays_bounded(tmp_path: Path) -> None:
    """The reader is a lazy generator and the model keeps ~20 bytes a sample (8 in the v2
    view's bucket, 12 in the v5 view's tag set), growing arrays included: the peak while
    loading stays under a third of the file's size. 20k lines (2.5 MB) tell that as well
    as 200k did, at a tenth of the cost under tracemalloc (which makes every allocation
    ~6x slower: 200k lines took 8-30 s on a loaded machine). The peak grows linearly in
    the samples, ~30 bytes each as tracemalloc counts them from 10k to 200k lines."""
    samples = 20_000
    path = tmp_path / "big.json"
    with path.open("wb") as out:
        out.writelines(_generated_lines(samples))
    lazy = read_k6_output(tmp_path / "absent.json")
    assert inspect.isgenerator(lazy)  # nothing is opened before the first next()
    with pytest.raises(K6OutputError):
        next(lazy)
    first = next(read_k6_output(path))
    assert isinstance(first, MetricDecl)
    tracemalloc.start()
    try:
        run = load_k6_run(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = path.stat().st_size  # ~2.5 MB; 20k samples kept as floats are 160 KB
    assert size > 2_000_000 and peak < 40 * samples < size / 3, (size, peak)
    assert _total(run, "lat", "count") == samples
    assert math.isclose(run.thresholds()[1][0]["calculated_value"], 989.0, rel_tol=0.01)


# --- a real k6, when there is one ------------------------------------------------------


async def test_a_real_k6_run_matches_its_summary(tmp_path: Path) -> None:
    out, summary = await record_k6_run(k6_binary(), tmp_path)
    run = load_k6_run(out, summary_path=summary)
    figures = orjson.loads(summary.read_bytes())["metrics"]
    assert _total(run, "http_reqs", "sum") == figures["http_reqs"]["count"] == 9
    assert _total(run, "iterations", "sum") == figures["iterations"]["count"] == 6
    assert run.overview()["checks_hits_successes"] == figures["checks"]["passes"] == 6
    assert run.overview()["checks_hits_total"] == 9
    assert _weighted_mean(run, "http_req_duration") == pytest.approx(
        figures["http_req_duration"]["avg"], rel=0.005
    )
    _, thresholds = run.thresholds()
    assert [t["tainted"] for t in thresholds] == [False] * 3 and run.run["result_status"] == 0
