"""The worker (issue 4): picks up new runs, survives outages, serves /healthz and /metrics
with the right numbers, and stops cleanly on SIGTERM."""

from __future__ import annotations

import gc
import io
import os
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import orjson
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream
from prometheus_client.parser import text_string_to_metric_families

from harvester import state
from harvester.cli import main
from harvester.config import Settings
from harvester.errors import AuthRejected, ConfigError
from harvester.progress import Reporter
from harvester.simulator.cloud import SimCloud
from harvester.simulator.faults import FaultPlan
from harvester.simulator.generated import (
    FIRST_PROJECT_ID,
    FIRST_TEST_ID,
    FIXED_ANCHOR,
    GeneratedRun,
    generate_cloud,
)
from harvester.simulator.server import Simulator
from harvester.sinks import final_path
from harvester.state import STATE_FILE_NAME
from harvester.worker import Worker, run_worker
from tests.fs_helpers import fill, remount
from tests.harvest_helpers import read_dir, settings_for
from tests.process_helpers import ROOT, cli_command, cli_env, run_cli, wait_for
from tests.s3_helpers import S3Server

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def cloud() -> SimCloud:
    """3 harvestable runs and 1 finished but still processing, in one project."""
    return generate_cloud(runs=3, metrics=3, points=2, pending_runs=1, projects=1, tests=2)


def worker_settings(sim: Simulator, out: Path | str, **overrides: Any) -> Settings:
    options: dict[str, Any] = {
        "projects": [FIRST_PROJECT_ID],
        "interval": "0.1s",
        "listen_port": 0,
        "max_attempts": 2,
    }
    options.update(overrides)
    return settings_for(sim, out, **options)


def make_worker(settings: Settings, **options: Any) -> tuple[Worker, io.StringIO]:
    log = io.StringIO()
    reporter = Reporter(log, json_lines=True, level="info")
    return Worker(settings, reporter=reporter, handle_signals=False, grace=1.0, **options), log


@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[str]:
    """The worker running in the background; yields its endpoints' base URL."""
    async with anyio.create_task_group() as tg:
        port = await tg.start(worker.run)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            worker.stop()


async def scrape(base: str) -> tuple[int, dict[str, Any], Samples]:
    """(healthz status, healthz body, every /metrics sample by name and labels)."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/healthz") as resp:
            status, health = resp.status, orjson.loads(await resp.read())
        async with session.get(f"{base}/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = await resp.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return status, health, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def failed_cycles(log: io.StringIO) -> list[str]:
    """The messages of the worker's `cycle_failed` lines."""
    events = map(orjson.loads, log.getvalue().splitlines())
    return [event["message"] for event in events if event["event"] == "cycle_failed"]


def ready_runs(cloud: SimCloud) -> list[int]:
    return [r["id"] for r in cloud.runs_of(None) if r["processing_status"] == 2]


async def test_worker_picks_up_new_and_newly_processed_runs_and_nothing_twice(
    cloud: SimCloud, tmp_path: Path
) -> None:
    async with Simulator(cloud) as sim:
        worker, _log = make_worker(worker_settings(sim, tmp_path))
        async with running(worker):
            await wait_for(lambda: sorted(read_dir(tmp_path)) == ready_runs(cloud))
            pending = max(cloud.runs)
            assert not final_path(tmp_path, pending).exists()
            added = GeneratedRun(
                200001,
                metrics=3,
                points=2,
                created=FIXED_ANCHOR,
                test_id=FIRST_TEST_ID,
                project_id=FIRST_PROJECT_ID,
            )
            sim.cloud.add_run(added)
            cloud.update_run(pending, processing_status=2)
            await wait_for(lambda: final_path(tmp_path, 200001).exists())
            await wait_for(lambda: final_path(tmp_path, pending).exists())
            cycles = worker.status.cycles
            await wait_for(lambda: worker.status.cycles >= cycles + 2)
        files = read_dir(tmp_path)
        assert files[200001][0] == {"type": "run", "test_run_id": 200001, "data": added.run}
        # Each run's data was asked for once, however many cycles went by.
        metrics_asked = Counter(r.run_id for r in sim.requests_for("metrics"))
        assert metrics_asked == Counter(dict.fromkeys(files, 1))
        assert worker.status.failed_cycles == 0


