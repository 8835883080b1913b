"""--format parquet: the points of each run, typed, in bounded row groups, verified."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from harvester.cli import main
from harvester.formats import parquet as parquet_format
from harvester.formats.points import PointsSplitter, Serie
from harvester.job import harvest_job
from harvester.moments import utc_moment
from harvester.records import encode
from harvester.runfiles import KINDS, RunFiles
from harvester.scheduler import RunTarget
from harvester.simulator.cloud import SimCloud
from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator
from harvester.verify import intact, verify
from tests.harvest_helpers import settings_for
from tests.process_helpers import ROOT
from tests.test_singer import METHODS, V6_METHODS

pq = pytest.importorskip("pyarrow.parquet")


def key(metric: object, tags: object, method: object, time: datetime, value: object) -> bytes:
    return orjson.dumps((metric, tags, method, time, value), option=orjson.OPT_SORT_KEYS)


async def test_parquet_holds_the_same_points_typed_in_bounded_row_groups(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    """A harvest (its Parquet built in the writer process, `writeproc`) holds exactly the
    points of `--format points`, typed."""
    targets = [RunTarget(r) for r in sorted(cloud.runs)]
    methods = ["default", "p95", "max"]
    for fmt in ("points", "parquet"):
        settings = settings_for(simulator, tmp_path / fmt, format=fmt, methods=methods)
        assert not (await harvest_job(settings, targets)).report.failed
    for run_id in cloud.runs:
        path = tmp_path / "parquet" / f"{run_id}.parquet"
        meta = pq.ParquetFile(path)
        schema = meta.schema_arrow
        assert str(schema.field("time").type) == "timestamp[ms, tz=UTC]"
        assert str(schema.field("tags").type) == "string"  # JSON text, see formats/parquet.py
        assert str(schema.field("value").type) == "double"
        groups = [meta.metadata.row_group(i) for i in range(meta.metadata.num_row_groups)]
        assert all(group.num_rows <= parquet_format.ROW_GROUP for group in groups)
        assert meta.metadata.row_group(0).column(0).compression == "ZSTD"
        rows = meta.read().to_pylist()
        got = Counter(
            key(r["metric"], orjson.loads(r["tags"]), r["method"], r["time"], r["value"])
            for r in rows
        )
        lines = (tmp_path / "points" / f"{run_id}.points.ndjson").read_bytes().splitlines()
        want: Counter[bytes] = Counter()
        for line in lines:
            p = orjson.loads(line)
            moment = datetime.fromisoformat(p["time"]).astimezone(UTC)
            want[key(p["metric"], p["tags"], p["method"], moment, float(p["value"]))] += 1
        assert got == want and len(rows) == len(lines)
        assert (tmp_path / "parquet" / f"{run_id}.meta.ndjson").exists()
    assert intact(list(verify(tmp_path / "parquet")))


def test_without_pyarrow_parquet_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    args = ["harvest", "--token", "t", "--base-url", "http://127.0.0.1:9", "--run", "1"]
    assert main([*args, "--out", str(tmp_path), "--format", "parquet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'k6-harvester[parquet]'" in err and len(err.splitlines()) == 1


def test_a_run_is_written_in_row_groups_of_at_most_row_group_rows_of_whole_series(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(parquet_format, "ROW_GROUP", 100)
    cloud = generate_cloud(runs=1, metrics=6, points=30, seed=3)
    run = next(iter(cloud.runs.values()))
    metrics = run.metrics()
    files = {kind: io.BytesIO() for kind in KINDS["parquet"]}
    written = RunFiles(1, "parquet", "none", None, files)
    written.write(encode("metric", 1, metrics))
    written.write(encode("series", 1, [run.serie(str(m["id"]), None) for m in metrics]))
    written.finish()
    meta = pq.ParquetFile(io.BytesIO(files["parquet"].getvalue())).metadata
    # 6 series of 30 points: 3 a group (90 rows), never a serie across two.
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [90, 90]


def test_a_runs_last_row_group_is_written_when_its_summary_arrives_not_at_commit() -> None:
    """Runs waiting to be published hold no rows: the summary (a run's last line) hands
    them on to the encoder, in the writer's turn (at large, 457 MB peak when each waiting
    run held its rows until its commit, 246 MB so)."""
    files = {kind: io.BytesIO() for kind in KINDS["parquet"]}
    run = RunFiles(5, "parquet", "none", None, files)
    metric = {"id": "m1", "name": "vus", "type": "gauge", "tags": {}}
    values = [{"timestamp": f"2026-11-28T22:00:0{i}Z", "value": i} for i in range(5)]
    run.write(encode("metric", 5, [metric]))
    run.write(encode("series", 5, [{"metric_id": "m1", "method": "mean", "values": values}]))
    held, _ = run.written("parquet")
    run.write(encode("summary", 5, [{"complete": True}]))
    encoded()
    written, _ = run.written("parquet")
    assert held <= 4 < written  # at most the magic bytes, then the row group
    run.finish()
    table = pq.read_table(io.BytesIO(files["parquet"].getvalue()))
    assert table.column("value").to_pylist() == [0.0, 1.0, 2.0, 3.0, 4.0]


def encoded() -> None:
    """Once the row groups handed on so far are written (the encoder takes them in turn)."""
    parquet_format._encoder().submit(lambda: None).result()


class SlowDisk(io.BytesIO):
    """A file that takes its time to write each piece, and counts the pieces written
    after its owner closed it; or, `full`, one that fails past its first bytes."""

    def __init__(self, *, full: bool = False) -> None:
        super().__init__()
        self.full, self.shut, self.late = full, False, 0

    def write(self, data: Any) -> int:
        if self.full and self.tell() >= 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.late += self.shut
        time.sleep(0.005)
        return super().write(data)


def test_a_full_disk_under_the_encoder_fails_the_run() -> None:
    """A row group is encoded and written by the encoder thread: its error (a full disk)
    is raised in the run's writer all the same, by its finish at the latest."""
    run = RunFiles(5, "parquet", "none", None, {"parquet": SlowDisk(full=True),
                                                  "meta.ndjson": io.BytesIO()})  # fmt: skip
    run.write(encode("metric", 5, [METRIC]))
    with pytest.raises(OSError) as failed:
        run.write(encode("series", 5, [PLAIN]))
        run.write(encode("summary", 5, [{}]))  # its rows handed on
        run.finish()
    assert failed.value.errno == errno.ENOSPC


