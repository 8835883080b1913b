"""SIGHUP (a closed terminal or ssh session) stops a job as SIGTERM does: finished runs
kept, runs in flight given their grace or recorded cut short, exit 129. It killed the job
outright, leaving its runs `running`. Under nohup it stays ignored. (A second SIGHUP
cutting the runs in flight: test_cut_short.py; the worker: test_worker.py.)"""

from __future__ import annotations

import signal
from pathlib import Path

import anyio
import pytest

from harvester.simulator.faults import FaultPlan
from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator
from harvester.state import STATE_FILE_NAME, HarvestState
from tests.process_helpers import (
    ROOT,
    cli_command,
    cli_env,
    recorded_running,
    stderr_until,
    wait_for,
)
from tests.test_cut_short import state_rows

SLOW = FaultPlan(p_delay=1.0, delay_seconds=0.2, fault_endpoints=frozenset({"overview"}))
#: The overviews never come: every run started is in flight when the signals arrive.
HANG = FaultPlan(p_delay=1.0, delay_seconds=60.0, fault_endpoints=frozenset({"overview"}))


async def test_sighup_stops_cleanly_keeping_finished_runs_with_129(tmp_path: Path) -> None:
    cloud = generate_cloud(runs=10, metrics=20, points=5)
    runs = [arg for run_id in sorted(cloud.runs) for arg in ("--run", str(run_id))]
    async with Simulator(cloud, faults=SLOW) as sim:
        args = ["--out", str(tmp_path), "--runs-in-flight", "2", *runs]
        command = cli_command(sim, "harvest", *args)
        async with await anyio.open_process(command, env=cli_env(sim), cwd=ROOT) as process:
            await wait_for(lambda: len(list(tmp_path.glob("*.ndjson"))) >= 2, within=20)
            process.send_signal(signal.SIGHUP)
            with anyio.fail_after(20):
                assert await process.wait() == 129
            assert process.stderr is not None
            err = b"".join([chunk async for chunk in process.stderr]).decode()
    assert "stopping (SIGHUP): " in err and "stopped by SIGHUP" in err and "Traceback" not in err
    done = {int(p.stem) for p in tmp_path.glob("*.ndjson")}
    assert 2 <= len(done) < len(cloud.runs) and not list(tmp_path.glob(".*.partial"))
    with HarvestState.open(tmp_path / STATE_FILE_NAME) as state:
        assert state.done_runs(cloud.runs) == done
    rows = state_rows(tmp_path / STATE_FILE_NAME)
    assert all(status != "running" for status, _ in rows.values()), rows


async def test_under_nohup_sighup_stays_ignored(tmp_path: Path) -> None:
    """`nohup harvester ...` asks to outlive the session: a SIGHUP does not stop it (the
    SIGTERMs sent after it do, and it is they the job names)."""
    cloud = generate_cloud(runs=2, metrics=5, points=3)
    runs = [arg for run_id in sorted(cloud.runs) for arg in ("--run", str(run_id))]
    async with Simulator(cloud, faults=HANG) as sim:
        command = ["nohup", *cli_command(sim, "harvest", "--out", str(tmp_path), *runs)]
        async with await anyio.open_process(command, env=cli_env(sim), cwd=ROOT) as process:
            await wait_for(lambda: sim.fault_counts["delay"] == len(cloud.runs), within=20)
            state = tmp_path / STATE_FILE_NAME  # and both recorded (a race else)
            await wait_for(lambda: recorded_running(state) == set(cloud.runs), within=20)
            process.send_signal(signal.SIGHUP)
            process.send_signal(signal.SIGTERM)
            # The second once the first is seen: two at once merge into one, and the job
            # then waited out its grace period (~10 s) instead of stopping now.
            said = await stderr_until(process, b"stopping")
            process.send_signal(signal.SIGTERM)
            with anyio.fail_after(20):
                assert await process.wait() == 143
            err = (said + await stderr_until(process, b"")).decode()
    # Watched, it would be named, first ("stopping (SIGHUP)") or second ("SIGHUP again").
    assert "SIGHUP" not in err and "stopped by SIGTERM" in err
    rows = state_rows(tmp_path / STATE_FILE_NAME)
    assert rows == dict.fromkeys(cloud.runs, ("failed", "cut short: stopped by SIGTERM"))


#: v6's `GET /cloud/v6/auth` (the stack id for --stack-url) never answers: the job is
#: stuck after discovery, preparing the harvest (`harvest_job`, before any run starts).
AUTH_HANGS = FaultPlan(p_delay=1.0, delay_seconds=60.0, fault_endpoints=frozenset({"v6_auth"}))


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
async def test_a_signal_between_discovery_and_the_harvest_stops_the_job_cleanly(
    tmp_path: Path, sig: signal.Signals, status: int
) -> None:
    """Discovery and the harvest each watched the signals with a receiver of their own,
    and asyncio puts SIG_DFL back when one closes: between them (the state, the sink, the
    transport and the backend made ready) SIGTERM or SIGHUP killed the job outright."""
    cloud = generate_cloud(runs=2, metrics=5, points=3)
    runs = [arg for run_id in sorted(cloud.runs) for arg in ("--run", str(run_id))]
    async with Simulator(cloud, faults=AUTH_HANGS) as sim:
        stack = ["--api", "v6", "--stack-url", sim.state.v6.stack_url]
        command = cli_command(sim, "harvest", *stack, "--out", str(tmp_path), *runs)
        async with await anyio.open_process(command, env=cli_env(sim), cwd=ROOT) as process:
            await wait_for(lambda: sim.fault_counts["delay"] == 1, within=20)
            process.send_signal(sig)
            with anyio.fail_after(20):
                assert await process.wait() == status
            assert process.stderr is not None
            err = b"".join([chunk async for chunk in process.stderr]).decode()
    assert f"stopping ({sig.name}): nothing in flight" in err, err
    assert f"stopped by {sig.name}" in err and "Traceback" not in err
    assert not list(tmp_path.glob("*.ndjson")) and not list(tmp_path.glob(".*.partial"))
    assert state_rows(tmp_path / STATE_FILE_NAME) == {}  # no run was started
