"""`harvester status`: the state file read without sqlite3, while a harvester holds it."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import anyio
import orjson
import pytest
from anyio.abc import Process

from harvester.cli import main
from harvester.job import harvest_job
from harvester.scheduler import RunTarget
from harvester.simulator.cloud import SimCloud
from harvester.simulator.faults import FaultPlan
from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator
from harvester.state import KILLED, STATE_FILE_NAME, HarvestState
from harvester.status import read_status, write_status
from tests.harvest_helpers import settings_for
from tests.process_helpers import ROOT, cli_command, cli_env, recorded_running, wait_for


async def test_status_counts_runs_and_names_failures_while_the_state_is_locked(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken, *others = sorted(cloud.runs)
    simulator.faults = FaultPlan(p_500=1.0, fault_endpoints=frozenset({"overview"}))
    await harvest_job(settings_for(simulator, tmp_path, max_attempts=1), [RunTarget(broken)])
    simulator.faults = FaultPlan()
    await harvest_job(settings_for(simulator, tmp_path), [RunTarget(r) for r in others])
    # A worker holds the state file's lock: status reads it all the same.
    with HarvestState.open(tmp_path / STATE_FILE_NAME):
        assert main(["status", "--out", str(tmp_path)]) == 0
        report = orjson.loads(capsys.readouterr().out)
        assert (
            main(["status", "--state", str(tmp_path / STATE_FILE_NAME), "--output", "table"]) == 0
        )
        table = capsys.readouterr().out
    assert report["counts"] == {"done": len(others), "failed": 1}
    [failed] = report["failed"]
    assert failed["run_id"] == broken and failed["attempts"] == 1
    assert "overview" in failed["reason"] and failed["updated"].endswith("+00:00")
    assert table.splitlines()[0].endswith(f"3 runs ({len(others)} done, 1 failed)")
    assert "failed runs" in table and str(broken) in table and "overview" in table


def test_status_lists_every_status_the_file_holds_waiting_included(tmp_path: Path) -> None:
    """A newer state file with a 'waiting' status (runs discovery left for later)."""
    path = tmp_path / "state.sqlite"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE runs (run_id INTEGER PRIMARY KEY, status TEXT, attempts INTEGER,"
            " reason TEXT, updated_at REAL)"
        )
        db.executemany(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?)",
            [
                (1, "done", 1, None, 0.0),
                (2, "waiting", 0, "not processed yet", 0.0),
                (3, "waiting", 0, "not finished", 0.0),
            ],  # fmt: skip
        )
    report = read_status(path)
    assert report.counts == {"done": 1, "waiting": 2}
    assert [(r["run_id"], r["reason"]) for r in report.runs["waiting"]] == [
        (2, "not processed yet"),
        (3, "not finished"),
    ]
    stream = io.StringIO()
    write_status(stream, report, "table")
    assert "waiting runs" in stream.getvalue() and "not processed yet" in stream.getvalue()
    assert all(len(line) <= 80 for line in stream.getvalue().splitlines()[1:])  # [0]: the path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["status"], "give --out DIR (an archive) or --state FILE"),
        (["status", "--out", "/nonexistent/archive"], "no state file at /nonexistent/archive/"),
    ],
)
def test_status_without_a_state_file_is_one_line_and_exit_2(
    args: list[str], message: str, capfd: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    err = capfd.readouterr().err
    assert message in err and err.count("\n") == 1


def test_status_of_a_file_that_is_not_a_state_file_is_exit_2(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / STATE_FILE_NAME).write_bytes(b"not sqlite at all" * 64)
    assert main(["status", "--out", str(tmp_path)]) == 2
    err = capfd.readouterr().err  # what it is, and what to do (as a harvest says it)
    assert "is not a harvester state file (not an SQLite database; it begins b'not" in err
    assert "give --state a path of its own" in err and err.count("\n") == 1


def status_of(out: Path) -> dict[str, object]:
    stream = io.StringIO()
    write_status(stream, read_status(out / STATE_FILE_NAME), "json")
    shown: dict[str, object] = orjson.loads(stream.getvalue())
    return shown


#: The overviews never come: every run a job starts stays in flight.
HANG = FaultPlan(p_delay=1.0, delay_seconds=60.0, fault_endpoints=frozenset({"overview"}))


async def hung_job(sim: Simulator, out: Path, *run_ids: int) -> Process:
    """A harvest child of `run_ids`, returned once they are all in flight (hung) and the
    state file records them so. The job's writer task records a run after its fetch has
    begun: the simulator may see the hung request first (a race under load)."""
    before = sim.fault_counts["delay"]
    runs = [arg for run_id in run_ids for arg in ("--run", str(run_id))]
    command = cli_command(sim, "harvest", "--out", str(out), *runs)
    process = await anyio.open_process(command, env=cli_env(sim), cwd=ROOT)
    try:
        await wait_for(lambda: sim.fault_counts["delay"] == before + len(run_ids), within=20)
        state = out / STATE_FILE_NAME
        await wait_for(lambda: set(run_ids) <= recorded_running(state), within=20)
    except BaseException:
        await killed(process)
        raise
    return process


async def killed(process: Process) -> None:
    async with process:
        process.kill()
        await process.wait()


async def test_a_killed_jobs_running_runs_show_as_interrupted_a_live_jobs_as_running(
    tmp_path: Path,
) -> None:
    """A job killed with SIGKILL records nothing: its runs stay `running` in the file.
    While a job holds the state they are in flight; once no live job does, they were cut."""
    cloud = generate_cloud(runs=2, metrics=5, points=3)
    async with Simulator(cloud, faults=HANG) as sim:
        job = await hung_job(sim, tmp_path, *sorted(cloud.runs))
        live = status_of(tmp_path)
        await killed(job)
    dead = status_of(tmp_path)
    assert live["counts"] == {"running": 2} and "interrupted" not in live
    assert dead["counts"] == {"interrupted": 2} and "running" not in dead
    assert isinstance(dead["interrupted"], list)
    assert [row["run_id"] for row in dead["interrupted"]] == sorted(cloud.runs)
    assert {row["reason"] for row in dead["interrupted"]} == {
        "its job ended without recording it (killed?); the next harvest takes it again"
    }
    # The file itself is untouched: reading never writes.
    with sqlite3.connect(tmp_path / STATE_FILE_NAME) as db:
        assert {status for (status,) in db.execute("SELECT status FROM runs")} == {"running"}


async def test_the_next_job_fails_the_runs_a_killed_job_left_running(tmp_path: Path) -> None:
    """While a later job lives, `running` is its own runs in flight only: those a killed
    job left are failed with why when the next job opens the state."""
    cloud = generate_cloud(runs=3, metrics=5, points=3)
    first, second, third = sorted(cloud.runs)
    async with Simulator(cloud, faults=HANG) as sim:
        await killed(await hung_job(sim, tmp_path, first, second))
        later = await hung_job(sim, tmp_path, third)
        live = status_of(tmp_path)
        await killed(later)
    assert live["counts"] == {"failed": 2, "running": 1}
    assert isinstance(live["running"], list) and isinstance(live["failed"], list)
    assert [row["run_id"] for row in live["running"]] == [third]
    assert [(row["run_id"], row["reason"]) for row in live["failed"]] == [
        (first, KILLED),
        (second, KILLED),
    ]