def test_a_discarded_run_waits_for_its_row_group_at_the_encoder() -> None:
    """An aborted run's owner closes its file once `discard` returns: the encoder must be
    done with it by then, never writing into a closed file."""
    disk = SlowDisk()
    run = RunFiles(5, "parquet", "none", None, {"parquet": disk, "meta.ndjson": io.BytesIO()})
    run.write(encode("metric", 5, [METRIC]))
    run.write(encode("series", 5, [PLAIN]))
    run.write(encode("summary", 5, [{}]))  # its rows handed on
    run.discard()
    disk.shut = True
    encoded()
    assert disk.late == 0 and len(disk.getvalue()) > 4  # the group written, before


def plain(count: int) -> bytes:
    """A v2 serie's `values` of `count` points, the value `i` at second `i`."""
    points = (b'{"timestamp":"2026-11-28T22:00:0%dZ","value":%d}' % (i, i) for i in range(count))
    return b"[" + b",".join(points) + b"]"


def head(metric: object = "vus", project_id: object = 9, tags: object = None) -> dict[str, Any]:
    return {"test_run_id": 5, "test_id": 7, "project_id": project_id, "metric": metric,
            "metric_type": "gauge", "tags": {"a": "b"} if tags is None else tags,
            "method": "mean"}  # fmt: skip


def one_serie_file() -> bytes:
    """A Parquet file of one serie of five points, as the harvester writes it."""
    sink = io.BytesIO()
    points = parquet_format.ParquetPoints(sink)
    points.add(Serie(head(), 5, body=plain(5)))
    points.close()
    return sink.getvalue()


