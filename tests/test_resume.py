"""Crash-safe and resumable: SIGKILL, SIGTERM, re-runs, --force, and one process at a time."""

from __future__ import annotations

import signal
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from anyio.abc import Process

from harvester import __version__
from harvester.cli import main
from harvester.job import harvest_job
from harvester.provenance import from_file, last_line
from harvester.scheduler import RunTarget
from harvester.simulator.cloud import SimCloud
from harvester.simulator.faults import FaultPlan
from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator
from harvester.state import STATE_FILE_NAME, HarvestState
from tests.harvest_helpers import (
    assert_exact,
    canonical,
    expected_records,
    parse_lines,
    read_dir,
    settings_for,
)
from tests.process_helpers import run_cli

SLOW = FaultPlan(p_delay=1.0, delay_seconds=0.2, fault_endpoints=frozenset({"overview"}))


def command(sim: Simulator, out: Path, cloud: SimCloud) -> list[str]:
    runs = [arg for run_id in sorted(cloud.runs) for arg in ("--run", str(run_id))]
    return [sys.executable, "-m", "harvester", "harvest", "--base-url", sim.base_url,
            "--token", sim.token, "--out", str(out), "--rate", "1000",
            "--runs-in-flight", "2", *runs]  # fmt: skip


async def start(sim: Simulator, out: Path, cloud: SimCloud) -> Process:
    return await anyio.open_process(command(sim, out, cloud))


async def wait_for_files(out: Path, at_least: int, process: Process) -> None:
    with anyio.fail_after(20):
        while len(list(out.glob("*.ndjson"))) < at_least:
            assert process.returncode is None, "the harvester ended before it was stopped"
            await anyio.sleep(0.02)


def metrics_requests(sim: Simulator) -> Counter[int | None]:
    return Counter(r.run_id for r in sim.requests_for("metrics"))


async def test_after_sigkill_a_rerun_finishes_exactly_without_refetching(tmp_path: Path) -> None:
    cloud = generate_cloud(runs=10, metrics=20, points=5)
    async with Simulator(cloud, faults=SLOW) as sim:
        process = await start(sim, tmp_path, cloud)
        async with process:
            await wait_for_files(tmp_path, 3, process)
            process.send_signal(signal.SIGKILL)
            await process.wait()
        done_before = {int(p.stem) for p in tmp_path.glob("*.ndjson")}
        assert 3 <= len(done_before) < len(cloud.runs)
        for run_id, records in read_dir(tmp_path).items():  # whatever is final is whole
            assert canonical(records) == canonical(expected_records(cloud, run_id))
        sim.log.clear()
        rerun = await anyio.run_process(command(sim, tmp_path, cloud), check=False)
        assert rerun.returncode == 0, rerun.stderr.decode()
        fetched_again = set(metrics_requests(sim))
    assert not fetched_again & done_before
    assert fetched_again == set(cloud.runs) - done_before
    assert_exact(cloud, tmp_path)


async def test_sigterm_stops_cleanly_with_143_and_a_rerun_completes(tmp_path: Path) -> None:
    cloud = generate_cloud(runs=10, metrics=20, points=5)
    async with Simulator(cloud, faults=SLOW) as sim:
        process = await start(sim, tmp_path, cloud)
        async with process:
            await wait_for_files(tmp_path, 2, process)
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 143
            assert process.stderr is not None
            err = b"".join([chunk async for chunk in process.stderr]).decode()
        events = {e["event"]: e for e in map(orjson.loads, err.splitlines())}
        # Said at once, before the runs in flight finish: what happens, and how to hurry it.
        assert events["stopping"]["message"].startswith("stopping (SIGTERM): ")
        assert "in flight get 10 s; SIGTERM again to stop now" in events["stopping"]["message"]
        assert "stopped by SIGTERM" in err and "run the same command again" in err
        assert not list(tmp_path.glob(".*.partial"))
        done_before = {int(p.stem) for p in tmp_path.glob("*.ndjson")}
        # The summary counts what was kept: the records of the published files, no more.
        kept = sum(len(records) for records in read_dir(tmp_path).values())
        assert events["summary"]["records"] == kept
        assert events["summary"]["bytes"] == sum(
            p.stat().st_size for p in tmp_path.glob("*.ndjson")
        )
        assert len(done_before) < len(cloud.runs)
        with HarvestState.open(tmp_path / STATE_FILE_NAME) as state:
            assert state.done_runs(cloud.runs) == done_before
        sim.log.clear()
        assert (await anyio.run_process(command(sim, tmp_path, cloud), check=False)).returncode == 0
        assert not set(metrics_requests(sim)) & done_before
    assert_exact(cloud, tmp_path)


