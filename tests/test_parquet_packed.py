"""--format parquet: v2 series answers packed by the harvester (`packed`) for the writer,
which holds the same points as when it reads the series' lines."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

import harvester.series_answers
from harvester.job import harvest_job
from harvester.packed import PackedSeries, pack_series
from harvester.records import Lines, encode, encode_texts
from harvester.runfiles import KINDS, RunFiles
from harvester.scheduler import RunTarget
from harvester.series_answers import SeriesAnswer, packed_series_answer, series_answer
from harvester.simulator.cloud import SimCloud
from harvester.simulator.generated import GeneratedRun, generate_cloud
from harvester.simulator.model import JsonObject
from harvester.simulator.server import Simulator
from tests.harvest_helpers import settings_for
from tests.test_parquet import METRIC, PLAIN, rows_of

pq = pytest.importorskip("pyarrow.parquet")

GRID = [f"2026-11-28T22:00:0{s}Z" for s in range(4)]


def points(values: list[Any], times: list[Any] = GRID) -> list[dict[str, Any]]:
    return [{"timestamp": t, "value": v} for t, v in zip(times, values, strict=True)]


#: Batches of series that are packed: each a shape the writer's reading takes.
PACKED: dict[str, list[Any]] = {
    "one grid": [
        {"metric_id": "m1", "method": "mean", "values": points([1, 2.5, -3, 0.5])},
        {"metric_id": "m1", "method": "max", "values": points([4, 5, 6, 7])},
    ],
    "grids that differ in one batch": [
        {"metric_id": "m1", "method": "mean", "values": points([1, 2, 3, 4])},
        {"metric_id": "m1", "method": "max", "values": points([1, 2], GRID[2:])},
        {"metric_id": "m1", "method": "min", "values": points([9, 8, 7, 6])},
        {"metric_id": "m1", "method": "p(95)", "values": points([5], ["not a time"])},
        {"metric_id": "m1", "method": "p(99)", "values": points([1, 2], GRID[2:])},
        {"metric_id": "m1", "method": "count", "values": points([1, 2], [None, "2026-11-28"])},
    ],
    "nulls": [
        {"metric_id": "m1", "method": "mean", "values": points([None, 1, None, 2])},
        {"metric_id": "m1", "method": "max", "values": points([None] * 4)},
        {"metric_id": "m1", "method": "min", "values": points([3, 4, 5, None])},
    ],
    "huge and tiny values": [
        {
            "metric_id": "m1",
            "method": "mean",
            "values": points([1.7976931348623157e308, -1e308, 5e-324, -0.0]),
        },  # fmt: skip
        {
            "metric_id": "m1",
            "method": "max",
            "values": points([2**53 + 1, -(2**63), 2**64 - 1, 1e-300]),
        },  # fmt: skip
    ],
    "series without points, metric or method": [
        {"metric_id": "m1", "method": "mean", "values": []},
        {"metric_id": "m1", "method": "max"},
        {"metric_id": "m1", "method": "min", "values": None},
        {"metric_id": None, "method": None, "values": points([1, 2, 3, 4])},
        {"method": "p(95)", "values": points([1, 2, 3, 4]), "extra": {"kept": [1]}},
        {"metric_id": "unknown", "method": "mean", "values": points([1, 2, 3, 4])},
    ],
}


def packed_rows(series: list[Any]) -> tuple[list[bytes], int, bytes]:
    """As `rows_of("parquet", series)`, the series handed packed; and the file's bytes."""
    packed = pack_series(orjson.dumps({"k6-serie": series}))
    assert packed is not None
    files = {kind: io.BytesIO() for kind in KINDS["parquet"]}
    run = RunFiles(5, "parquet", "none", None, files)
    run.write(encode("metric", 5, [METRIC]))
    run.write(packed)
    run.finish()
    table = pq.read_table(io.BytesIO(files["parquet"].getvalue())).to_pylist()
    rows = [(r["metric"], orjson.loads(r["tags"]), r["method"], r["time"], r["value"])
            for r in table]  # fmt: skip
    from tests.test_parquet import key

    count = run.counts({})["parquet"]["point"]
    return sorted(key(*r) for r in rows), count, files["parquet"].getvalue()


def lines_file(series: list[Any]) -> bytes:
    files = {kind: io.BytesIO() for kind in KINDS["parquet"]}
    run = RunFiles(5, "parquet", "none", None, files)
    run.write(encode("metric", 5, [METRIC]))
    run.write(encode("series", 5, series))
    run.finish()
    return files["parquet"].getvalue()