def test_shared_columns_are_each_series_entry_once_with_nulls_and_ids_that_differ() -> None:
    """A row group's shared columns are Parquet dictionaries (each serie's entry once, a
    row its index); a serie without a metric or project has nulls there, and tags are
    the JSON object of the points lines (`{}` when the API gave no object)."""
    sink = io.BytesIO()
    points = parquet_format.ParquetPoints(sink)
    points.add(Serie(head(), 2, body=plain(2)))
    points.add(Serie(head(metric=None, project_id=None, tags=["x"]), 1, body=plain(1)))
    points.add(Serie(head("vus", 10, {"a": 1, "b": "c"}), 1, body=plain(1)))
    points.add(Serie(head(), 0))  # no points, no rows
    points.close()
    meta = pq.ParquetFile(io.BytesIO(sink.getvalue()))
    table = meta.read()
    assert table.column("metric").to_pylist() == ["vus", "vus", None, "vus"]
    assert table.column("project_id").to_pylist() == [9, 9, None, 10]
    assert table.column("test_run_id").to_pylist() == [5] * 4
    tags = ['{"a":"b"}', '{"a":"b"}', "{}", '{"a":1,"b":"c"}']
    assert table.column("tags").to_pylist() == tags
    assert table.column("value").to_pylist() == [0.0, 1.0, 0.0, 0.0]
    assert meta.schema_arrow == parquet_format.schema()
    column = meta.metadata.row_group(0).column(5)
    assert column.has_dictionary_page and column.statistics.null_count == 0


def test_the_writer_writes_what_pyarrow_parquet_writes() -> None:
    """The harvester uses the class behind `pyarrow.parquet.ParquetWriter` (importing the
    public module costs 13 MB resident): the file is byte for byte the one it writes."""
    ours = one_serie_file()
    again = io.BytesIO()
    options = {"store_schema": False, "use_dictionary": list(parquet_format.SHARED)}
    with pq.ParquetWriter(again, parquet_format.schema(), compression="zstd", **options) as writer:
        writer.write_table(pq.read_table(io.BytesIO(ours)))
    assert ours == again.getvalue()