async def test_metrics_and_healthz_report_the_right_numbers(
    cloud: SimCloud, tmp_path: Path
) -> None:
    async with Simulator(cloud) as sim:
        worker, _log = make_worker(worker_settings(sim, tmp_path, interval="1h"))
        async with running(worker) as base:
            await wait_for(lambda: worker.status.cycles == 1)
            status, health, samples = await scrape(base)
        assert status == 200 and health["status"] == "ok" and health["cycles"] == 1
        files = read_dir(tmp_path)
        assert value(samples, "harvester_runs_harvested_total") == len(files) == 3
        assert value(samples, "harvester_runs_failed_total") == 0
        assert value(samples, "harvester_pending_runs") == 1
        assert value(samples, "harvester_cycles_total") == 1
        assert value(samples, "harvester_cycles_failed_total") == 0
        assert value(samples, "harvester_last_success_timestamp_seconds") == pytest.approx(
            worker.status.last_success
        )
        assert time.time() - value(samples, "harvester_last_success_timestamp_seconds") < 30
        served = Counter((r.endpoint, str(r.status)) for r in sim.log)
        counted = {
            (dict(labels)["endpoint"], dict(labels)["status"]): v
            for (name, labels), v in samples.items()
            if name == "harvester_requests_total"
        }
        assert counted == served
        records = Counter(r["type"] for records in files.values() for r in records)
        for kind, n in records.items():
            assert value(samples, "harvester_records_written_total", type=kind) == n
        written = sum(final_path(tmp_path, run_id).stat().st_size for run_id in files)
        assert value(samples, "harvester_written_bytes_total") == written
        assert value(samples, "harvester_rate_limited_total") == 0
        assert value(samples, "harvester_retries_total") == 0


async def test_the_worker_survives_an_outage_of_a_few_seconds(
    cloud: SimCloud, tmp_path: Path
) -> None:
    async with Simulator(cloud) as sim:
        sim.set_outage(True)
        settings = worker_settings(sim, tmp_path, interval="1s", backoff_cap=0.2)
        worker, log = make_worker(settings)
        async with running(worker) as base:
            started = time.monotonic()
            await wait_for(
                lambda: worker.status.failed_cycles >= 3 and time.monotonic() - started >= 2
            )
            status, _health, samples = await scrape(base)
            assert status == 200  # failing cycles, but the loop is alive
            assert value(samples, "harvester_cycles_failed_total") >= 3
            assert value(samples, "harvester_requests_total", endpoint="tests", status="503") >= 3
            assert worker.status.last_success is None
            sim.set_outage(False)
            await wait_for(lambda: sorted(read_dir(tmp_path)) == ready_runs(cloud))
            await wait_for(lambda: worker.status.last_success is not None)
        events = [orjson.loads(line)["event"] for line in log.getvalue().splitlines()]
        assert "cycle_failed" in events and events.count("cycle_done") >= 1


async def test_healthz_turns_503_when_the_loop_goes_quiet_or_ends(
    cloud: SimCloud, tmp_path: Path
) -> None:
    now = [1000.0]
    async with Simulator(cloud) as sim:
        settings = worker_settings(sim, tmp_path, interval="1h")
        worker, _log = make_worker(settings, stale_after=60.0, clock=lambda: now[0])
        async with running(worker) as base:
            await wait_for(lambda: worker.status.cycles == 1)
            assert (await scrape(base))[0] == 200
            now[0] += 61  # an hour-long sleep wedged: no sign of life for over a minute
            status, health, _ = await scrape(base)
            assert status == 503 and health["status"] == "stale"
        assert not worker.healthy() and worker.health()["status"] == "stopped"