async def test_rerun_retries_only_failed_runs_and_force_refetches_all(tmp_path: Path) -> None:
    cloud = generate_cloud(runs=3, metrics=10, points=3)
    broken = min(cloud.runs)
    plan = FaultPlan(p_500=1.0, fault_endpoints=frozenset({"overview"}))
    async with Simulator(cloud, faults=plan) as sim:
        settings = settings_for(sim, tmp_path, max_attempts=2)
        # Only the first run's overview fails: send the others through a healthy server.
        first = await harvest_job(settings, [RunTarget(broken)])
        assert first.report.failed
        sim.faults = FaultPlan()
        await harvest_job(settings, [RunTarget(r) for r in sorted(cloud.runs) if r != broken])
        with HarvestState.open(tmp_path / STATE_FILE_NAME) as state:
            failed_state = state.get(broken)
        assert failed_state is not None and failed_state.status == "failed"
        sim.log.clear()
        again = await harvest_job(settings, [RunTarget(r) for r in sorted(cloud.runs)])
        assert set(metrics_requests(sim)) == {broken}
        assert sorted(again.skipped) == sorted(set(cloud.runs) - {broken})
        sim.log.clear()
        forced = settings_for(sim, tmp_path, force=True)
        await harvest_job(forced, [RunTarget(r) for r in sorted(cloud.runs)])
        assert set(metrics_requests(sim)) == set(cloud.runs)
    assert_exact(cloud, tmp_path)


