"""`--layout flat|date`: a run under `DIR/YYYY/MM/DD/` of its creation (UTC); resume,
incremental, verify, status and report work with either, and switching layouts neither
refetches nor duplicates a run."""

from __future__ import annotations

import signal
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import anyio
import anyio.from_thread
import orjson
import pytest

from harvester import layout
from harvester.archive import open_archive
from harvester.cli import main
from harvester.job import harvest_job
from harvester.layout import UNDATED, run_dir
from harvester.outdir import LOCK_FILE_NAME
from harvester.scheduler import RunTarget
from harvester.simulator.cloud import SimCloud
from harvester.simulator.faults import FaultPlan
from harvester.simulator.generated import FIRST_TEST_ID, generate_cloud
from harvester.simulator.server import Simulator
from harvester.state import STATE_FILE_NAME, HarvestState
from harvester.verify import intact, verify
from tests.harvest_helpers import (
    canonical,
    cli_args,
    expected_records,
    parse_lines,
    settings_for,
)
from tests.process_helpers import run_cli

DISCOVERY_ENDPOINTS = {"tests", "test", "runs"}


def day_of(cloud: SimCloud, run_id: int) -> str:
    """The run's `YYYY/MM/DD`, worked out here from the simulator's `created`."""
    created = datetime.fromisoformat(cloud.runs[run_id].run["created"].replace("Z", "+00:00"))
    return created.astimezone(UTC).strftime("%Y/%m/%d")


def data_files(out: Path) -> dict[int, Path]:
    """Every published raw data file anywhere under `out`, by run id (fails on a run
    archived twice)."""
    found: dict[int, Path] = {}
    for path in out.rglob("*.ndjson"):
        if not path.name.startswith("."):
            run_id = int(path.name.split(".")[0])
            assert run_id not in found, f"run {run_id} archived twice: {found[run_id]}, {path}"
            found[run_id] = path
    return found


def assert_exact_dated(cloud: SimCloud, out: Path, *, with_run: bool = False) -> None:
    """Every run once, whole, in its creation day's directory; no temporary file left."""
    files = data_files(out)
    assert sorted(files) == sorted(cloud.runs)
    for run_id, path in files.items():
        assert path.parent == out / day_of(cloud, run_id), path
        records = parse_lines(path.read_bytes())
        expected = expected_records(cloud, run_id)
        if with_run:
            expected.append({"type": "run", "test_run_id": run_id, "data": cloud.runs[run_id].run})
        assert canonical(records) == canonical(expected), run_id
        assert records[-1]["type"] == "summary"
        assert (path.parent / f"{run_id}.manifest.json").is_file()
    assert not list(out.rglob(".*.partial"))


def test_the_one_function_places_runs_by_their_utc_creation_day() -> None:
    late_in_brazil = datetime.fromisoformat("2026-01-31T23:30:00-03:00")
    assert run_dir("flat", late_in_brazil) == ""
    assert run_dir("date", late_in_brazil) == "2026/02/01"
    assert run_dir("date", datetime(2026, 3, 4, tzinfo=UTC)) == "2026/03/04"
    assert run_dir("date", None) == UNDATED


def test_a_creation_day_outside_four_digit_years_is_walked_or_undated(tmp_path: Path) -> None:
    """'9999-12-31T23:00:00-05:00' is past year 9999 in UTC: its conversion ended the job
    as an internal error (OverflowError); it has no date. Year 999 was written '999/',
    which no walk (verify, resume by id) ever looked in."""
    past = layout.parse_created({"created": "9999-12-31T23:00:00-05:00"})
    assert run_dir("date", past) == UNDATED
    early = layout.parse_created({"created": "0999-01-01T00:00:00Z"})
    assert run_dir("date", early) == "0999/01/01"
    (tmp_path / "0999" / "01" / "01").mkdir(parents=True)
    assert list(layout.run_dirs(tmp_path)) == [tmp_path, tmp_path / "0999" / "01" / "01"]