async def test_stop_cuts_a_slow_discovery_short(cloud: SimCloud, tmp_path: Path) -> None:
    plan = FaultPlan(p_delay=1.0, delay_seconds=30.0, fault_endpoints=frozenset({"runs"}))
    async with Simulator(cloud, faults=plan) as sim:
        worker, _log = make_worker(worker_settings(sim, tmp_path))
        with anyio.fail_after(5):  # far less than the 30 s the runs listing would take
            async with running(worker):
                await wait_for(lambda: bool(sim.requests_for("tests")))
        assert worker.status.failed_cycles == 0
        assert list(tmp_path.glob("*.ndjson")) == []
        # A cycle cut short is not a success: no cycle_done, last_success unmoved.
        lines = [orjson.loads(line) for line in _log.getvalue().splitlines()]
        events = [line["event"] for line in lines]
        assert "cycle_done" not in events and "cycle_stopped" in events
        assert worker.status.last_success is None and worker.status.cycles == 0
        # Nothing discovered is not 0 waiting, and a stopped worker has no next cycle.
        stopped = lines[events.index("cycle_stopped")]
        assert stopped["pending"] is None
        assert stopped["message"] == "cycle stopped: 0 runs harvested, 0 failed"


async def test_a_rejected_token_ends_the_worker(cloud: SimCloud, tmp_path: Path) -> None:
    async with Simulator(cloud) as sim:
        settings = worker_settings(sim, tmp_path, token="wrong-token")
        worker, _log = make_worker(settings)
        with anyio.fail_after(10), pytest.raises(AuthRejected):
            await worker.run()


def test_the_worker_needs_selectors_a_valid_interval_and_an_archive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = {"base_url": "http://127.0.0.1:1", "out": str(tmp_path)}
    from harvester.config import load_settings

    with pytest.raises(ConfigError, match="--project P or --test T"):
        Worker(load_settings(base, environ={}))
    with pytest.raises(ConfigError, match="--interval 'often' is not a duration"):
        Worker(load_settings({**base, "projects": [1], "interval": "often"}, environ={}))
    assert main(["worker", "--project", "1", "--run", "5", "--token", "t"]) == 2
    capsys.readouterr()
    assert main(["worker", "--project", "1", "--token", "t"]) == 2  # no --out: stdout
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the worker needs --out DIR" in err


async def read_event(stream: BufferedByteReceiveStream, name: str) -> dict[str, Any]:
    """Read the child's JSON log lines until one is `name`."""
    while True:
        line = await stream.receive_until(b"\n", 1 << 20)
        event: dict[str, Any] = orjson.loads(line)
        if event["event"] == name:
            return event


@asynccontextmanager
async def worker_process(
    sim: Simulator, *args: str
) -> AsyncIterator[tuple[Process, BufferedByteReceiveStream]]:
    """`harvester worker ARGS` as a process: it and its stderr (killed if still running)."""
    process = await anyio.open_process(
        cli_command(sim, "worker", *args), env=cli_env(sim), cwd=ROOT
    )
    try:
        assert process.stderr is not None
        yield process, BufferedByteReceiveStream(process.stderr)
    finally:
        if process.returncode is None:
            process.kill()
        await process.aclose()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
async def test_sigterm_or_sighup_stops_the_worker_process_cleanly(
    cloud: SimCloud, tmp_path: Path, signum: signal.Signals
) -> None:
    async with Simulator(cloud) as sim:
        args = ("--project", str(FIRST_PROJECT_ID), "--out", str(tmp_path), "--interval", "1h",
                "--listen-port", "0")  # fmt: skip
        async with worker_process(sim, *args) as (process, stderr):
            with anyio.fail_after(20):
                port = (await read_event(stderr, "listening"))["port"]
                await read_event(stderr, "cycle_done")
                status, _health, samples = await scrape(f"http://127.0.0.1:{port}")
                assert status == 200
                assert value(samples, "harvester_runs_harvested_total") == 3
                process.send_signal(signum)
                stopped = await read_event(stderr, "stopped")
                assert await process.wait() == 0
    assert stopped["signal"] == signum.name
    assert sorted(read_dir(tmp_path)) == ready_runs(cloud)
    assert not list(tmp_path.glob(".*.partial"))