def test_arrow_allocates_with_malloc_and_pyarrow_fs_and_compute_are_not_imported() -> None:
    """In a process of its own (Arrow picks its allocator once): mimalloc kept each worker
    thread's freed row groups (240 MB against 190 MB on the medium bench); the modules
    `pyarrow.fs` and `pyarrow.compute` cost 13 and 12 MB resident."""
    code = (
        "import io, sys\n"
        "from harvester.formats.parquet import ParquetPoints\n"
        "from harvester.formats.points import Serie\n"
        "points = ParquetPoints(io.BytesIO())\n"
        f"points.add(Serie({head()!r}, 2, body={plain(2)!r}))\n"
        "points.close()\n"
        "import pyarrow\n"
        "print(pyarrow.default_memory_pool().backend_name,\n"
        "      [name in sys.modules for name in ('pyarrow.fs', 'pyarrow.compute')])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.stdout.split() == ["system", "[False,", "False]"], done.stderr


METRIC = {"id": "m1", "name": "vus", "type": "gauge", "tags": {"a": "b"}}
PLAIN = {"metric_id": "m1", "method": "mean",
         "values": [{"timestamp": "2026-11-28T22:00:00Z", "value": 1}]}  # fmt: skip


def moment(point: dict[str, Any]) -> datetime | None:
    """A point line's time as Parquet holds it (null when it is no ISO 8601 text)."""
    found = utc_moment(point["time"])
    return found and found.astimezone(UTC)


def rows_of(fmt: str, series: list[object]) -> tuple[list[bytes], int]:
    """The points of one answer's `series` written in `fmt`, as comparable keys, and the
    count the manifest gets."""
    files = {kind: io.BytesIO() for kind in KINDS[fmt]}
    run = RunFiles(5, fmt, "none", None, files)
    run.write(encode("metric", 5, [METRIC]))
    run.write(encode("series", 5, series))
    run.finish()
    count = run.counts({})[KINDS[fmt][0]]["point"]
    if fmt == "parquet":
        table = pq.read_table(io.BytesIO(files["parquet"].getvalue())).to_pylist()
        rows = [(r["metric"], orjson.loads(r["tags"]), r["method"], r["time"], r["value"])
                for r in table]  # fmt: skip
        return sorted(key(*r) for r in rows), count
    lines = [orjson.loads(line) for line in files["points.ndjson"].getvalue().splitlines()]
    rows = [(p["metric"], p["tags"], p["method"], moment(p), p["value"] and float(p["value"]))
            for p in lines]  # fmt: skip
    return sorted(key(*r) for r in rows), count


@pytest.mark.parametrize(
    "odd",
    [
        {"metric_id": "m1", "method": "max", "values": [PLAIN["values"][0], None]},
        {
            "metric_id": "m1",
            "method": "max",
            "values": [{"timestamp": "2026-11-28T22:00:01Z", "value": True}],
        },  # fmt: skip
        {"metric_id": "m1", "method": "max", "values": [{"timestamp": "not a time", "value": 1}]},
        {"metric_id": 1, "method": "max", "values": PLAIN["values"]},
        None,
    ],
)
def test_an_answers_series_of_another_shape_go_the_splitters_way(odd: object) -> None:
    """An answer's v2 series are read whole (`_read_series`); when one is of another
    shape (a null point, a value true, a number for an id, no data) the answer goes the
    splitter's way, and a time that is no ISO 8601 text is null either way: Parquet holds
    what points holds."""
    parquet, points = rows_of("parquet", [PLAIN, odd]), rows_of("points", [PLAIN, odd])
    assert parquet == points and parquet[1] >= 1


def test_series_on_other_time_grids_keep_their_own_times(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run's time grid is converted once and shared by the series on it: a serie on
    another grid (other times, fewer, a time that is no ISO 8601 text), between two on the
    first, gets its own times, read whole all the same (never split)."""
    other = [{"timestamp": t, "value": 2} for t in ("2026-11-28T22:00:05Z", "not a time")]
    series: list[object] = [
        PLAIN,
        {**PLAIN, "method": "max", "values": other},
        {**PLAIN, "method": "min", "values": other[:1]},
        {**PLAIN, "method": "p(95)"},
    ]
    points = rows_of("points", series)
    never_split(monkeypatch)
    assert rows_of("parquet", series) == points and points[1] == 5


def never_split(monkeypatch: pytest.MonkeyPatch) -> None:
    """The splitter fails when it makes a serie of a line (the way of odd answers)."""

    def split(*args: object) -> None:
        raise AssertionError("a serie split")

    for way in ("_fast_v2", "_parsed"):  # how the splitter makes a serie of a line
        monkeypatch.setattr(PointsSplitter, way, split)


def test_an_answers_plain_series_are_not_split_point_by_point(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def split(*args: object) -> None:
        raise AssertionError("split")

    files = {kind: io.BytesIO() for kind in KINDS["parquet"]}
    run = RunFiles(5, "parquet", "none", None, files)
    run.write(encode("metric", 5, [METRIC]))
    monkeypatch.setattr(PointsSplitter, "split", split)
    run.write(encode("series", 5, [PLAIN, {**PLAIN, "method": "max", "values": []}, PLAIN]))
    run.finish()
    assert run.counts({})["parquet"]["point"] == 2
    table = pq.read_table(io.BytesIO(files["parquet"].getvalue()))
    assert table.column("method").to_pylist() == ["mean", "mean"]


def _point_key(row: dict[str, Any], tags: Any, time: datetime) -> bytes:
    value = row["value"]
    return orjson.dumps(
        (row["test_run_id"], row["test_id"], row["project_id"], row["metric"],
         row["metric_type"], tags, row["method"], time,
         None if value is None else float(value)),
        option=orjson.OPT_SORT_KEYS,
    )  # fmt: skip


@pytest.mark.parametrize(("api", "methods"), [("v2", METHODS), ("v6", V6_METHODS)])
async def test_parquet_holds_the_points_format_s_points_from_each_api_for_every_method(
    tmp_path: Path, api: str, methods: list[str]
) -> None:
    """Every column of every row, from v2 and v6, with every method (the first test above
    covers v2 and three methods)."""
    cloud = generate_cloud(runs=2, metrics=16, points=5)
    async with Simulator(cloud) as sim:
        how: dict[str, Any] = {"methods": methods}
        if api == "v6":
            how.update(api="v6", stack_id=sim.stack_id, step=3)
        targets = [RunTarget(r) for r in sorted(cloud.runs)]
        for fmt in ("points", "parquet"):
            settings = settings_for(sim, tmp_path / fmt, format=fmt, run_record=True, **how)
            assert not (await harvest_job(settings, targets)).report.failed
    want: Counter[bytes] = Counter()
    for path in (tmp_path / "points").glob("*.points.ndjson"):
        for line in path.read_bytes().splitlines():
            p = orjson.loads(line)
            want[_point_key(p, p["tags"], datetime.fromisoformat(p["time"]))] += 1
    got: Counter[bytes] = Counter()
    for path in (tmp_path / "parquet").glob("*.parquet"):
        for r in pq.read_table(path).to_pylist():
            got[_point_key(r, orjson.loads(r["tags"]), r["time"])] += 1
    assert want and got == want
    assert len({orjson.loads(k)[6] for k in got}) > 2  # several methods made points


def test_null_values_among_numbers_are_read_whole_and_stay_null(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch's values are gathered as doubles until a null comes (then as a list): a
    null after numbers, in a serie of its own or among numbers, is null in Parquet as in
    points, and the answer is still read whole (never split)."""
    nulls = [{"timestamp": "2026-11-28T22:00:01Z", "value": v} for v in (2.5, None, -0.0)]
    series: list[object] = [PLAIN, {**PLAIN, "method": "max", "values": nulls}, PLAIN]
    points = rows_of("points", series)
    never_split(monkeypatch)
    assert rows_of("parquet", series) == points and points[1] == 5
    files = {kind: io.BytesIO() for kind in KINDS["parquet"]}
    run = RunFiles(5, "parquet", "none", None, files)
    run.write(encode("metric", 5, [METRIC]))
    run.write(encode("series", 5, series))
    run.finish()
    values = pq.read_table(io.BytesIO(files["parquet"].getvalue())).column("value").to_pylist()
    assert values == [1.0, 2.5, None, -0.0, 1.0]


def test_a_parquet_run_s_big_writes_are_read_into_one_buffer_each_over_the_last() -> None:
    """The writer process reads a Parquet run's big writes (an answer's lines) into one
    buffer, never shrunk below 5/8 of its largest (a bytearray gives memory back below
    half), and the rest as before; at the pipe's end, what is there."""
    from harvester.writechild import _ReusedBuffer

    big = _ReusedBuffer.SMALLEST
    sizes = [big + 100, big, 100, 2 * big, big, 7]
    pieces = [bytes([n]) * size for n, size in enumerate(sizes)]
    stream = io.BufferedReader(io.BytesIO(b"".join(pieces)))
    reused = _ReusedBuffer()
    read = []
    for size, piece in zip(sizes[:-1], pieces, strict=False):
        read.append(reused.read(stream, size))
        assert read[-1] == piece  # (a reused one is overwritten by the next)
    assert read[0] is read[1] is read[3] and isinstance(read[0], bytearray)
    assert type(read[2]) is bytes  # small: a buffer of its own
    assert type(read[4]) is bytes  # under 5/8 of the largest: a buffer of its own
    assert reused.read(stream, big) == pieces[-1]


def test_the_writer_process_writes_the_same_parquet_from_big_writes(tmp_path: Path) -> None:
    """A Parquet run's answers of several sizes, through the writer process (its reused
    buffer) and through the write stack in this process: the same file, byte for byte."""
    from harvester.writeproc import ChildRunFiles, WriterProcess

    cloud = generate_cloud(runs=1, metrics=160, points=240, seed=4)
    run = next(iter(cloud.runs.values()))
    metrics = run.metrics()
    series = [run.serie(str(m["id"]), None) for m in metrics]
    batches = [encode("metric", 1, metrics)]
    batches += [encode("series", 1, part) for part in (series[:40], series[40:70], series[70:])]
    batches.append(encode("summary", 1, [{"complete": True}]))
    assert sorted(len(b) for b in batches)[-3] > 256 << 10  # three big writes
    here = {kind: io.BytesIO() for kind in KINDS["parquet"]}
    local = RunFiles(1, "parquet", "none", None, here)
    paths = {kind: tmp_path / f"1.{kind}" for kind in KINDS["parquet"]}
    for path in paths.values():
        path.touch()
    child = WriterProcess()
    try:
        remote = ChildRunFiles(child, 1, "parquet", "none", None, paths)
        for data in batches:
            local.write(data)
            remote.write(data)
        local.finish()
        remote.finish()
    finally:
        child.close()
    for kind, path in paths.items():
        assert path.read_bytes() == here[kind].getvalue() != b""
    assert pq.read_metadata(paths["parquet"]).num_rows == 160 * 240
