"""--format points: one line per data point joined with its metric, every other record in
the raw sidecar; the same points as a raw harvest of the same runs, for every method."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from harvester.compression import open_data
from harvester.formats.points import PointsSplitter, Serie
from harvester.formats.pointvalue import point_value
from harvester.job import harvest_job
from harvester.records import encode
from harvester.scheduler import RunTarget
from harvester.simulator.cloud import SimCloud
from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator
from harvester.verify import intact, verify
from tests.harvest_helpers import canonical, parse_lines, read_dir, settings_for

METHODS = ["default", "mean", "max", "min", "p95", "0.99", "count", "rps", "last"]
COLUMNS = ["test_run_id", "test_id", "project_id", "metric", "metric_type", "tags", "method",
           "time", "value"]  # fmt: skip


def points_from_raw(records: list[dict[str, object]]) -> Counter[bytes]:
    """The points a raw run file holds, joined by hand (what a user would do in SQL)."""
    metrics = {r["data"]["id"]: r["data"] for r in records if r["type"] == "metric"}  # type: ignore[index]
    points: Counter[bytes] = Counter()
    for record in records:
        if record["type"] != "series":
            continue
        serie = record["data"]
        metric = metrics[serie["metric_id"]]  # type: ignore[index]
        for value in serie["values"]:  # type: ignore[index]
            key = (metric["name"], metric["type"], metric["tags"], serie["method"],  # type: ignore[index]
                   value["timestamp"], value["value"])  # fmt: skip
            points[orjson.dumps(key, option=orjson.OPT_SORT_KEYS)] += 1
    return points


def read_all(path: Path) -> list[dict[str, object]]:
    with open_data(path) as lines:
        return parse_lines(b"".join(lines))


async def test_points_hold_exactly_the_raw_points_for_every_method(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    raw_dir, points_dir = tmp_path / "raw", tmp_path / "points"
    targets = [RunTarget(r) for r in sorted(cloud.runs)]
    await harvest_job(settings_for(simulator, raw_dir, methods=METHODS), targets)
    settings = settings_for(
        simulator, points_dir, methods=METHODS, format="points", compress="zstd"
    )
    result = await harvest_job(settings, targets)
    assert not result.report.failed
    raw = read_dir(raw_dir)
    for run_id in cloud.runs:
        points = read_all(points_dir / f"{run_id}.points.ndjson.zst")
        assert points and all(list(p) == COLUMNS for p in points)
        assert {p["test_run_id"] for p in points} == {run_id}
        got = Counter(
            orjson.dumps((p["metric"], p["metric_type"], p["tags"], p["method"], p["time"],
                          p["value"]), option=orjson.OPT_SORT_KEYS)
            for p in points
        )  # fmt: skip
        assert got == points_from_raw(raw[run_id])
        # Every other record, raw and unchanged, in the sidecar (summary last).
        meta = read_all(points_dir / f"{run_id}.meta.ndjson.zst")
        assert canonical(meta) == canonical([r for r in raw[run_id] if r["type"] != "series"])
        assert meta[-1]["type"] == "summary"
    rows = list(verify(points_dir))
    assert intact(rows), [r for r in rows if r["status"] != "ok"]
    # Resume recognises a points archive: nothing is harvested again.
    again = await harvest_job(settings, targets)
    assert sorted(again.skipped) == sorted(cloud.runs)


def points_from_v6_raw(records: list[dict[str, Any]]) -> Counter[bytes]:
    """The points of a raw v6 run: each series' query names metric and method, its labels
    (less __name__) are the tags, the metric record of that name gives the type."""
    types = {r["data"]["name"]: r["data"]["type"] for r in records if r["type"] == "metric"}
    points: Counter[bytes] = Counter()
    for record in (r for r in records if r["type"] == "series"):
        query, data = record["query"], record["data"]
        tags = {k: v for k, v in data["metric"].items() if k != "__name__"}
        for stamp, value in data["values"]:
            key = (query["metric"], types.get(query["metric"]), tags, query["method"],
                   datetime.fromtimestamp(stamp, UTC), float(value))  # fmt: skip
            points[orjson.dumps(key, option=orjson.OPT_SORT_KEYS)] += 1
    return points


async def test_points_from_v6_hold_the_raw_v6_points(tmp_path: Path) -> None:
    cloud = generate_cloud(runs=2, metrics=6, points=12)
    async with Simulator(cloud) as sim:
        targets = [RunTarget(r) for r in sorted(cloud.runs)]
        for fmt in ("raw", "points"):
            settings = settings_for(
                sim, tmp_path / fmt, api="v6", stack_id=sim.stack_id, step=3, format=fmt,
                methods=["avg", "p95"],
            )  # fmt: skip
            assert not (await harvest_job(settings, targets)).report.failed
    raw = read_dir(tmp_path / "raw")
    for run_id in cloud.runs:
        points = read_all(tmp_path / "points" / f"{run_id}.points.ndjson")
        got = Counter(
            orjson.dumps((p["metric"], p["metric_type"], p["tags"], p["method"],
                          datetime.fromisoformat(str(p["time"])), p["value"]),
                         option=orjson.OPT_SORT_KEYS)
            for p in points
        )  # fmt: skip
        assert got and got == points_from_v6_raw(raw[run_id])
        assert all(p["metric_type"] in ("counter", "gauge", "rate", "trend") for p in points)


METRIC = {"id": "m1", "name": "http_req_duration", "type": "trend", "project_id": 7,
          "tags": {"url": "https://shop/", "status": "200"}}  # fmt: skip


def split_serie(serie: dict[str, Any], lines: bool = False) -> tuple[list[dict[str, Any]], bool]:
    """The points lines a splitter makes of one v2 serie, and whether it took the fast path
    (the values array's bytes used as they are); `lines`: built by the splitter, as for
    the points file."""
    splitter = PointsSplitter(5, lines=lines)
    data = encode("metric", 5, [METRIC]) + encode("series", 5, [serie])
    items = list(splitter.split(data))
    [found] = [item for item in items if isinstance(item, Serie)]
    assert splitter.points == found.count
    return parse_lines(found.ndjson()), found.pairs is None


def expected_points(serie: dict[str, Any], values: list[tuple[Any, Any]]) -> list[dict[str, Any]]:
    head = {"test_run_id": 5, "test_id": None, "project_id": 7, "metric": "http_req_duration",
            "metric_type": "trend", "tags": METRIC["tags"], "method": serie["method"]}  # fmt: skip
    return [{**head, "time": time, "value": value} for time, value in values]


@pytest.mark.parametrize("lines", [False, True])
def test_a_plain_v2_serie_is_split_from_its_bytes_the_same_as_parsed(lines: bool) -> None:
    values = [{"timestamp": f"2026-11-28T22:00:0{i}Z", "value": v}
              for i, v in enumerate([1.5, 2, None, 1e-7, -3.25, 0])]  # fmt: skip
    serie = {"agg": {}, "id": "s1", "method": "p95", "metric_id": "m1", "values": values}
    got, fast = split_serie(serie, lines)
    assert fast
    want = [(v["timestamp"], v["value"]) for v in values]
    assert got == expected_points(serie, want)
    # Byte for byte what the slow path (a dict per point) writes.
    slow = PointsSplitter(5, lines=lines)
    list(slow.split(encode("metric", 5, [METRIC])))
    parsed = slow._parsed({"type": "series", "data": serie})
    fast_serie = next(iter(slow.split(encode("series", 5, [serie]))))
    assert isinstance(fast_serie, Serie) and parsed is not None
    assert fast_serie.ndjson() == parsed.ndjson()
    assert parsed.pairs is not None  # the same times and values for Parquet's columns
    csv = b"".join(b"%s,%s\n" % (t.encode(), orjson.dumps(v)) for t, v in parsed.pairs)
    assert fast_serie.csv() == csv
    # ... and the same rows for record consumers (Singer).
    assert fast_serie.rows() == parsed.rows() == parse_lines(parsed.ndjson())
    assert (fast_serie.lines is not None) == lines
    empty = {**serie, "values": []}
    assert split_serie(empty, lines) == ([], True)


@pytest.mark.parametrize(
    "values",
    [
        [{"timestamp": "2026-11-28T22:00:00Z", "value": 1, "extra": 2}],  # another key
        [{"value": 1, "timestamp": "2026-11-28T22:00:00Z"}],  # other order
        [{"timestamp": "2026-11-28T22:00:00Z", "value": "1.5"}],  # a string (v5 style)
        [{"timestamp": "2026-11-28T22:00:00Z", "value": [1]}],  # an array
        [{"timestamp": "2026-11-28T22:00:00Z", "value": True}],  # not a number: null
        [{"timestamp": "2026-11-28T22:00:00Z", "value": 1}, {"timestamp": "x", "value": False}],
        [{"timestamp": "a]b", "value": 1}, {"timestamp": "c", "value": 2}],
        [{"timestamp": 'x},{"timestamp":"y', "value": 1}],
        [{"timestamp": "t{", "value": 1}, {"timestamp": 'q,"value":', "value": 2}],
        [{"timestamp": None, "value": 1}],
        [{"timestamp": "2026-11-28T22:00:00Z", "value": {"timestamp": "y", "value": 2}}],
        [{"timestamp": "2026-11-28T22:00:00Z"}],
        [3, {"timestamp": "2026-11-28T22:00:00Z", "value": 1}],
        # The same structural bytes as plain points, other keys or an escape:
        [{"stamp": "2026-11-28T22:00:00Z", "value": 1}],
        [{"timestamp": "x", "value": 1}, {"stamp": "y", "value": 2}],
        [{"timestamp": "x", "value": 1}, {"timestamq": "y", "value": 2}],  # as long
        [{"timestamq": "x", "value": 1}, {"timestamp": "y", "value": 2}],
        [{"timestamp": "x", "value": 1}, {"timestamp": "y", "valve": 2}],
        [{"timestamp": "x", "value": 1}, {"timestamp": "y", "values": 2}],  # longer
        [{"timestamp": "x", "xvalue": 1}, {"timestamp": "y", "value": 2}],
        [{"timestamp": "x", "value": 1}, {"timestamps": "y", "value": 2}],
        [{"xtimestamp": "x", "value": 1}, {"timestamp": "y", "value": 2}],
        [{"timestamp": 'x\\"y', "value": 1}],
    ],
)
@pytest.mark.parametrize("lines", [False, True])
def test_any_other_values_shape_is_parsed_and_gives_the_same_points(
    values: list[Any], lines: bool
) -> None:
    serie = {"agg": {}, "id": "s1", "method": "mean", "metric_id": "m1", "values": values}
    got, fast = split_serie(serie, lines)
    assert not fast
    # What is not an object is no point (3 above); a missing key is null.
    want = [
        (v.get("timestamp"), point_value(v.get("value"))) for v in values if isinstance(v, dict)
    ]
    assert got == expected_points(serie, want)


def test_blanks_before_a_point_key_s_colon_are_kept_and_the_points_the_same() -> None:
    """The API's text (kept as sent) may hold blanks between a point's key and its `:`:
    the lines built from the bytes keep them (valid JSON), with the same points."""
    splitter = PointsSplitter(5, lines=True)
    list(splitter.split(encode("metric", 5, [METRIC])))
    values = b'[{"timestamp":"t1","value" :1},{"timestamp" :"t2","value":2}]'
    line = b'{"type":"series","data":{"method":"mean","metric_id":"m1","values":%s}}\n' % values
    [serie] = [item for item in splitter.split(line) if isinstance(item, Serie)]
    assert serie.lines is not None  # built from the bytes
    want = expected_points({"method": "mean"}, [("t1", 1), ("t2", 2)])
    assert parse_lines(serie.ndjson()) == want


def test_a_values_key_elsewhere_in_the_serie_is_not_taken_for_its_points() -> None:
    points = [{"timestamp": "2026-11-28T22:00:00Z", "value": 4.0}]
    decoy = [{"timestamp": "1999-01-01T00:00:00Z", "value": 9.0}]
    for agg, values in (({"values": decoy}, points), ({"values": decoy}, [])):
        serie = {"agg": agg, "id": "s1", "method": "max", "metric_id": "m1", "values": values}
        got, fast = split_serie(serie)
        assert not fast
        assert got == expected_points(serie, [(p["timestamp"], p["value"]) for p in values])


@pytest.mark.parametrize(
    "pairs",
    [
        [("2026-11-28T22:00:00.000Z", 1.5), ("2026-11-28T22:00:03.000Z", None),
         ("2026-11-28T22:00:06.000Z", 1e-7), ("x", 0), ("y", -3)],  # the fast path
        [("a", 'x",y'), ("b", [1]), ("c", 2)],  # the slow path: a string, an array
        [(None, 2.0), ('q"],["', 3), ("t", {"a": 1})],  # a null and an escaped time, an object
        [("a", 1), ("b", []), ("c", 2)],
    ],
)  # fmt: skip
def test_converted_pairs_make_the_lines_of_a_dict_a_point(pairs: list[tuple[Any, Any]]) -> None:
    """A v6 serie's pairs become lines by two replaces over one orjson array when each is
    a string and a scalar; any other pair is a dict a point. Both are the same lines."""
    head = {"test_run_id": 5, "test_id": 3, "project_id": 7, "metric": "vus",
            "metric_type": "gauge", "tags": {"k": 'v"],['}, "method": "avg"}  # fmt: skip
    lines = Serie(head, len(pairs), pairs=pairs).ndjson()
    want = [{**head, "time": time, "value": value} for time, value in pairs]
    assert lines == b"".join(orjson.dumps(w, option=orjson.OPT_APPEND_NEWLINE) for w in want)


def test_a_v6_point_whose_time_is_no_time_has_a_null_time() -> None:
    """Not a number, or past the years 1-9999 in UTC: such a time (or labels or points of
    another shape) ended the whole job as 'cannot write ...: OverflowError' (or
    ValueError, TypeError); it is null, as a value that is no finite number is."""
    metric = {"id": "x", "name": "vus", "type": "gauge"}
    values = [[1e20, "1"], [-1e20, "2"], ["abc", "3"], [None, "4"], [True, "5"],
              [[1], "6"], 7, [1717344480, "8"]]  # fmt: skip
    series = [{"metric": {"__name__": "vus", "a": "1"}, "values": values},
              {"metric": ["a"], "values": "abc"}]  # fmt: skip
    query = {"method": "last", "metric": "vus", "step": 60}
    data = encode("metric", 5, [metric]) + b"".join(
        orjson.dumps({"type": "series", "test_run_id": 5, "query": query, "data": serie}) + b"\n"
        for serie in series
    )
    splitter = PointsSplitter(5, lines=False)
    found = [item for item in splitter.split(data) if isinstance(item, Serie)]
    points = [point for serie in found for point in parse_lines(serie.ndjson())]
    assert [(p["time"], p["value"]) for p in points] == [
        *((None, float(n)) for n in range(1, 7)),
        ("2024-06-02T16:08:00.000Z", 8.0),
    ]
    assert {orjson.dumps(p["tags"]) for p in points} == {b'{"a":"1"}'}
