"""A refused or malformed series answer is blamed on what caused it (issue 14.2): the
method, the run, a glitch, or one metric id; never N error records in a "complete" run."""

from __future__ import annotations

from pathlib import Path

import pytest

from harvester.errors import ConfigError, MethodRefused
from harvester.job import harvest_job
from harvester.methods import check_method
from harvester.scheduler import RunTarget
from harvester.simulator.faults import FaultPlan
from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator
from tests.harvest_helpers import assert_exact, read_dir, settings_for, targets
from tests.process_helpers import run_cli


@pytest.mark.parametrize(
    "method", ["default", "mean", "avg", "max", "stdev", "rps", "p95", "p99.9", "0.95", "0.5"]
)
def test_known_method_spellings_pass(method: str) -> None:
    check_method(method)


@pytest.mark.parametrize("method", ["bogus", "P95", "p(95)", "0", "1.0", "0.0", "p101", ""])
def test_other_method_spellings_are_refused_naming_what_works(method: str) -> None:
    with pytest.raises(ConfigError, match=r"--method .* a percentile \(p95, p99.9\)"):
        check_method(method)


async def test_method_bogus_is_one_line_and_exit_2_before_any_request(
    simulator: Simulator, tmp_path: Path
) -> None:
    done = await run_cli(simulator, "harvest", "--run", "100001", "--method", "bogus",
                         "--out", str(tmp_path))  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "--method 'bogus'" in lines[0]
    assert not simulator.log and not list(tmp_path.iterdir())


async def test_a_method_the_api_refuses_ends_the_job_naming_it_without_bisecting(
    tmp_path: Path,
) -> None:
    cloud = generate_cloud(runs=3, metrics=30, points=3)
    async with Simulator(cloud, faults=FaultPlan(refuse_methods=frozenset({"max"}))) as sim:
        done = await run_cli(sim, "harvest", "--run", "100001", "--run", "100002", "--run",
                             "100003", "--method", "max", "--out", str(tmp_path))  # fmt: skip
        refused = [r for r in sim.requests_for("series") if r.status == 400]
        # Each run in flight: its one batch, then both halves refused alike; not 2N-1.
        assert 0 < len(refused) <= 3 * 3
    assert done.returncode == 2
    stderr = done.stderr.decode()
    assert "Traceback" not in stderr
    (line,) = [x for x in stderr.splitlines() if "--method max" in x]
    assert "Unknown aggregation method: max" in line
    assert not list(tmp_path.glob("*.ndjson"))


async def test_a_refused_method_is_a_job_fault_in_the_library_too(tmp_path: Path) -> None:
    cloud = generate_cloud(runs=2, metrics=10, points=3)
    async with Simulator(cloud, faults=FaultPlan(refuse_methods=frozenset({"p95"}))) as sim:
        settings = settings_for(sim, tmp_path, methods=["default", "p95"])
        with pytest.raises(MethodRefused, match="--method p95"):
            await harvest_job(settings, targets(cloud))


async def test_a_run_whose_series_requests_are_refused_fails_alone_and_keeps_its_good_file(
    simulator: Simulator, tmp_path: Path
) -> None:
    cloud = simulator.cloud
    await harvest_job(settings_for(simulator, tmp_path), targets(cloud))
    good = (tmp_path / "100002.ndjson").read_bytes()
    simulator.log.clear()
    simulator.faults = FaultPlan(refuse_runs=frozenset({100002}))
    result = await harvest_job(settings_for(simulator, tmp_path, force=True), targets(cloud))
    (failed,) = result.report.failed
    assert failed.run_id == 100002
    assert "the request is at fault, not a metric id" in (failed.reason or "")
    assert "Series are not available for this test run" in (failed.reason or "")
    series = [r for r in simulator.requests_for("series") if r.run_id == 100002]
    assert len(series) == 3  # the batch and its two halves
    assert (tmp_path / "100002.ndjson").read_bytes() == good
    assert sorted(o.run_id for o in result.report.succeeded) == [100001, 100003]


async def test_a_200_without_its_serie_list_is_asked_again_not_blamed_on_ids(
    tmp_path: Path,
) -> None:
    cloud = generate_cloud(runs=3, metrics=40, points=3)
    plan = FaultPlan(seed=4, p_unlisted=0.4, fault_endpoints=frozenset({"series", "thresholds"}))
    async with Simulator(cloud, faults=plan) as sim:
        settings = settings_for(sim, tmp_path, max_url_length=600, max_attempts=12)
        result = await harvest_job(settings, targets(cloud))
        assert sim.fault_counts["unlisted"] >= 5
    assert not result.report.failed
    assert_exact(cloud, tmp_path)  # no error record, nothing missing


async def test_only_malformed_answers_fail_the_run_loudly_and_publish_nothing(
    simulator: Simulator, tmp_path: Path
) -> None:
    run_id = 100001
    await harvest_job(settings_for(simulator, tmp_path), [RunTarget(run_id)])
    good = (tmp_path / f"{run_id}.ndjson").read_bytes()
    simulator.log.clear()
    simulator.faults = FaultPlan(p_unlisted=1.0, fault_endpoints=frozenset({"series"}))
    settings = settings_for(simulator, tmp_path, force=True, max_attempts=3)
    result = await harvest_job(settings, [RunTarget(run_id)])
    (failed,) = result.report.failed
    assert "without its 'k6-serie' list" in (failed.reason or "")
    assert len(simulator.requests_for("series")) == 3  # one batch, three tries, no halves
    assert (tmp_path / f"{run_id}.ndjson").read_bytes() == good


async def test_a_run_whose_every_series_id_is_refused_is_not_complete(tmp_path: Path) -> None:
    cloud = generate_cloud(runs=1, metrics=4, points=3)
    run_id = min(cloud.runs)
    ids = frozenset(m["id"] for m in cloud.runs[run_id].metrics())
    async with Simulator(cloud) as sim:
        await harvest_job(settings_for(sim, tmp_path), [RunTarget(run_id)])
        good = (tmp_path / f"{run_id}.ndjson").read_bytes()
        # Each id's own refusal (the message names it): bisected down to every id.
        sim.faults = FaultPlan(fail_metric_ids=ids)
        result = await harvest_job(settings_for(sim, tmp_path, force=True), [RunTarget(run_id)])
    (failed,) = result.report.failed
    assert "every series id was refused (4 ids" in (failed.reason or "")
    assert (tmp_path / f"{run_id}.ndjson").read_bytes() == good
    assert read_dir(tmp_path)[run_id][-1]["data"]["complete"] is True  # the old, good one