async def test_runs_given_by_id_land_under_their_creation_day_with_their_run_record(
    tmp_path: Path,
) -> None:
    cloud = generate_cloud(runs=4, metrics=5, points=5)
    assert len({day_of(cloud, run_id) for run_id in cloud.runs}) > 1  # several days
    async with Simulator(cloud) as sim:
        settings = settings_for(sim, tmp_path, layout="date")
        result = await harvest_job(settings, [RunTarget(r) for r in sorted(cloud.runs)])
        assert not result.report.failed
        # One GET of each run's object for its date, and it is kept as its `run` record.
        assert Counter(r.run_id for r in sim.requests_for("run")) == Counter(list(cloud.runs))
    assert_exact_dated(cloud, tmp_path, with_run=True)
    # The state, its lock and the directory lock stay at the archive's root.
    root_files = {p.name for p in tmp_path.iterdir() if p.is_file()}
    assert {STATE_FILE_NAME, LOCK_FILE_NAME} <= root_files
    assert not [p for p in root_files if p[0].isdigit()]
    with HarvestState.open(tmp_path / STATE_FILE_NAME) as state:
        assert state.done_runs(cloud.runs) == set(cloud.runs)
        for run_id in cloud.runs:
            recorded = state.get(run_id)
            assert recorded is not None and recorded.path is not None
            assert Path(recorded.path).parent == tmp_path / day_of(cloud, run_id)


async def test_a_rerun_with_discovery_makes_listing_requests_only(tmp_path: Path) -> None:
    cloud = generate_cloud(runs=4, metrics=5, points=5, projects=1, tests=1)
    async with Simulator(cloud) as sim:
        args = ("--out", str(tmp_path), "--test", str(FIRST_TEST_ID), "--layout", "date")
        assert (await run_cli(sim, "harvest", *args)).returncode == 0
        assert not sim.requests_for("run")  # discovery gave every run object
        assert_exact_dated(cloud, tmp_path, with_run=True)
        sim.log.clear()
        assert (await run_cli(sim, "harvest", *args)).returncode == 0
        assert {r.endpoint for r in sim.log} <= DISCOVERY_ENDPOINTS
        # Runs given by id without their objects: found in the date tree, no request at all.
        sim.log.clear()
        by_id = [arg for run_id in sorted(cloud.runs) for arg in ("--run", str(run_id))]
        done = await run_cli(sim, "harvest", "--out", str(tmp_path), *by_id, "--layout", "date")
        assert done.returncode == 0 and b"4 already done" in done.stderr
        assert not list(sim.log)
    assert_exact_dated(cloud, tmp_path, with_run=True)


@pytest.mark.parametrize(("first", "then"), [("flat", "date"), ("date", "flat")])
async def test_switching_layouts_neither_refetches_nor_duplicates_a_run(
    tmp_path: Path, first: str, then: str
) -> None:
    cloud = generate_cloud(runs=3, metrics=5, points=5, projects=1, tests=1)
    async with Simulator(cloud) as sim:
        one = sorted(cloud.runs)[:1]
        await harvest_job(settings_for(sim, tmp_path, layout=first), [RunTarget(r) for r in one])
        before = data_files(tmp_path)
        sim.log.clear()
        # By id (no run object: a date job would ask for it) and by discovery's objects.
        settings = settings_for(sim, tmp_path, layout=then)
        await harvest_job(settings, [RunTarget(r) for r in one])
        assert not list(sim.log)
        with_objects = [RunTarget(r, cloud.runs[r].run) for r in sorted(cloud.runs)]
        result = await harvest_job(settings, with_objects)
        assert result.skipped == one
        assert {r.run_id for r in sim.requests_for("metrics")} == set(cloud.runs) - set(one)
    after = data_files(tmp_path)  # each run once (data_files fails on a second copy)
    assert sorted(after) == sorted(cloud.runs)
    assert after[one[0]] == before[one[0]]  # the archived run stays where it was
    for run_id in set(cloud.runs) - set(one):
        want = tmp_path / day_of(cloud, run_id) if then == "date" else tmp_path
        assert after[run_id].parent == want
    assert intact(list(verify(tmp_path)))


async def test_force_with_another_layout_moves_the_run_and_leaves_no_copy(
    tmp_path: Path,
) -> None:
    cloud = generate_cloud(runs=2, metrics=5, points=5)
    async with Simulator(cloud) as sim:
        targets = [RunTarget(r) for r in sorted(cloud.runs)]
        await harvest_job(settings_for(sim, tmp_path, layout="date"), targets)
        await harvest_job(settings_for(sim, tmp_path, layout="flat", force=True), targets)
    files = data_files(tmp_path)
    assert {path.parent for path in files.values()} == {tmp_path}
    assert [p.name for p in tmp_path.rglob("*.manifest.json")] == [
        p.name for p in tmp_path.glob("*.manifest.json")
    ]
    rows = list(verify(tmp_path))
    assert intact(rows) and len(rows) == 2 * len(cloud.runs)


