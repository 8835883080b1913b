"""`harvester status`: the state file read without sqlite3, while a harvester holds it."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import anyio
import orjson
import pytest

from harvester.cli import main
from harvester.job import harvest_job
from harvester.scheduler import RunTarget
from harvester.simulator.cloud import SimCloud
from harvester.simulator.faults import FaultPlan
from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator
from harvester.state import STATE_FILE_NAME, HarvestState
from harvester.status import read_status, write_status
from tests.harvest_helpers import settings_for
from tests.process_helpers import ROOT, cli_command, cli_env, wait_for


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
    assert "is not a harvester state file" in capfd.readouterr().err


def status_of(out: Path) -> dict[str, object]:
    stream = io.StringIO()
    write_status(stream, read_status(out / STATE_FILE_NAME), "json")
    shown: dict[str, object] = orjson.loads(stream.getvalue())
    return shown


async def test_a_killed_jobs_running_runs_show_as_interrupted_a_live_jobs_as_running(
    tmp_path: Path,
) -> None:
    """A job killed with SIGKILL records nothing: its runs stay `running` in the file.
    While a job holds the state they are in flight; once no live job does, they were cut."""
    cloud = generate_cloud(runs=2, metrics=5, points=3)
    runs = [arg for run_id in sorted(cloud.runs) for arg in ("--run", str(run_id))]
    hang = FaultPlan(p_delay=1.0, delay_seconds=60.0, fault_endpoints=frozenset({"overview"}))
    async with Simulator(cloud, faults=hang) as sim:
        command = cli_command(sim, "harvest", "--out", str(tmp_path), *runs)
        async with await anyio.open_process(command, env=cli_env(sim), cwd=ROOT) as process:
            await wait_for(lambda: sim.fault_counts["delay"] == len(cloud.runs), within=20)
            live = status_of(tmp_path)
            process.kill()
            await process.wait()
    killed = status_of(tmp_path)
    assert live["counts"] == {"running": 2} and "interrupted" not in live
    assert killed["counts"] == {"interrupted": 2} and "running" not in killed
    assert isinstance(killed["interrupted"], list)
    assert [row["run_id"] for row in killed["interrupted"]] == sorted(cloud.runs)
    assert {row["reason"] for row in killed["interrupted"]} == {
        "its job ended without recording it (killed?); the next harvest takes it again"
    }
    # The file itself is untouched: reading never writes.
    with sqlite3.connect(tmp_path / STATE_FILE_NAME) as db:
        assert {status for (status,) in db.execute("SELECT status FROM runs")} == {"running"}