async def test_a_second_signal_names_the_runs_it_cut_and_that_they_come_again(
    tmp_path: Path,
) -> None:
    """The worker's last line said only "stopped after 0 cycles (0 failed)": the runs in
    flight that the second SIGTERM cut went unmentioned."""
    cloud = generate_cloud(runs=2, metrics=5, points=3)
    hang = FaultPlan(p_delay=1.0, delay_seconds=60.0, fault_endpoints=frozenset({"overview"}))
    async with Simulator(cloud, faults=hang) as sim:
        args = ("--all-projects", "--out", str(tmp_path), "--listen-port", "0", "--verbose")
        async with worker_process(sim, *args) as (process, stderr):
            with anyio.fail_after(20):
                await read_event(stderr, "listening")
                # Both runs seen started by the worker's writer (under load, a run's start
                # could still wait in the channel when the signals came: then unnamed).
                for _ in cloud.runs:
                    await read_event(stderr, "run_started")
                await wait_for(lambda: sim.fault_counts["delay"] == len(cloud.runs), within=20)
                process.send_signal(signal.SIGTERM)
                await read_event(stderr, "stopping")
                process.send_signal(signal.SIGTERM)
                stopped = await read_event(stderr, "stopped")
                await process.wait()
    assert stopped["cut_short"] == sorted(cloud.runs)
    ids = ", ".join(map(str, sorted(cloud.runs)))
    assert stopped["message"].endswith(f"cut short, harvested again by the next start: {ids}")


@pytest.mark.parametrize(
    ("own_state", "refusal"),
    [
        (False, "another harvester is already using the state file"),
        # A state file of its own does not get it in: the directory's lock is held too.
        (True, "another harvester is writing to"),
    ],
    ids=["same-state", "own-state"],
)
async def test_a_one_shot_harvest_is_refused_between_cycles_and_the_worker_survives(
    cloud: SimCloud, tmp_path: Path, own_state: bool, refusal: str
) -> None:
    state = ["--state", str(tmp_path / "x.db")] if own_state else []
    async with Simulator(cloud) as sim:
        worker, _log = make_worker(worker_settings(sim, tmp_path, interval="0.3s"))
        async with running(worker):
            await wait_for(lambda: worker.status.cycles >= 1)
            other = await run_cli(
                sim, "harvest", "--project", str(FIRST_PROJECT_ID), "--out", str(tmp_path), *state
            )
            assert other.returncode == 2
            assert refusal.encode() in other.stderr
            cycles = worker.status.cycles
            await wait_for(lambda: worker.status.cycles >= cycles + 2)
        assert worker.status.failed_cycles == 0


async def test_a_full_or_read_only_state_between_cycles_is_an_outage_to_wait_out(
    cloud: SimCloud, tmp_path: Path, tiny_fs: Path
) -> None:
    async with Simulator(cloud) as sim:
        settings = worker_settings(
            sim, tmp_path, interval="0.2s", backoff_cap=0.05, state=str(tiny_fs / "s.sqlite")
        )
        worker, log = make_worker(settings)
        async with running(worker):
            await wait_for(lambda: worker.status.cycles >= 1)
            filler = fill(tiny_fs)
            await wait_for(lambda: worker.status.failed_cycles >= 2)
            filler.unlink()
            success = worker.status.last_success
            await wait_for(lambda: worker.status.last_success != success)
            await wait_for(lambda: remount(tiny_fs, "ro"))  # refused while a cycle writes
            failed = worker.status.failed_cycles
            await wait_for(lambda: worker.status.failed_cycles >= failed + 2)
            assert remount(tiny_fs, "rw")
            success = worker.status.last_success
            await wait_for(lambda: worker.status.last_success != success)
        assert sorted(read_dir(tmp_path)) == ready_runs(cloud)
    failures = failed_cycles(log)
    assert any("the disk is full" in message for message in failures)
    assert any("the filesystem is read-only" in message for message in failures)