SLOW = FaultPlan(p_delay=1.0, delay_seconds=0.2, fault_endpoints=frozenset({"overview"}))


async def test_sigkill_mid_job_then_a_rerun_archives_every_record_exactly_once(
    tmp_path: Path,
) -> None:
    cloud = generate_cloud(runs=8, metrics=10, points=5)
    runs = [arg for run_id in sorted(cloud.runs) for arg in ("--run", str(run_id))]
    async with Simulator(cloud, faults=SLOW) as sim:
        command = [sys.executable, "-m", "harvester", *cli_args(sim, tmp_path, *runs),
                   "--layout", "date", "--runs-in-flight", "2"]  # fmt: skip
        process = await anyio.open_process(command)
        async with process:
            with anyio.fail_after(20):
                while len(data_files(tmp_path)) < 2:
                    assert process.returncode is None, "the harvester ended before it was killed"
                    await anyio.sleep(0.02)
            process.send_signal(signal.SIGKILL)
            await process.wait()
        done_before = set(data_files(tmp_path))
        assert 2 <= len(done_before) < len(cloud.runs)
        sim.log.clear()
        rerun = await anyio.run_process(command, check=False)
        assert rerun.returncode == 0, rerun.stderr.decode()
        fetched_again = {r.run_id for r in sim.requests_for("metrics")}
    assert fetched_again == set(cloud.runs) - done_before
    assert_exact_dated(cloud, tmp_path, with_run=True)
    assert intact(list(verify(tmp_path)))