@pytest.mark.parametrize("name", PACKED)
def test_a_packed_batch_holds_what_its_lines_and_the_points_format_hold(name: str) -> None:
    """Packed or as lines, the same Parquet file byte for byte, and the points of
    `--format points`: several time grids in one batch (a time that is no ISO 8601 text or
    null is null), nulls, values at a double's ends, series without points or metric."""
    series = PACKED[name]
    rows, count, packed_file = packed_rows(series)
    assert (rows, count) == rows_of("points", series)
    assert packed_file == lines_file(series)


def test_a_packed_batch_keeps_its_grids_once_and_its_nulls_by_place() -> None:
    packed = pack_series(orjson.dumps({"k6-serie": PACKED["grids that differ in one batch"]}))
    assert packed is not None
    assert packed.grids == [GRID, GRID[2:], ["not a time"], [None, "2026-11-28"]]
    assert packed.grid_of == [0, 1, 0, 2, 1, 3]
    nulls = pack_series(orjson.dumps({"k6-serie": PACKED["nulls"]}))
    assert nulls is not None and nulls.nulls == [0, 2, 4, 5, 6, 7, 11]
    assert list(nulls.values) == [0, 1, 0, 2, 0, 0, 0, 0, 3, 4, 5, 0]


@pytest.mark.parametrize(
    "odd",
    [
        {"metric_id": "m1", "values": [{"timestamp": GRID[0], "value": True}]},
        {"metric_id": "m1", "values": [{"timestamp": GRID[0], "value": "1.5"}]},
        b'{"metric_id":"m1","values":[{"timestamp":"2026-11-28T22:00:00Z","value":1e999}]}',
        {"metric_id": "m1", "values": [{"timestamp": 5, "value": 1}]},
        {"metric_id": "m1", "values": [[GRID[0], 1]]},
        {"metric_id": "m1", "values": 5},
        {"metric_id": 1, "values": points([1, 2, 3, 4])},
        {"metric_id": "m1", "method": 5},
        [1],
    ],
)
def test_an_answer_of_another_shape_goes_as_lines(odd: Any) -> None:
    """What the writer does not read whole from lines is not packed: the answer goes as
    lines (`series_answer`: the same texts, or the same error), the splitter's way."""
    text = odd if isinstance(odd, bytes) else orjson.dumps(odd)
    body = b'{"k6-serie":[' + orjson.dumps(PLAIN) + b"," + text + b"]}"
    assert pack_series(body) is None
    read_as_lines(body)


def read_as_lines(body: bytes) -> None:
    """`packed_series_answer` answers `body` as `series_answer` does: the same texts, not
    packed, or the same error."""
    where = "http://api/series".strip
    try:
        want: SeriesAnswer | type[Exception] = series_answer(body, 200, "series", where)
    except Exception as exc:
        want = type(exc)
    if isinstance(want, SeriesAnswer):
        got = packed_series_answer(body, 200, "series", where)
        assert got.packed is None and got == want
    else:
        with pytest.raises(want):
            packed_series_answer(body, 200, "series", where)


@pytest.mark.parametrize(
    "body",
    [
        orjson.dumps({"k6-serie": [PLAIN]}).replace(b",", b",\n"),  # line breaks
        b'{"k6-serie":[{"metric_id":"m1","name":"\xff","values":[]}]}',  # not UTF-8
    ],
)
def test_a_body_not_plainly_right_goes_as_lines_as_before(body: bytes) -> None:
    read_as_lines(body)


@pytest.mark.parametrize("name", PACKED)
def test_a_packed_answer_tells_its_ids_longest_serie_and_lines_bytes(name: str) -> None:
    """What the harvest learns of an answer (its ids, its longest serie) is the same
    packed or not; the summary's bytes of lines are those its lines would have."""
    body = orjson.dumps({"k6-serie": PACKED[name]})
    where = "http://api/series".strip
    plain, packed = (
        series_answer(body, 200, "series", where),
        packed_series_answer(body, 200, "series", where),
    )
    assert packed.packed is not None and packed.count == plain.count == len(PACKED[name])
    assert (packed.metric_ids, packed.points) == (plain.metric_ids, plain.points)
    lines = encode_texts("series", 100001, plain.texts)
    assert Lines(100001, packed.packed, Counter()).size == len(lines)


def test_no_series_at_all_is_packed_empty() -> None:
    packed = packed_series_answer(b'{"k6-serie":[]}', 200, "series", "u".strip)
    assert packed.packed is not None and packed.count == 0 and packed.points is None
    assert Lines(1, packed.packed, Counter()).size == 0