async def test_a_state_busy_with_another_program_between_cycles_is_an_outage(
    cloud: SimCloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state, "BUSY_TIMEOUT", 0.5)  # (5 s, twice a cycle, else)
    async with Simulator(cloud) as sim:
        settings = worker_settings(sim, tmp_path, interval="0.2s", backoff_cap=0.05)
        worker, log = make_worker(settings)
        async with running(worker):
            await wait_for(lambda: worker.status.cycles >= 1)
            other = sqlite3.connect(tmp_path / STATE_FILE_NAME, isolation_level=None)
            other.execute("BEGIN EXCLUSIVE")  # say, someone inspecting it with sqlite3
            await wait_for(lambda: worker.status.failed_cycles >= 1, within=20)
            other.execute("ROLLBACK")
            other.close()
            success = worker.status.last_success
            await wait_for(lambda: worker.status.last_success != success)
    assert "another program holds a SQLite lock" in failed_cycles(log)[0]


async def test_a_sigterm_as_soon_as_the_worker_listens_stops_it_cleanly(
    cloud: SimCloud, tmp_path: Path
) -> None:
    """The signals were watched only once the loop had begun: a SIGTERM right after the
    `listening` line (a pod deleted as it starts) killed the worker, exit -15."""
    async with Simulator(cloud) as sim:
        args = ("--project", str(FIRST_PROJECT_ID), "--out", str(tmp_path), "--listen-port", "0")
        async with worker_process(sim, *args) as (process, stderr):
            with anyio.fail_after(20):
                await read_event(stderr, "listening")
                process.send_signal(signal.SIGTERM)
                stopped = await read_event(stderr, "stopped")
                assert await process.wait() == 0
    assert stopped["signal"] == "SIGTERM"
    assert not list(tmp_path.glob("*.ndjson")) or sorted(read_dir(tmp_path)) == ready_runs(cloud)


class DispositionOnEvents(Reporter):
    """A reporter that notes SIGTERM's disposition as each event is said."""

    def __init__(self) -> None:
        self.log = io.StringIO()
        super().__init__(self.log, json_lines=True)
        self.dispositions: dict[str, Any] = {}

    def event(self, event: str, message: str, **fields: Any) -> None:
        self.dispositions[event] = signal.getsignal(signal.SIGTERM)
        super().event(event, message, **fields)


async def test_stop_signals_stay_handled_from_listening_until_stopped(tmp_path: Path) -> None:
    """After a second SIGTERM the worker closed its receiver and cleaned up with SIGTERM's
    default disposition back: a third one (Ctrl-C pressed thrice) killed it mid-cleanup,
    its runs left `running`. The watch now spans the worker's life, `stopped` included."""
    cloud = generate_cloud(runs=2, metrics=3, points=2)
    hang = FaultPlan(p_delay=1.0, delay_seconds=60.0, fault_endpoints=frozenset({"overview"}))
    async with Simulator(cloud, faults=hang) as sim:
        reporter = DispositionOnEvents()
        settings = worker_settings(sim, tmp_path, projects=[], all_projects=True)
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(run_worker, settings, reporter)
                await wait_for(lambda: sim.fault_counts["delay"] == len(cloud.runs))
                os.kill(os.getpid(), signal.SIGTERM)
                await wait_for(lambda: "stopping" in reporter.dispositions)
                os.kill(os.getpid(), signal.SIGTERM)
    seen = reporter.dispositions
    assert {"listening", "stopping_now", "stopped"} <= set(seen)
    assert signal.SIG_DFL not in (seen["listening"], seen["stopped"])
    stopped = orjson.loads(reporter.log.getvalue().splitlines()[-1])
    assert stopped["event"] == "stopped" and stopped["cut_short"] == sorted(cloud.runs)


