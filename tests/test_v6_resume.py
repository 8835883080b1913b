"""A `--api v6` nightly harvest stopped mid-job (SIGKILL, SIGTERM) and run again: every
record exactly once, no run's data asked twice, and the next night lists only."""

from __future__ import annotations

import signal
import sys
from collections import Counter
from pathlib import Path

import anyio
import pytest

from harvester.job import harvest_job
from harvester.scheduler import RunTarget
from harvester.simulator.faults import FaultPlan
from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator
from harvester.state import STATE_FILE_NAME, HarvestState
from tests.harvest_helpers import canonical, read_dir, settings_for
from tests.process_helpers import cli_env
from tests.test_resume import wait_for_files

#: The labels request of each run answers late: runs end one by one, slowly enough to stop.
SLOW = FaultPlan(p_delay=1.0, delay_seconds=0.2, fault_endpoints=frozenset({"v5_labels"}))
LISTINGS = {"v6_projects", "v6_tests", "v6_runs"}


def nightly(sim: Simulator, out: Path) -> list[str]:
    """The nightly job: every final run of the stack, two at a time."""
    return [sys.executable, "-m", "harvester", "harvest", "--api", "v6",
            "--stack-id", str(sim.stack_id), "--all-projects", "--step", "3",
            "--base-url", sim.base_url, "--out", str(out), "--rate", "1000",
            "--runs-in-flight", "2"]  # fmt: skip


def data_requests(sim: Simulator) -> Counter[int | None]:
    """Runs whose v5 data was asked for (one metrics request per run harvested)."""
    return Counter(r.run_id for r in sim.requests_for("v5_metrics"))


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
async def test_a_v6_nightly_stopped_mid_job_resumes_exactly(
    tmp_path: Path, signum: signal.Signals
) -> None:
    cloud = generate_cloud(runs=8, metrics=6, points=4)
    out, reference = tmp_path / "out", tmp_path / "reference"
    async with Simulator(cloud, faults=SLOW) as sim:
        env = cli_env(sim)
        async with await anyio.open_process(nightly(sim, out), env=env) as process:
            await wait_for_files(out, 2, process)
            process.send_signal(signum)
            code = await process.wait()
        assert code == (143 if signum == signal.SIGTERM else -signal.SIGKILL)
        done_before = {int(p.stem) for p in out.glob("*.ndjson")}
        assert 2 <= len(done_before) < len(cloud.runs)
        if signum == signal.SIGTERM:  # the state agrees with the files
            with HarvestState.open(out / STATE_FILE_NAME) as state:
                assert state.done_runs(cloud.runs) == done_before
        sim.log.clear()
        rerun = await anyio.run_process(nightly(sim, out), env=env, check=False)
        assert rerun.returncode == 0, rerun.stderr.decode()
        fetched_again = data_requests(sim)
        assert set(fetched_again).isdisjoint(done_before)
        assert set(fetched_again) == set(cloud.runs) - done_before
        assert set(fetched_again.values()) == {1}
        assert sim.requests_for("v6_run") == []  # discovery brought every run object
        # The next night: listings only, no v5 request, no per-run GET.
        sim.log.clear()
        again = await anyio.run_process(nightly(sim, out), env=env, check=False)
        assert again.returncode == 0, again.stderr.decode()
        assert {r.endpoint for r in sim.log} == LISTINGS
        # Every record exactly once: the files equal those of one uninterrupted harvest.
        sim.faults = FaultPlan()
        settings = settings_for(sim, reference, api="v6", stack_id=sim.stack_id, step=3)
        await harvest_job(settings, [RunTarget(run_id) for run_id in sorted(cloud.runs)])
    files, whole = read_dir(out), read_dir(reference)
    assert sorted(files) == sorted(whole) == sorted(cloud.runs)
    for run_id, records in files.items():
        assert canonical(records) == canonical(whole[run_id]), run_id
        assert records[-1]["type"] == "summary"
    assert not list(out.glob(".*.partial"))