async def test_a_run_the_state_calls_done_whose_file_is_gone_is_harvested_again(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    settings = settings_for(simulator, tmp_path)
    await harvest_job(settings, [RunTarget(r) for r in sorted(cloud.runs)])
    gone = min(cloud.runs)
    (tmp_path / f"{gone}.ndjson").unlink()
    simulator.log.clear()
    result = await harvest_job(settings, [RunTarget(r) for r in sorted(cloud.runs)])
    assert set(metrics_requests(simulator)) == {gone}
    assert len(result.skipped) == len(cloud.runs) - 1
    assert_exact(cloud, tmp_path)


def test_a_second_process_on_the_same_state_refuses_to_run(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with HarvestState.open(tmp_path / STATE_FILE_NAME):
        code = main(["harvest", "--token", "t", "--base-url", "http://127.0.0.1:9",
                     "--run", "1", "--out", str(tmp_path)])  # fmt: skip
    assert code == 2
    assert "another harvester is already using the state file" in capfd.readouterr().err


async def test_sigterm_while_discovering_stops_at_once_with_143(tmp_path: Path) -> None:
    cloud = generate_cloud(runs=3, metrics=5, points=3)
    project = next(iter(cloud.projects))
    # The project's test listing hangs: the harvester is stuck in discovery.
    plan = FaultPlan(p_delay=1.0, delay_seconds=60.0, fault_endpoints=frozenset({"tests"}))
    async with Simulator(cloud, faults=plan) as sim:
        cmd = [sys.executable, "-m", "harvester", "harvest", "--base-url", sim.base_url,
               "--token", sim.token, "--out", str(tmp_path), "--project", str(project)]  # fmt: skip
        async with await anyio.open_process(cmd) as process:
            with anyio.fail_after(20):
                while not sim.fault_counts["delay"]:
                    await anyio.sleep(0.02)
                process.send_signal(signal.SIGTERM)
                assert await process.wait() == 143
            assert process.stderr is not None
            err = b"".join([chunk async for chunk in process.stderr]).decode()
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    assert "stopping (SIGTERM): discovering, nothing written yet" in err
    assert not list(tmp_path.glob("*.ndjson")) and not list(tmp_path.glob(".*.partial"))


async def test_partial_files_a_crash_left_behind_are_removed_by_the_next_job(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    stray = tmp_path / ".424242.ndjson.partial"  # a run this job does not even ask for
    stray.write_bytes(b'{"type":"metric"')
    await harvest_job(settings_for(simulator, tmp_path), [RunTarget(min(cloud.runs))])
    assert not stray.exists()
    # With a state file elsewhere too: whether a writer is alive is asked of the file's
    # own lock (tests/test_sinks.py: one a live harvester writes is left alone).
    stray.write_bytes(b"x")
    elsewhere = settings_for(simulator, tmp_path, state=str(tmp_path / "s" / "state.sqlite"))
    await harvest_job(elsewhere, [RunTarget(min(cloud.runs))])
    assert not stray.exists()


# --- how each run was harvested --------------------------------------------------------------


async def test_the_summary_says_how_the_run_was_harvested(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    settings = settings_for(simulator, tmp_path, methods=["p95", "default"], details=True)
    before = datetime.now(UTC).replace(microsecond=0)
    await harvest_job(settings, [RunTarget(min(cloud.runs))])
    how = read_dir(tmp_path)[min(cloud.runs)][-1]["data"]["harvest"]
    assert {k: v for k, v in how.items() if k != "time"} == {
        "harvester": __version__,
        "api": "v2",
        "methods": ["p95", "default"],
        "details": True,
    }
    assert how["time"].endswith("Z")
    assert before <= datetime.fromisoformat(how["time"]) <= datetime.now(UTC)


async def test_archived_runs_lacking_what_a_job_asks_are_named_and_force_redoes_them(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    everything = [RunTarget(r) for r in sorted(cloud.runs)]
    await harvest_job(settings_for(simulator, tmp_path), everything)
    said: list[tuple[str, str, dict[str, Any]]] = []

    def notify(event: str, message: str, **fields: Any) -> None:
        said.append((event, message, fields))

    p95 = settings_for(simulator, tmp_path, methods=["p95"])
    result = await harvest_job(p95, everything, notify=notify)  # how: from the state
    assert sorted(result.skipped) == sorted(cloud.runs)
    [(event, message, fields)] = said
    assert event == "archived_differently" and fields["run_ids"] == sorted(cloud.runs)
    assert "3 runs (100001, 100002, 100003) archived without what this job asks" in message
    assert "(method p95)" in message and "--force harvests them again" in message
    # A state that does not know the runs: the files' summaries say how.
    said.clear()
    elsewhere = settings_for(
        simulator, tmp_path, methods=["p95"], details=True, state=str(tmp_path / "s" / "x.db")
    )
    await harvest_job(elsewhere, everything, notify=notify)
    assert [m for _, m, _ in said] == [
        "3 runs (100001, 100002, 100003) archived without what this job asks "
        "(details, method p95) and skipped; --force harvests them again"
    ]
    # Asking for what they hold is silent; --force redoes them, and then all is said.
    said.clear()
    await harvest_job(settings_for(simulator, tmp_path), everything, notify=notify)
    assert said == []
    await harvest_job(settings_for(simulator, tmp_path, methods=["p95"], force=True), everything)
    await harvest_job(p95, everything, notify=notify)
    assert said == []


async def test_the_cli_warns_about_archived_runs_lacking_a_method(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    await harvest_job(settings_for(simulator, tmp_path), [RunTarget(min(cloud.runs))])
    again = await run_cli(simulator, "harvest", "--run", str(min(cloud.runs)),
                          "--method", "p95", "--out", str(tmp_path))  # fmt: skip
    assert again.returncode == 0
    [line] = [e for e in parse_lines(again.stderr) if e["event"] == "archived_differently"]
    assert line["run_ids"] == [min(cloud.runs)] and line["lacking"] == "method p95"


def test_the_last_line_is_read_from_the_end_however_long(tmp_path: Path) -> None:
    path = tmp_path / "run.ndjson"
    long_summary = b'{"type":"summary","data":{"harvest":{"methods":["' + b"x" * 20000 + b'"]}}}'
    path.write_bytes(b'{"type":"metric"}\n' * 1000 + long_summary + b"\n")
    assert last_line(path) == long_summary
    path.write_bytes(long_summary)
    assert last_line(path) == long_summary
    how = from_file(path)
    assert how is not None and len(how["methods"][0]) == 20000
    path.write_bytes(b"not json\n")
    assert from_file(path) is None