def test_the_writer_process_writes_the_same_parquet_from_packed_batches(tmp_path: Path) -> None:
    """Packed batches through the writer process (the pipe: a header and the values'
    bytes) and in this process: the same file, byte for byte, as from the lines."""
    from harvester.writeproc import ChildRunFiles, WriterProcess

    cloud = generate_cloud(runs=1, metrics=80, points=240, seed=4)
    run = next(iter(cloud.runs.values()))
    metrics = run.metrics()
    series: list[Any] = [run.serie(str(m["id"]), None) for m in metrics]
    series[3]["values"][5]["value"] = None
    series[7]["values"] = series[7]["values"][10:]
    parts = [series[:30], series[30:31], series[31:]]
    packed = [pack_series(orjson.dumps({"k6-serie": part})) for part in parts]
    assert all(isinstance(p, PackedSeries) for p in packed)
    start, end = encode("metric", 1, metrics), encode("summary", 1, [{"complete": True}])
    paths = {kind: tmp_path / f"1.{kind}" for kind in KINDS["parquet"]}
    for path in paths.values():
        path.touch()
    here = {kind: io.BytesIO() for kind in KINDS["parquet"]}
    lines = {kind: io.BytesIO() for kind in KINDS["parquet"]}
    local = RunFiles(1, "parquet", "none", None, here)
    from_lines = RunFiles(1, "parquet", "none", None, lines)
    child = WriterProcess()
    try:
        remote = ChildRunFiles(child, 1, "parquet", "none", None, paths)
        for stack in (local, remote):
            stack.write(start)
            for batch in packed:
                assert batch is not None
                stack.write(batch)
            stack.write(end)
            stack.finish()
    finally:
        child.close()
    from_lines.write(start)
    for part in parts:
        from_lines.write(encode("series", 1, part))
    from_lines.write(end)
    from_lines.finish()
    for kind, path in paths.items():
        assert path.read_bytes() == here[kind].getvalue() == lines[kind].getvalue() != b""
    assert pq.read_metadata(paths["parquet"]).num_rows == 80 * 240 - 10


class Ragged(GeneratedRun):
    """A generated run whose series differ in time grid and hold nulls and huge values."""

    def serie(self, metric_id: str, method: str | None) -> JsonObject | None:
        serie = super().serie(metric_id, method)
        if serie is not None:
            values = serie["values"]
            turn = sum(map(ord, metric_id + (method or ""))) % 4
            if turn == 1:
                serie["values"] = values[turn::2]  # its own grid
            elif turn == 2:
                values[0]["value"], values[-1]["value"] = None, 1.7976931348623157e308
            elif turn == 3:
                values[1]["value"] = 2**64 - 1
        return serie


async def test_a_parquet_harvest_packs_its_answers_and_holds_the_points_of_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A harvest whose series differ in time grid within an answer, hold nulls and values
    at a double's ends: every answer is packed, and the Parquet files hold the points
    of `--format points`; the summary counts the bytes of lines of `raw`."""
    packed: list[bool] = []

    def counted(body: bytes) -> PackedSeries | None:
        found = pack_series(body)
        packed.append(found is not None)
        return found

    monkeypatch.setattr(harvester.series_answers, "pack_series", counted)
    cloud = SimCloud()
    for run_id in (100001, 100002):
        cloud.add_run(Ragged(run_id, metrics=40, points=30))
    methods = ["default", "max"]
    targets = [RunTarget(r) for r in sorted(cloud.runs)]
    written = {}
    async with Simulator(cloud) as sim:
        for fmt in ("raw", "points", "parquet"):
            settings = settings_for(sim, tmp_path / fmt, format=fmt, methods=methods)
            result = await harvest_job(settings, targets)
            assert not result.report.failed
            written[fmt] = result.stats.bytes_written
    assert packed and all(packed)
    assert written["parquet"] == written["raw"] == written["points"]
    want: Counter[bytes] = Counter()
    for path in (tmp_path / "points").glob("*.points.ndjson"):
        for line in path.read_bytes().splitlines():
            p = orjson.loads(line)
            value = p["value"] if p["value"] is None else float(p["value"])
            want[orjson.dumps((p["metric"], p["method"], p["time"], value))] += 1
    got: Counter[bytes] = Counter()
    for path in (tmp_path / "parquet").glob("*.parquet"):
        for r in pq.read_table(path).to_pylist():
            time = r["time"].isoformat().replace("+00:00", "Z")
            got[orjson.dumps((r["metric"], r["method"], time, r["value"]))] += 1
    assert want and got == want
    assert any(key.endswith(b",null]") for key in got)
    assert any(orjson.dumps(1.7976931348623157e308) in key for key in got)
