"""A crash between a run's data files (`--format points` and `parquet` publish the points
first, the `meta.ndjson` that says the run is archived last): the next job's files are
the run's, whole and described by its manifest, with nothing left of the crashed job's."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from harvester import manifest
from harvester.compression import open_data
from harvester.errors import OutputError
from harvester.job import harvest_job
from harvester.scheduler import RunTarget
from harvester.simulator.cloud import SimCloud
from harvester.simulator.server import Simulator
from harvester.verify import intact, verify
from tests.harvest_helpers import parse_lines, settings_for, targets


async def crash_after_the_points(
    sim: Simulator, out: Path, run_ids: list[int], output_format: str
) -> None:
    """What a crash leaves between publishing the points and the `meta.ndjson`: the points
    file under its final name, nothing else of the run (its temporary files are gone with
    the crashed job, or removed by the next one)."""
    settings = settings_for(sim, out, format=output_format)
    result = await harvest_job(settings, [RunTarget(r) for r in run_ids])
    assert not result.report.failed
    for run_id in run_ids:
        (out / f"{run_id}.meta.ndjson").unlink()
        (out / f"{run_id}.manifest.json").unlink()


@pytest.mark.parametrize("output_format", ["points", "parquet"])
async def test_a_rerun_with_another_method_replaces_the_crashed_jobs_points(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path, output_format: str
) -> None:
    run_ids = sorted(cloud.runs)[:1]
    await crash_after_the_points(simulator, tmp_path, run_ids, output_format)
    settings = settings_for(simulator, tmp_path, format=output_format, methods=["p95"])
    result = await harvest_job(settings, [RunTarget(r) for r in run_ids])
    assert not result.report.failed and len(result.report.succeeded) == 1
    # The points file kept was the crashed job's (the default method's), with a manifest
    # giving the new file's size and sha256: verify called it corrupt.
    rows = list(verify(tmp_path))
    assert intact(rows), [r for r in rows if r["status"] != "ok"]
    if output_format == "points":
        with open_data(tmp_path / f"{run_ids[0]}.points.ndjson") as lines:
            points = parse_lines(b"".join(lines))
        assert points and {p["method"] for p in points} == {"p95"}


@pytest.mark.parametrize("output_format", ["points", "parquet"])
async def test_a_rerun_with_another_compression_leaves_no_second_copy_of_the_points(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path, output_format: str
) -> None:
    run_ids = sorted(cloud.runs)
    await crash_after_the_points(simulator, tmp_path, run_ids, output_format)
    settings = settings_for(simulator, tmp_path, format="points", compress="zstd")
    result = await harvest_job(settings, [RunTarget(r) for r in run_ids])
    assert len(result.report.succeeded) == len(run_ids)
    # The crashed job's `<id>.points.ndjson` (or `.parquet`) stayed beside the new
    # `.points.ndjson.zst`: every point archived twice, an orphan to verify.
    left = sorted(p.name for p in tmp_path.iterdir() if ".points." in p.name or "parquet" in p.name)
    assert left == [f"{r}.points.ndjson.zst" for r in run_ids]
    rows = list(verify(tmp_path))
    assert intact(rows), [r for r in rows if r["status"] != "ok"]


async def test_a_force_harvest_cut_before_its_manifest_leaves_no_manifest_of_the_old_files(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--force replaces a run's files, then its manifest: cut between the two (a crash, a
    full disk), the old manifest described the new files, so verify said corrupt, and no
    later job mended it (a manifest was there)."""
    await harvest_job(settings_for(simulator, tmp_path), targets(cloud))

    def no_room(*args: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patched:
        patched.setattr(manifest, "write", no_room)
        again = settings_for(simulator, tmp_path, force=True, methods=["max"])
        with pytest.raises(OutputError, match="No space left on device"):
            await harvest_job(again, targets(cloud))
    result = await harvest_job(settings_for(simulator, tmp_path), targets(cloud))
    assert sorted(result.skipped) == sorted(cloud.runs)
    rows = list(verify(tmp_path))
    assert intact(rows), [r for r in rows if r["status"] != "ok"]
    assert {r["test_run_id"] for r in rows} == set(cloud.runs)
