"""The harvest pipeline end to end against the simulator on loopback (issue 2)."""

from __future__ import annotations

import io
import math
import os
import stat
from pathlib import Path

import anyio
import pytest

from harvester.api import V2
from harvester.batching import POINTS_PER_REQUEST, PROBE_IDS, SeriesBatcher, series_query
from harvester.config import load_settings
from harvester.errors import ConfigError, OutputError
from harvester.job import harvest_job
from harvester.scheduler import RunTarget
from harvester.simulator.cloud import SimCloud
from harvester.simulator.faults import FaultPlan
from harvester.simulator.generated import GeneratedRun, generate_cloud
from harvester.simulator.server import Simulator
from tests.harvest_helpers import (
    canonical,
    expected_records,
    parse_lines,
    read_dir,
    settings_for,
    targets,
)
from tests.test_reliability import LOOP_JITTER


async def test_every_record_lands_exactly_once_and_equals_what_was_served(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    result = await harvest_job(settings_for(simulator, tmp_path), targets(cloud))
    assert not result.report.failed
    files = read_dir(tmp_path)
    assert sorted(files) == sorted(cloud.runs)
    for run_id, records in files.items():
        assert canonical(records) == canonical(expected_records(cloud, run_id))
        assert records[-1]["type"] == "summary"
        assert records[-1]["data"]["complete"] is True
        assert records[-1]["data"]["missing_series"] == []


async def test_extra_methods_and_details_add_their_records(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    settings = settings_for(simulator, tmp_path, methods=["max", "p95"], details=True)
    run_id = min(cloud.runs)
    await harvest_job(settings, [RunTarget(run_id)])
    records = read_dir(tmp_path)[run_id]
    methods: tuple[str | None, ...] = ("max", "p95")
    expected = expected_records(cloud, run_id, methods)
    details = [
        {
            "type": "metric_detail",
            "test_run_id": run_id,
            "data": cloud.runs[run_id].metric_detail(m["id"]),
        }
        for m in cloud.runs[run_id].metrics()
    ]
    assert canonical(records) == canonical(expected + details)
    assert {r["data"]["method"] for r in records if r["type"] == "series"} == {"max", "p95"}
    detail_requests = simulator.requests_for("metric_detail")
    assert len(detail_requests) == len(cloud.runs[run_id].metrics())


async def test_series_come_in_the_fewest_batches_that_fit_the_url_cap(tmp_path: Path) -> None:
    cloud = generate_cloud(runs=2, metrics=200, points=5)
    async with Simulator(cloud) as sim:
        await harvest_job(settings_for(sim, tmp_path, max_url_length=2000), targets(cloud))
        # The job's first series request holds PROBE_IDS ids at most (nothing says yet how
        # long series are); here that costs its run one request more than the plan.
        first = sim.requests_for("series")[0]
        assert len(first.ids) <= PROBE_IDS
        for run_id in cloud.runs:
            ids = [m["id"] for m in cloud.runs[run_id].metrics()]
            fixed = len(f"{V2}/series?" + series_query(run_id, [], None))
            per_request = (2000 - fixed) // SeriesBatcher.id_cost(ids[0])
            series = [r for r in sim.requests_for("series") if r.run_id == run_id]
            fewest = math.ceil(len(ids) / per_request)
            assert len(series) == fewest + (run_id == first.run_id)
            assert max(r.url_length for r in series) <= 2000
            assert sum(len(r.ids) for r in series) == len(ids)
            others = [r.endpoint for r in sim.log if r.run_id == run_id and r.endpoint != "series"]
            assert sorted(others) == ["metrics", "overview", "thresholds"]


async def test_rate_limit_holds_in_every_one_second_window_on_the_server(tmp_path: Path) -> None:
    cloud = generate_cloud(runs=4, metrics=40, points=3)
    async with Simulator(cloud) as sim:
        settings = settings_for(sim, tmp_path, rate=20, max_url_length=400, concurrency=8)
        await harvest_job(settings, targets(cloud))
        assert len(sim.log) > 30  # enough requests to span more than one window
        # Server-side stamps jitter on a busy machine: windows a little under a second,
        # as in test_reliability (LOOP_JITTER); 21 requests from the gate span >= 1.01 s.
        assert sim.log.max_in_window(1.0 - LOOP_JITTER) <= 20


async def test_stdout_and_directory_give_the_same_records(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    await harvest_job(settings_for(simulator, tmp_path / "dir"), targets(cloud))
    stream = io.BytesIO()
    result = await harvest_job(settings_for(simulator, "-"), targets(cloud), stdout=stream)
    assert not result.report.failed
    from_stdout = parse_lines(stream.getvalue())
    from_files = [r for records in read_dir(tmp_path / "dir").values() for r in records]
    assert canonical(from_stdout) == canonical(from_files)
    assert sum(r["type"] == "summary" for r in from_stdout) == len(cloud.runs)


async def test_a_run_file_appears_only_when_whole(simulator: Simulator, tmp_path: Path) -> None:
    run_id = 100001
    simulator.faults = FaultPlan(
        p_delay=1.0, delay_seconds=1.0, fault_endpoints=frozenset({"overview"})
    )
    final = tmp_path / f"{run_id}.ndjson"

    def partials() -> list[Path]:
        return list(tmp_path.glob(f".{run_id}.*.ndjson.partial"))

    seen_partial = anyio.Event()

    async def watch() -> None:
        while not simulator.requests_for("series"):
            await anyio.sleep(0.01)
        # The series are asked for but the overview answer is held back: the run is
        # mid-way. Its file is made by the writer task (a thread), which the fetcher does
        # not wait for: under load it may come a moment after the series request.
        with anyio.fail_after(0.9):
            while not partials():
                await anyio.sleep(0.01)
        assert len(partials()) == 1 and not final.exists()
        seen_partial.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        await harvest_job(settings_for(simulator, tmp_path), [RunTarget(run_id)])
    assert seen_partial.is_set()
    assert final.exists() and not partials()
    assert parse_lines(final.read_bytes())[-1]["type"] == "summary"
    assert oct(final.stat().st_mode & 0o777) == "0o600"


async def test_a_failed_run_leaves_no_file_and_the_others_complete(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    result = await harvest_job(settings_for(simulator, tmp_path), [RunTarget(999), *targets(cloud)])
    assert [o.run_id for o in result.report.failed] == [999]
    assert "not found" in (result.report.failed[0].reason or "")
    assert sorted(read_dir(tmp_path)) == sorted(cloud.runs)
    assert not list(tmp_path.glob(".*.partial"))
    # 404 is final: asked once, never retried.
    assert len([r for r in simulator.log if r.run_id == 999]) == 1


async def test_missing_series_are_asked_again_together_then_named_in_the_summary(
    tmp_path: Path,
) -> None:
    cloud = generate_cloud(runs=2, metrics=200, points=3, missing_series=12)
    async with Simulator(cloud) as sim:
        settings = settings_for(sim, tmp_path, max_url_length=2000, methods=["default", "max"])
        await harvest_job(settings, targets(cloud))
        for run_id, records in read_dir(tmp_path).items():
            run = cloud.runs[run_id]
            assert isinstance(run, GeneratedRun)
            gaps = run.missing
            summary = records[-1]["data"]
            named = [(m["metric_id"], m["method"]) for m in summary["missing_series"]]
            assert sorted(named, key=str) == sorted(
                [(i, m) for i in gaps for m in (None, "max")], key=str
            )
            ids = [m["id"] for m in cloud.runs[run_id].metrics()]
            fixed = len(f"{V2}/series?" + series_query(run_id, [], "max"))
            planned = math.ceil(len(ids) / ((2000 - fixed) // SeriesBatcher.id_cost(ids[0])))
            first = sim.requests_for("series")[0]  # the job's first: at most PROBE_IDS ids
            for method in (None, "max"):
                asked = [r for r in sim.requests_for("series") if (r.run_id, r.method) == (
                    run_id, method)]  # fmt: skip
                # Every planned batch, then one more holding every gap: 12 ids fit in one.
                probe = (run_id, method) == (first.run_id, first.method)
                assert len(asked) == planned + 1 + probe
                assert set(asked[-1].ids) == gaps


async def test_a_serie_missing_from_one_answer_comes_back_in_the_re_ask_and_is_kept(
    tmp_path: Path,
) -> None:
    cloud = generate_cloud(runs=1, metrics=30, points=3)
    run_id = min(cloud.runs)
    glitches = frozenset(m["id"] for m in cloud.runs[run_id].metrics()[3:6])
    async with Simulator(cloud, faults=FaultPlan(omit_once=glitches)) as sim:
        await harvest_job(settings_for(sim, tmp_path), [RunTarget(run_id)])
        *planned, again = sim.requests_for("series")  # the planned, then the three together
    assert set(again.ids) == glitches
    assert glitches <= {i for r in planned for i in r.ids}
    records = read_dir(tmp_path)[run_id]
    assert canonical(records) == canonical(expected_records(cloud, run_id))
    assert records[-1]["data"]["missing_series"] == []


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
async def test_a_full_disk_ends_the_job_with_one_clear_error(simulator: Simulator) -> None:
    with open("/dev/full", "wb") as full:
        with pytest.raises(OutputError, match="cannot write to stdout: No space left on device"):
            await harvest_job(settings_for(simulator, "-"), [RunTarget(100001)], stdout=full)


async def test_run_record_fetches_the_run_object_for_runs_given_by_id(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    run_id = min(cloud.runs)
    await harvest_job(settings_for(simulator, tmp_path, run_record=True), [RunTarget(run_id)])
    records = read_dir(tmp_path)[run_id]
    assert records[0] == {"type": "run", "test_run_id": run_id, "data": cloud.runs[run_id].run}
    assert len(simulator.requests_for("run")) == 1


async def test_method_default_asks_for_the_apis_own_aggregation_beside_others(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    run_id = min(cloud.runs)
    settings = settings_for(simulator, tmp_path, methods=["default", "max"])
    await harvest_job(settings, [RunTarget(run_id)])
    asked = {r.method for r in simulator.requests_for("series")}
    assert asked == {None, "max"}
    expected = expected_records(cloud, run_id, (None, "max"))
    assert canonical(read_dir(tmp_path)[run_id]) == canonical(expected)


async def test_a_run_named_twice_is_harvested_once(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    run_id = min(cloud.runs)
    await harvest_job(settings_for(simulator, tmp_path), [RunTarget(run_id), RunTarget(run_id)])
    assert len(simulator.requests_for("metrics")) == 1
    assert canonical(read_dir(tmp_path)[run_id]) == canonical(expected_records(cloud, run_id))


async def test_a_reader_that_goes_away_ends_the_job_with_one_clear_error(
    simulator: Simulator,
) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `harvester ... --out - | head -1` once head has its line
    with open(write_end, "wb") as closed_pipe:
        with pytest.raises(OutputError, match="cannot write to stdout: Broken pipe"):
            await harvest_job(settings_for(simulator, "-"), [RunTarget(100001)], stdout=closed_pipe)


async def test_every_thresholds_metric_id_resolves_to_a_threshold_metric_record(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    await harvest_job(settings_for(simulator, tmp_path), targets(cloud))
    for run_id, records in read_dir(tmp_path).items():
        served_metrics, served_thresholds = cloud.runs[run_id].thresholds()
        metrics = [r["data"] for r in records if r["type"] == "threshold_metric"]
        thresholds = [r["data"] for r in records if r["type"] == "threshold"]
        assert metrics == served_metrics and thresholds == served_thresholds  # unchanged
        assert thresholds, run_id
        by_id = {m["id"]: m for m in metrics}
        for threshold in thresholds:
            assert by_id[threshold["metric_id"]]["name"], threshold
        assert records[-1]["data"]["counts"]["threshold_metric"] == len(metrics)


@pytest.mark.parametrize(
    ("file_mode", "umask", "expected"),
    [("0600", 0o022, 0o600), ("0640", 0o077, 0o640), ("umask", 0o027, 0o640)],
)
async def test_file_mode_sets_the_archive_files_mode_or_leaves_it_to_the_umask(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path, file_mode: str, umask: int, expected: int
) -> None:
    settings = settings_for(simulator, tmp_path, file_mode=file_mode, export_csv=True)
    before = os.umask(umask)
    try:
        await harvest_job(settings, [RunTarget(min(cloud.runs))])
    finally:
        os.umask(before)
    for name in (f"{min(cloud.runs)}.ndjson", f"{min(cloud.runs)}.csv"):  # with its export
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected


@pytest.mark.parametrize("bad", ["640x", "0800", "rw-r-----", "06400"])
def test_a_file_mode_that_is_not_octal_or_umask_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="--file-mode .* must be an octal mode such as 0600"):
        load_settings({"file_mode": bad}, environ={})


async def test_long_series_come_in_batches_sized_by_their_points(tmp_path: Path) -> None:
    cloud = generate_cloud(runs=2, metrics=120, points=2000)
    async with Simulator(cloud) as sim:
        result = await harvest_job(settings_for(sim, tmp_path), targets(cloud))
        series = sim.requests_for("series")
    assert not result.report.failed
    per_request = POINTS_PER_REQUEST // 2000  # 50 series of 2,000 points an answer
    assert len(series[0].ids) <= PROBE_IDS  # asked before anything said how long they are
    assert max(len(r.ids) for r in series[1:]) == per_request
    # The first run: the probe, then 104 ids in 3; the second plans by the first's answer.
    assert len(series) == (1 + 3) + 3
    for run_id, records in read_dir(tmp_path).items():
        assert canonical(records) == canonical(expected_records(cloud, run_id))
