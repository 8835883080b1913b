"""Runs a job starts and cannot finish (stdout closed under it, a signal) are recorded as
failed with why, never left `running` in the state file, and the next job takes them. A
reader of stderr going away costs only the messages."""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process

from harvester.simulator.faults import FaultPlan
from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator
from tests.process_helpers import (
    ROOT,
    cli_command,
    cli_env,
    recorded_running,
    run_cli,
    stderr_until,
    wait_for,
)


def state_rows(path: Path) -> dict[int, tuple[str, str | None]]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT run_id, status, reason FROM runs").fetchall()
    return {run_id: (status, reason) for run_id, status, reason in rows}


async def start_piped(
    command: list[str], env: dict[str, str], stderr: bool = False
) -> tuple[Process, int]:
    """The process, its stdout (or `stderr`) a pipe of ours: (process, its read end)."""
    read_end, write_end = os.pipe()
    try:
        if stderr:
            process = await anyio.open_process(command, env=env, cwd=ROOT, stderr=write_end)
        else:
            process = await anyio.open_process(command, env=env, cwd=ROOT, stdout=write_end)
    finally:
        os.close(write_end)  # the child's now
    return process, read_end


async def read_one_chunk_and_leave(read_end: int) -> None:
    """What `| head -1` does: read a line or so, then close the pipe."""
    first = await anyio.to_thread.run_sync(os.read, read_end, 1 << 16)
    assert b"\n" in first
    os.close(read_end)


async def test_a_reader_gone_after_one_line_leaves_no_run_running_and_the_next_job_takes_them(
    tmp_path: Path,
) -> None:
    # Each run's lines are more than a pipe holds (64 KiB): the first write blocks on the
    # reader, who takes one chunk and leaves, like `harvester harvest ... | head -1`.
    cloud = generate_cloud(runs=4, metrics=40, points=600)
    state = tmp_path / "state.sqlite"
    runs = [arg for run_id in sorted(cloud.runs) for arg in ("--run", str(run_id))]
    args = ["--out", "-", "--state", str(state), *runs]
    async with Simulator(cloud) as sim:
        command = cli_command(sim, "harvest", *args)
        process, read_end = await start_piped(command, cli_env(sim))
        async with process:
            assert process.stderr is not None
            with anyio.fail_after(20):
                await read_one_chunk_and_leave(read_end)
                assert await process.wait() == 1
            err = b"".join([chunk async for chunk in process.stderr]).decode()
        assert "cannot write to stdout: Broken pipe" in err and "Traceback" not in err
        rows = state_rows(state)
        assert rows, "the runs started were recorded"
        assert all(status != "running" for status, _ in rows.values()), rows
        for status, reason in rows.values():
            assert status == "failed" and reason is not None
            assert reason == "cut short: cannot write to stdout: Broken pipe"
        again = await run_cli(sim, "harvest", *args)
        assert again.returncode == 0, again.stderr.decode()
    assert {status for status, _ in state_rows(state).values()} == {"done"}
    assert len(state_rows(state)) == len(cloud.runs)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
async def test_runs_a_second_signal_cuts_are_failed_with_the_signal_not_running(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """SIGHUP (a closed terminal) as SIGTERM: it used to kill the job, runs left running."""
    cloud = generate_cloud(runs=2, metrics=5, points=3)
    # The overviews never come: both runs are in flight when the signals arrive.
    hang = FaultPlan(p_delay=1.0, delay_seconds=60.0, fault_endpoints=frozenset({"overview"}))
    runs = [arg for run_id in sorted(cloud.runs) for arg in ("--run", str(run_id))]
    async with Simulator(cloud, faults=hang) as sim:
        command = cli_command(sim, "harvest", "--out", str(tmp_path), *runs)
        async with await anyio.open_process(command, env=cli_env(sim), cwd=ROOT) as process:
            await wait_for(lambda: sim.fault_counts["delay"] == len(cloud.runs), within=20)
            state = tmp_path / ".harvester-state.sqlite"  # and both recorded (a race else)
            await wait_for(lambda: recorded_running(state) == set(cloud.runs), within=20)
            process.send_signal(signum)
            await stderr_until(process, b"stopping")  # (two at once would merge into one)
            process.send_signal(signum)
            with anyio.fail_after(20):
                assert await process.wait() == 128 + signum  # 143, 129
    rows = state_rows(tmp_path / ".harvester-state.sqlite")
    assert rows == dict.fromkeys(cloud.runs, ("failed", f"cut short: stopped by {signum.name}"))


async def test_a_reader_of_stderr_gone_costs_the_messages_not_the_harvest(tmp_path: Path) -> None:
    cloud = generate_cloud(runs=3, metrics=5, points=3)
    # One run at a time, each a while: the later runs' lines come after the reader left.
    slow = FaultPlan(p_delay=1.0, delay_seconds=0.3, fault_endpoints=frozenset({"overview"}))
    runs = [arg for run_id in sorted(cloud.runs) for arg in ("--run", str(run_id))]
    async with Simulator(cloud, faults=slow) as sim:
        args = ["--out", str(tmp_path), "--runs-in-flight", "1", *runs]
        command = cli_command(sim, "harvest", *args)
        process, read_end = await start_piped(command, cli_env(sim), stderr=True)
        async with process:
            with anyio.fail_after(20):
                await read_one_chunk_and_leave(read_end)  # like `2>&1 | head -1`
                assert await process.wait() == 0
    assert sorted(int(p.name.split(".")[0]) for p in tmp_path.glob("*.ndjson")) == sorted(
        cloud.runs
    )
    rows = state_rows(tmp_path / ".harvester-state.sqlite")
    assert rows == dict.fromkeys(cloud.runs, ("done", None))