async def test_verify_walks_the_date_tree_and_names_damage_by_its_path(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    targets = [RunTarget(r, cloud.runs[r].run) for r in sorted(cloud.runs)]
    await harvest_job(settings_for(simulator, tmp_path, layout="date"), targets)
    assert main(["verify", str(tmp_path), "--output", "json"]) == 0
    rows = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2 * len(cloud.runs) and all(row["status"] == "ok" for row in rows)
    first, second, *_ = sorted(cloud.runs)
    day = tmp_path / day_of(cloud, first)
    # A crashed writer's temporary file is the harvester's own, not an orphan.
    (day / f".{first}.abc123.ndjson.partial").write_bytes(b"{}\n")
    (day / "notes.txt").write_text("mine")
    damaged = day / f"{first}.ndjson"
    data = bytearray(damaged.read_bytes())
    data[10] ^= 0x01
    damaged.write_bytes(bytes(data))
    (tmp_path / day_of(cloud, second) / f"{second}.ndjson").unlink()
    assert main(["verify", str(tmp_path), "--output", "json"]) == 1
    rows = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    problems = {row["file"]: row["status"] for row in rows if row["status"] != "ok"}
    assert problems == {
        f"{day_of(cloud, first)}/{first}.ndjson": "corrupt",
        f"{day_of(cloud, first)}/notes.txt": "orphan",
        f"{day_of(cloud, second)}/{second}.ndjson": "missing",
    }


async def test_the_next_job_removes_a_crashed_writers_temporary_file_in_a_day_directory(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    run_id = min(cloud.runs)
    day = tmp_path / day_of(cloud, run_id)
    day.mkdir(parents=True)
    leftover = day / f".{run_id}.k1ll3d.ndjson.partial"
    leftover.write_bytes(b'{"type":"metric"')
    await harvest_job(settings_for(simulator, tmp_path, layout="date"), [RunTarget(run_id)])
    assert not leftover.exists()
    assert_exact_dated_one(cloud, tmp_path, run_id)


def assert_exact_dated_one(cloud: SimCloud, out: Path, run_id: int) -> None:
    files = data_files(out)
    assert list(files) == [run_id] and files[run_id].parent == out / day_of(cloud, run_id)


async def test_status_and_report_read_a_date_layout_archive(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "archive"
    targets = [RunTarget(r, cloud.runs[r].run) for r in sorted(cloud.runs)]
    await harvest_job(settings_for(simulator, out, layout="date", compress="zstd"), targets)
    assert main(["status", "--out", str(out), "--output", "json"]) == 0
    assert orjson.loads(capsys.readouterr().out)["counts"] == {"done": len(cloud.runs)}
    archived = open_archive(out)
    assert [run.run_id for run in archived] == sorted(cloud.runs)
    assert all(run.path.parent == out / day_of(cloud, run.run_id) for run in archived)
    page = tmp_path / "report.html"
    last = max(cloud.runs)
    assert main(["report", str(out), "--run", str(last), "--out", str(page)]) == 0
    assert f"k6 run {last}" in page.read_text()


async def test_csv_exports_go_beside_their_run_in_its_day_directory(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    targets = [RunTarget(r, cloud.runs[r].run) for r in sorted(cloud.runs)]
    settings = settings_for(simulator, tmp_path, layout="date", export_csv=True)
    result = await harvest_job(settings, targets)
    assert not result.report.failed
    for run_id in cloud.runs:
        day = tmp_path / day_of(cloud, run_id)
        assert [p.name for p in day.glob(f"{run_id}.csv*")], run_id
        names = [
            e["name"] for e in orjson.loads((day / f"{run_id}.manifest.json").read_bytes())["files"]
        ]
        assert any(name.startswith(f"{run_id}.csv") for name in names)
    assert not list(tmp_path.glob("*.csv*"))
    assert intact(list(verify(tmp_path)))
    simulator.log.clear()
    again = await harvest_job(settings, targets)  # the CSV is found beside the run
    assert again.skipped == sorted(cloud.runs) and not list(simulator.log)


async def test_a_run_object_without_a_date_goes_to_undated(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    run_id = min(cloud.runs)
    undated = {**cloud.runs[run_id].run, "created": None}
    settings = settings_for(simulator, tmp_path, layout="date")
    await harvest_job(settings, [RunTarget(run_id, undated)])
    assert data_files(tmp_path)[run_id].parent == tmp_path / UNDATED
    simulator.log.clear()
    # Found there again, by its id alone or with the same object.
    for target in (RunTarget(run_id), RunTarget(run_id, undated)):
        assert (await harvest_job(settings, [target])).skipped == [run_id]
    assert not list(simulator.log)
    assert intact(list(verify(tmp_path)))


async def test_a_run_that_fails_before_its_date_is_known_is_recorded_and_leaves_nothing(
    simulator: Simulator, tmp_path: Path
) -> None:
    settings = settings_for(simulator, tmp_path, layout="date", max_attempts=1)
    result = await harvest_job(settings, [RunTarget(999)])  # the API knows no run 999
    [failed] = result.report.failed
    assert failed.run_id == 999 and failed.reason
    with HarvestState.open(tmp_path / STATE_FILE_NAME) as state:
        recorded = state.get(999)
        assert recorded is not None and recorded.status == "failed"
    assert not [p for p in tmp_path.rglob("*") if p.name[0] in ".0123456789" and p.is_file()
                and not p.name.startswith(".harvester")]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--layout", "daily"], {}, "--layout"),
        ([], {"HARVESTER_LAYOUT": "weekly"}, "HARVESTER_LAYOUT"),
        (["--out", "-", "--layout", "date"], {}, "--layout date places files under --out DIR"),
    ],
)
def test_a_bad_layout_is_one_line_and_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    base = ["harvest", "--token", "t", "--base-url", "http://127.0.0.1:9", "--run", "1"]
    out = [] if "--out" in args else ["--out", str(tmp_path)]
    assert main([*base, *out, *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_a_bad_layout_in_the_config_file_names_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "h.toml"
    config.write_text('[harvest]\nlayout = "yearly"\n')
    args = ["harvest", "--token", "t", "--run", "1", "--out", str(tmp_path), "--config"]
    assert main([*args, str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "layout" in err and "yearly" in err


def test_object_keys_follow_the_layout_and_either_layout_counts_as_archived(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("aiobotocore")
    from tests.s3_helpers import CREDENTIALS, moto_server

    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    cloud = generate_cloud(runs=2, metrics=5, points=5)
    runs = [arg for run_id in sorted(cloud.runs) for arg in ("--run", str(run_id))]
    with moto_server() as s3, anyio.from_thread.start_blocking_portal() as portal:
        s3.client().create_bucket(Bucket="archive")
        with portal.wrap_async_context_manager(Simulator(cloud, token="tok")) as sim:
            state = str(tmp_path / "s.sqlite")
            args = cli_args(sim, "s3://archive/nightly/", "--s3-endpoint-url", s3.url, *runs)
            assert main([*args, "--state", state, "--layout", "date"]) == 0
            want = {f"nightly/{day_of(cloud, r)}/{r}.ndjson" for r in cloud.runs}
            assert set(s3.runs("archive")) == want
            sim.log.clear()
            capfd.readouterr()
            other_state = str(tmp_path / "s2.sqlite")  # the objects are the truth
            assert main([*args, "--state", other_state, "--layout", "flat"]) == 0
            assert "2 already done" in capfd.readouterr().err and not list(sim.log)
            assert set(s3.runs("archive")) == want


async def test_the_worker_places_runs_by_date_and_asks_for_each_run_once(tmp_path: Path) -> None:
    from harvester.worker import Worker
    from tests.process_helpers import wait_for
    from tests.test_worker import make_worker, running, worker_settings

    cloud = generate_cloud(runs=3, metrics=3, points=2, projects=1, tests=2)
    async with Simulator(cloud) as sim:
        worker: Worker
        worker, _log = make_worker(worker_settings(sim, tmp_path, layout="date"))
        async with running(worker):
            await wait_for(lambda: len(data_files(tmp_path)) == len(cloud.runs))
            cycles = worker.status.cycles
            await wait_for(lambda: worker.status.cycles >= cycles + 2)
        assert Counter(r.run_id for r in sim.requests_for("metrics")) == Counter(list(cloud.runs))
    assert_exact_dated(cloud, tmp_path, with_run=True)


async def test_runs_given_by_id_are_found_where_the_state_recorded_them_without_a_walk(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(simulator, tmp_path, layout="date")
    targets = [RunTarget(r) for r in sorted(cloud.runs)]
    await harvest_job(settings, targets)
    walks: list[Path] = []
    real_walk = layout.archived_dirs

    def counted(root: Path) -> dict[int, Path]:
        walks.append(root)
        return real_walk(root)

    monkeypatch.setattr(layout, "archived_dirs", counted)
    simulator.log.clear()
    assert (await harvest_job(settings, targets)).skipped == sorted(cloud.runs)
    assert not walks and not list(simulator.log)
    # Without the state the tree is walked, once for the whole job.
    (tmp_path / STATE_FILE_NAME).unlink()
    assert (await harvest_job(settings, targets)).skipped == sorted(cloud.runs)
    assert walks == [tmp_path] and not list(simulator.log)


async def test_v6_runs_given_by_id_are_dated_with_one_request_for_their_object(
    tmp_path: Path,
) -> None:
    cloud = generate_cloud(runs=2, metrics=3, points=4)
    async with Simulator(cloud) as sim:
        settings = settings_for(
            sim, tmp_path, api="v6", stack_id=sim.stack_id, step=3, layout="date"
        )
        result = await harvest_job(settings, [RunTarget(r) for r in sorted(cloud.runs)])
        assert not result.report.failed
        asked = Counter(r.run_id for r in sim.requests_for("v6_run"))
    assert asked == Counter(list(cloud.runs))  # placed by it, then harvested with it
    files = data_files(tmp_path)
    assert sorted(files) == sorted(cloud.runs)
    for run_id, path in files.items():
        assert path.parent == tmp_path / day_of(cloud, run_id)
    assert intact(list(verify(tmp_path)))


async def test_harvester_runs_marks_runs_archived_in_the_date_layout(tmp_path: Path) -> None:
    cloud = generate_cloud(runs=3, metrics=3, points=2, projects=1, tests=1)
    async with Simulator(cloud) as sim:
        first = min(cloud.runs)
        await harvest_job(settings_for(sim, tmp_path, layout="date"), [RunTarget(first)])
        args = ("--test", str(FIRST_TEST_ID), "--out", str(tmp_path), "--output", "json")
        listed = await run_cli(sim, "runs", *args)
    assert listed.returncode == 0, listed.stderr.decode()
    rows = {
        row["test_run_id"]: row["action"] for row in map(orjson.loads, listed.stdout.splitlines())
    }
    assert rows == {r: "skip" if r == first else "harvest" for r in cloud.runs}