def new_runs(cloud: SimCloud, *run_ids: int) -> None:
    for run_id in run_ids:
        cloud.add_run(
            GeneratedRun(
                run_id,
                metrics=3,
                points=2,
                created=FIXED_ANCHOR,
                test_id=FIRST_TEST_ID,
                project_id=FIRST_PROJECT_ID,
            )  # fmt: skip
        )


async def test_new_runs_answering_403_fail_the_cycle_not_the_worker(
    cloud: SimCloud, tmp_path: Path
) -> None:
    """Discovery answered, then the cycle's new runs each answered 403: the harvest's own
    transport had seen no 2xx, took it for a token that may read nothing and ended a
    worker that had archived runs with that token for weeks (exit 2)."""
    async with Simulator(cloud) as sim:
        worker, log = make_worker(worker_settings(sim, tmp_path, backoff_cap=0.05))
        async with running(worker):
            await wait_for(lambda: worker.status.cycles >= 1)
            forbidden = (200001, 200002, 200003)
            sim.faults = FaultPlan(forbidden_runs=frozenset(forbidden))
            new_runs(sim.cloud, *forbidden)
            await wait_for(lambda: worker.status.failed_cycles >= 2)
            sim.faults = FaultPlan()
            await wait_for(lambda: all(final_path(tmp_path, r).exists() for r in forbidden))
    assert failed_cycles(log)[0].startswith("cycle failed (3 runs failed)")


async def test_a_harvest_timing_out_after_discovery_was_answered_is_no_unreachable_api(
    cloud: SimCloud, tmp_path: Path
) -> None:
    """The harvest's transport had had no answer of its own: its runs' timeouts said
    "cannot reach the API ... check --base-url and the network" in a cycle whose
    discovery the API had just answered."""
    hang = FaultPlan(p_delay=1.0, delay_seconds=5.0)  # the runs' data, not discovery
    async with Simulator(cloud) as sim:
        settings = worker_settings(sim, tmp_path, read_timeout=0.2, backoff_cap=0.05)
        worker, log = make_worker(settings)
        sim.faults = hang
        async with running(worker):
            await wait_for(lambda: worker.status.failed_cycles >= 1)
    failure = failed_cycles(log)[0]
    assert failure.startswith("cycle failed (3 runs failed)")
    assert "cannot reach the API" not in log.getvalue()


def botocore_sessions() -> int:
    """The botocore sessions alive and in the collector's sight (not frozen)."""
    return sum(type(o).__name__ == "AioSession" for o in gc.get_objects())


async def test_an_s3_worker_keeps_no_cycle_s_client_and_session(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    """Each cycle's store froze (gc.freeze) what was alive as it opened, its own client
    and session among them (~55,000 objects, cyclic garbage once closed), out of the
    collector's reach for good: 1.5 GB after 200 cycles of one run each. Now the first
    store alone freezes, and the worker collects each cycle's garbage before it sleeps."""
    cloud = generate_cloud(runs=1, metrics=3, points=2)
    async with Simulator(cloud) as sim:
        settings = worker_settings(
            sim, f"s3://{bucket}/w/", state=str(tmp_path / "w.sqlite"), s3_endpoint_url=s3.url,
            projects=[], all_projects=True, interval="0.05s",
        )  # fmt: skip
        worker, _log = make_worker(settings)
        frozen: list[int] = []
        sessions: list[int] = []
        async with running(worker):
            for run_id in range(200001, 200005):
                await wait_for(lambda: worker.status.cycles > len(frozen), within=30)
                frozen.append(gc.get_freeze_count())
                sessions.append(botocore_sessions())
                new_runs(sim.cloud, run_id)  # (the next cycle harvests it: a store opens)
    assert frozen[-1] <= frozen[0], frozen  # (it grew by ~25,000 objects a cycle)
    assert sessions == [0, 0, 0, 0]
    assert worker.status.failed_cycles == 0 and len(s3.runs(bucket)) == 4
