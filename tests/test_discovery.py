"""Discovery (issue 4): paging, status filtering, the created-date window, incremental
harvests and `harvester runs`, against the simulator on loopback."""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from harvester.api import JsonObject
from harvester.cli import main
from harvester.config import Settings, load_settings
from harvester.discovery import (
    Discovery,
    Selection,
    discover_runs,
    parse_duration,
    parse_when,
    with_explicit,
)
from harvester.errors import ConfigError
from harvester.layout import parse_created
from harvester.paging import Page, read_pages
from harvester.runstatus import INCOMPLETE_REASON, RUN_STATUS_NAMES, PendingRun, classify
from harvester.scheduler import RunTarget
from harvester.selection import by_run_id, with_ids
from harvester.simulator.cloud import SimCloud
from harvester.simulator.faults import FaultPlan
from harvester.simulator.generated import FIRST_PROJECT_ID, generate_cloud
from harvester.simulator.server import Simulator
from harvester.state import STATE_FILE_NAME, HarvestState
from harvester.tables import runs_table
from tests.harvest_helpers import parse_lines, read_dir, settings_for
from tests.process_helpers import run_cli

PROJECT_A, PROJECT_B = FIRST_PROJECT_ID, FIRST_PROJECT_ID + 1
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
DATA_ENDPOINTS = ("metrics", "series", "thresholds", "overview")
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
def cloud() -> SimCloud:
    """17 runs over 5 tests in 2 projects: 12 harvestable (some aborted), 2 with a
    processing error, 3 still running or processing."""
    return generate_cloud(
        runs=12, metrics=3, points=2, pending_runs=3, processing_error_runs=2, projects=2, tests=5
    )


def ready(run: JsonObject) -> bool:
    return 3 <= run["run_status"] <= 9 and run["processing_status"] in (2, 3)


def count_by(cloud: SimCloud, key: str, items: list[JsonObject]) -> Counter[int]:
    return Counter(int(item[key]) for item in items)


# --- paging ------------------------------------------------------------------------------


@pytest.mark.parametrize("page_size", [1, 2, 3, 4, 50])
async def test_paging_reads_every_run_in_the_fewest_pages(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path, page_size: int
) -> None:
    settings = settings_for(simulator, tmp_path, projects=[PROJECT_A, PROJECT_B])
    selection = Selection(settings.projects, page_size=page_size)
    found = await discover_runs(settings, selection)
    assert {t.run_id for t in found.targets} | {p.run_id for p in found.pending} == set(cloud.runs)
    tests_per_project = count_by(cloud, "project_id", list(cloud.tests.values()))
    runs_per_test = count_by(cloud, "test_id", cloud.runs_of(None))
    expected_tests = sum(math.ceil(n / page_size) for n in tests_per_project.values())
    expected_runs = sum(math.ceil(n / page_size) for n in runs_per_test.values())
    assert len(simulator.requests_for("tests")) == expected_tests
    assert len(simulator.requests_for("runs")) == expected_runs
    assert found.requests == len(simulator.log) == expected_tests + expected_runs
    # Every page asked for is one the server has: no request past the end.
    assert all(r.status == 200 for r in simulator.log)


async def test_a_server_capping_the_page_size_still_yields_every_run(tmp_path: Path) -> None:
    cloud = generate_cloud(runs=130, metrics=1, points=1, projects=1, tests=1)
    async with Simulator(cloud) as sim:  # serves at most 100 a page
        settings = settings_for(sim, tmp_path, projects=[PROJECT_A])
        found = await discover_runs(settings, Selection(settings.projects, page_size=150))
        assert len(found.targets) == 130
        assert len(sim.requests_for("runs")) == 2


async def test_read_pages_stops_on_a_short_page_without_a_count_and_on_a_repeated_page() -> None:
    items = [{"id": i, "created": f"2026-01-0{i + 1}"} for i in range(7)]  # (rows as listed)
    asked: list[int] = []

    async def no_count(page: int, size: int) -> Page:
        asked.append(page)
        return Page(items[(page - 1) * size : page * size], None, "tests /t")

    assert await read_pages(no_count, 3) == items
    assert asked == [1, 2, 3]

    async def ignores_page(page: int, size: int) -> Page:
        asked.append(page)
        return Page(items[:size], 100, "tests /t")  # claims more than it will ever give

    asked.clear()
    assert await read_pages(ignores_page, 3) == items[:3]
    assert asked == [1, 2]


@pytest.mark.parametrize("item", [{"name": "x"}, {"id": [1]}, {"id": {"a": 1}}, {"id": None}])
async def test_read_pages_of_items_without_a_usable_id_ends_and_lists_each(
    item: JsonObject,
) -> None:
    """Items without an id were keyed by their place, so a server ignoring `page` was
    asked for ever (here: until 50 pages); a list or object id was an internal error
    (TypeError: unhashable), which ended the whole job. Items alike on a page are each
    kept, for discovery to name each as no run id."""
    asked: list[int] = []

    async def ignores_page(page: int, size: int) -> Page:
        asked.append(page)
        assert len(asked) <= 50, "asked for ever"
        return Page([item, {**item, "n": 1}, item][:size], None, "tests /t")

    assert await read_pages(ignores_page, 3) == [item, {**item, "n": 1}, item]
    assert asked == [1, 2]


async def test_test_selectors_list_runs_without_listing_tests(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    test_id = min(cloud.tests)
    settings = settings_for(simulator, tmp_path, tests=[test_id])
    found = await discover_runs(settings, Selection.from_settings(settings))
    expected = {r["id"] for r in cloud.runs_of(test_id)}
    assert {t.run_id for t in found.targets} | {p.run_id for p in found.pending} == expected
    assert simulator.requests_for("tests") == []
    assert {r.endpoint for r in simulator.log} == {"runs"}


# --- status ------------------------------------------------------------------------------


@pytest.mark.parametrize("run_status", range(-2, 10))
@pytest.mark.parametrize("processing_status", range(4))
def test_only_final_and_processed_runs_are_harvested(
    run_status: int, processing_status: int
) -> None:
    run = {"id": 7, "run_status": run_status, "processing_status": processing_status}
    verdict = classify(run)
    if run_status >= 3 and processing_status == 2:
        assert verdict == RunTarget(7, run=run)
    elif run_status >= 3 and processing_status == 3:
        assert verdict == RunTarget(7, run=run, incomplete_reason=INCOMPLETE_REASON)
    else:
        assert isinstance(verdict, PendingRun)
        assert ("run_status" if run_status < 3 else "processing_status") in verdict.reason


async def test_discovered_targets_carry_their_run_and_pending_runs_are_reported(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    settings = settings_for(simulator, tmp_path, projects=[PROJECT_A, PROJECT_B])
    found = await discover_runs(settings, Selection.from_settings(settings))
    runs = cloud.runs_of(None)
    assert [t.run_id for t in found.targets] == [r["id"] for r in runs if ready(r)]
    assert [p.run_id for p in found.pending] == [r["id"] for r in runs if not ready(r)]
    assert len(found.pending) == 3
    for target in found.targets:
        assert target.run == cloud.runs[target.run_id].run
        errored = cloud.runs[target.run_id].run["processing_status"] == 3
        assert (target.incomplete_reason is not None) == errored
    assert sum(t.incomplete_reason is not None for t in found.targets) == 2


def test_explicit_runs_join_the_discovered_ones_unless_discovery_says_wait() -> None:
    run = {"id": 1, "run_status": 3, "processing_status": 2}
    found = Discovery([RunTarget(1, run=run)], [PendingRun(2, "running", {"id": 2})])
    assert with_explicit(found, [1, 2, 3, 3]) == [RunTarget(1, run=run), RunTarget(3)]


# --- since / until -----------------------------------------------------------------------


def test_dates_and_ages_parse_and_bad_ones_say_what_to_write() -> None:
    assert parse_when("2026-01-31", "--since", now=NOW) == datetime(2026, 1, 31, tzinfo=UTC)
    assert parse_when("2026-01-31T10:30:00Z", "--since", now=NOW) == datetime(
        2026, 1, 31, 10, 30, tzinfo=UTC
    )
    assert parse_when("2026-01-31T10:30:00+02:00", "--since", now=NOW) == datetime(
        2026, 1, 31, 8, 30, tzinfo=UTC
    )
    assert parse_when("7d", "--since", now=NOW) == NOW - timedelta(days=7)
    assert parse_when("12h", "--since", now=NOW) == NOW - timedelta(hours=12)
    assert parse_when("30m", "--until", now=NOW) == NOW - timedelta(minutes=30)
    assert parse_duration("5m", "--interval") == 300
    assert parse_duration("1.5s", "--interval") == 1.5
    with pytest.raises(ConfigError, match=r"--since 'yesterday-ish' is not a date: use an ISO"):
        parse_when("yesterday-ish", "--since", now=NOW)
    with pytest.raises(ConfigError, match="is not a duration"):
        parse_duration("soon", "--interval")
    with pytest.raises(ConfigError, match="longer than zero"):
        parse_duration("0s", "--interval")


def test_since_must_come_before_until() -> None:
    settings = settings_for_args(since="2026-02-01", until="2026-01-01")
    with pytest.raises(ConfigError, match="must be before --until"):
        Selection.from_settings(settings, now=NOW)


def settings_for_args(**flags: str) -> Settings:
    return load_settings({"projects": [1], **flags}, environ={})


async def test_since_and_until_select_runs_created_in_the_half_open_window(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    created = sorted(parse_created(r) or NOW for r in cloud.runs_of(None))
    since, until = created[3], created[9]
    settings = settings_for(
        simulator,
        tmp_path,
        projects=[PROJECT_A, PROJECT_B],
        since=since.isoformat(),
        until=until.isoformat(),
    )
    found = await discover_runs(settings, Selection.from_settings(settings))
    inside = {r["id"] for r in cloud.runs_of(None) if since <= (parse_created(r) or NOW) < until}
    assert len(inside) == 6
    assert {t.run_id for t in found.targets} | {p.run_id for p in found.pending} == inside
    assert found.outside_window == len(cloud.runs) - 6


def test_a_bad_since_is_a_one_line_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["harvest", "--project", "1", "--token", "t", "--since", "yesterday-ish"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "--since 'yesterday-ish' is not a date" in err


# --- the CLI: incremental harvests and `harvester runs` ------------------------------------


async def test_harvesting_twice_makes_no_data_requests_the_second_time(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    args = ("--project", str(PROJECT_A), "--project", str(PROJECT_B), "--out", str(tmp_path))
    first = await run_cli(simulator, "harvest", *args)
    assert first.returncode == 0, first.stderr.decode()
    files = read_dir(tmp_path)
    assert sorted(files) == [r["id"] for r in cloud.runs_of(None) if ready(r)]
    for run_id, records in files.items():
        assert records[0] == {"type": "run", "test_run_id": run_id, "data": cloud.runs[run_id].run}
        summary = records[-1]["data"]
        assert summary["complete"] is (cloud.runs[run_id].run["processing_status"] == 2)
    simulator.log.clear()
    second = await run_cli(simulator, "harvest", *args)
    assert second.returncode == 0, second.stderr.decode()
    assert simulator.requests_for(*DATA_ENDPOINTS) == []
    assert {r.endpoint for r in simulator.log} == {"tests", "runs"}
    summary_line = parse_lines(second.stderr)[-1]
    assert summary_line["event"] == "summary"
    assert summary_line["runs_skipped"] == len(files) and summary_line["runs_done"] == 0


async def test_explicit_runs_alone_make_only_data_requests(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    result = await run_cli(simulator, "harvest", "--run", "100001", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr.decode()
    assert {r.endpoint for r in simulator.log} == set(DATA_ENDPOINTS)
    assert read_dir(tmp_path)[100001][0]["type"] == "metric"  # no run object without discovery


async def test_runs_lists_what_a_harvest_would_do_as_ndjson_without_harvesting(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    archived = min(cloud.runs)
    (tmp_path / f"{archived}.ndjson").write_bytes(b"")
    result = await run_cli(
        simulator, "runs", "--project", str(PROJECT_A), "--page-size", "2", "--out", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr.decode()
    rows = [orjson.loads(line) for line in result.stdout.splitlines()]
    runs = [r for r in cloud.runs_of(None) if r["project_id"] == PROJECT_A]
    assert [row["test_run_id"] for row in rows] == [r["id"] for r in runs]
    actions = {row["test_run_id"]: row["action"] for row in rows}
    for run in runs:
        expected = "wait" if not ready(run) else "skip" if run["id"] == archived else "harvest"
        assert actions[run["id"]] == expected
    assert simulator.requests_for(*DATA_ENDPOINTS) == []
    assert parse_lines(result.stderr)[-1]["event"] == "discovered"


async def test_runs_into_an_archive_not_made_yet_would_harvest_every_ready_run(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    new = tmp_path / "archive"  # what a first harvest would do, asked before it
    result = await run_cli(simulator, "runs", "--project", str(PROJECT_A), "--out", str(new))
    assert result.returncode == 0, result.stderr.decode()
    rows = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert rows and {row["action"] for row in rows if row["reason"] == ""} == {"harvest"}
    assert not new.exists()  # only listed
    a_file = tmp_path / "a-file"
    a_file.write_bytes(b"")
    simulator.log.clear()
    refused = await run_cli(simulator, "runs", "--project", str(PROJECT_A), "--out", str(a_file))
    assert refused.returncode == 2 and not simulator.log  # before any request
    assert (
        refused.stderr.decode()
        == f"harvester: --out {a_file} is a file; give the directory a harvest writes\n"
    )


async def test_runs_shows_words_test_names_and_results_as_csv_and_in_80_columns(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    result = await run_cli(simulator, "runs", "--project", str(PROJECT_A), "--output", "csv")
    assert result.returncode == 0, result.stderr.decode()
    rows = list(csv.DictReader(io.StringIO(result.stdout.decode())))
    names = {t["id"]: t["name"] for t in cloud.tests_of(PROJECT_A)}
    runs = {r["id"]: r for r in cloud.runs_of(None) if r["project_id"] == PROJECT_A}
    assert [int(row["test_run_id"]) for row in rows] == sorted(runs)
    for row in rows:
        run = runs[int(row["test_run_id"])]
        assert row["test_name"] == names[run["test_id"]]  # from the tests listing
        assert row["status"].split(",")[0] in RUN_STATUS_NAMES.values()
        if 3 <= run["run_status"] <= 9:  # over: its thresholds passed or failed
            assert row["result"] == ("failed" if run["result_status"] else "passed")
        else:
            assert row["result"] == "" and row["action"] == "wait"
    assert {row["result"] for row in rows} >= {"passed", "failed"}
    assert any(row["status"] == "finished, processing" for row in rows)
    stream = io.StringIO()
    runs_table(stream, rows, width=80)
    lines = stream.getvalue().splitlines()
    assert all(len(line) <= 80 for line in lines)
    text = stream.getvalue()
    for word in ("passed", "failed", "finished", "harvest", "wait"):
        assert word in text
    assert "…" not in text  # long cells wrap, they are not cut
    assert all(name.split()[0] in text for name in names.values())


# --- selectors the API does not know -------------------------------------------------------


async def test_an_unknown_project_or_test_is_named_and_the_job_exits_1(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    args = ("--project", "999", "--test", "888", "--project", str(PROJECT_A),
            "--out", str(tmp_path))  # fmt: skip
    result = await run_cli(simulator, "harvest", *args)
    assert result.returncode == 1, result.stderr.decode()
    named = [e for e in parse_lines(result.stderr) if e["event"] == "not_found"]
    # A warning, not info: each makes the exit status 1.
    assert {e["level"] for e in named} == {"warning"}
    said = {e["message"] for e in named}
    assert said == {
        "project 999 does not exist "
        "(GET /loadtests/v2/tests?project_id=999&page=1&page_size=50 answered 404)",
        "test 888 does not exist (GET /loadtests/v2/runs?test_id=888&page=1&page_size=50 "
        "answered 404)",
    }
    # The simulator answers an unknown id with 404, like the API; the rest is harvested.
    refused = {(r.endpoint, r.status) for r in simulator.log if r.status != 200}
    assert refused == {("tests", 404), ("runs", 404)}
    in_a = [r["id"] for r in cloud.runs_of(None) if r["project_id"] == PROJECT_A and ready(r)]
    assert sorted(read_dir(tmp_path)) == in_a
    listed = await run_cli(simulator, "runs", "--project", "999")
    assert listed.returncode == 1 and b"project 999 does not exist" in listed.stderr


async def test_a_project_without_tests_is_suspect_and_a_test_without_runs_is_fine(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    cloud.add_project(4242, next(iter(cloud.organizations)))
    cloud.add_test(5151, PROJECT_A)
    empty_project = await run_cli(simulator, "harvest", "--project", "4242", "--out", str(tmp_path))
    assert empty_project.returncode == 1
    assert b"project 4242 has no tests: is the id right?" in empty_project.stderr
    simulator.log.clear()
    new_test = await run_cli(simulator, "harvest", "--test", "5151", "--out", str(tmp_path))
    assert new_test.returncode == 0, new_test.stderr.decode()
    assert [(r.endpoint, r.status) for r in simulator.log] == [("runs", 200), ("test", 200)]


async def test_an_unknown_test_answered_with_an_empty_list_is_found_out(tmp_path: Path) -> None:
    """An API that lists no runs for an unknown test: the test itself answers 404."""

    async def no_runs(request: web.Request) -> web.Response:
        return web.json_response({"k6-runs": [], "meta": {"count": 0}})

    async def no_test(request: web.Request) -> web.Response:
        return web.json_response({"detail": "Not found."}, status=404)

    app = web.Application()
    app.router.add_get("/loadtests/v2/runs", no_runs)
    app.router.add_get("/loadtests/v2/tests/{id}", no_test)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        settings = load_settings(
            {"base_url": f"http://127.0.0.1:{port}", "token": "t", "tests": [888]}, environ={}
        )
        found = await discover_runs(settings, Selection.from_settings(settings))
    finally:
        await runner.cleanup()
    assert found.not_found == ["test 888 does not exist (GET /loadtests/v2/tests/888 answered 404)"]


# --- runs left waiting ------------------------------------------------------------------------


async def test_a_run_waiting_in_one_job_is_harvested_by_a_later_job_outside_its_window(
    tmp_path: Path,
) -> None:
    cloud = generate_cloud(runs=2, metrics=2, points=2, pending_runs=1, projects=2, tests=2)
    waiting = max(cloud.runs)
    run = cloud.runs[waiting].run
    project, other = run["project_id"], ({PROJECT_A, PROJECT_B} - {run["project_id"]}).pop()
    async with Simulator(cloud) as sim:
        first = await run_cli(sim, "harvest", "--project", str(project), "--out", str(tmp_path))
        assert first.returncode == 0, first.stderr.decode()
        with HarvestState.open(tmp_path / STATE_FILE_NAME) as state:
            [remembered] = state.waiting([project], [])
        assert remembered.run_id == waiting and remembered.selector == f"project {project}"
        assert remembered.test_id == run["test_id"] and "not" in remembered.reason
        cloud.update_run(waiting, run_status=3, processing_status=2)  # done, the next night
        after = (parse_created(run) or NOW) + timedelta(seconds=1)
        sim.log.clear()
        # Other selectors do not ask about it.
        args = ("--out", str(tmp_path), "--since", after.isoformat())
        assert (await run_cli(sim, "harvest", "--project", str(other), *args)).returncode == 0
        assert sim.requests_for("run") == []
        second = await run_cli(sim, "harvest", "--project", str(project), *args)
        assert second.returncode == 0, second.stderr.decode()
        assert [r.path for r in sim.requests_for("run")] == [f"/loadtests/v2/runs/{waiting}"]
    assert read_dir(tmp_path)[waiting][0] == {"type": "run", "test_run_id": waiting, "data": run}
    with HarvestState.open(tmp_path / STATE_FILE_NAME) as state:
        assert state.waiting([project], []) == []
        assert state.done_runs([waiting]) == {waiting}


async def test_a_waiting_run_that_cannot_be_asked_stays_and_one_deleted_is_forgotten(
    tmp_path: Path,
) -> None:
    cloud = generate_cloud(runs=1, metrics=1, points=1, pending_runs=2, projects=1, tests=1)
    first, second = sorted(cloud.runs)[-2:]
    async with Simulator(cloud) as sim:
        settings = settings_for(sim, tmp_path, projects=[PROJECT_A], max_attempts=1)
        later = Selection(settings.projects, since=NOW)  # every run is outside the window
        with HarvestState.open(tmp_path / STATE_FILE_NAME) as state:
            found = await discover_runs(settings, Selection(settings.projects), state=state)
            assert [p.run_id for p in found.pending] == [first, second]
            del cloud.runs[first]  # deleted meanwhile
            sim.faults = FaultPlan(p_500=1.0, fault_endpoints=frozenset({"run"}))
            found = await discover_runs(settings, later, state=state)
            assert found.rechecked == 2 and found.targets == [] and found.outside_window == 2
            [kept] = found.pending
            assert kept.run_id == second and kept.reason.startswith("could not ask")
            assert [w.run_id for w in state.waiting([PROJECT_A], [])] == [second]
            assert state.get(first) is None


@pytest.mark.parametrize("odd_id", [2**63 + 5, 0])
async def test_a_listed_run_whose_id_is_no_run_id_is_named_and_the_rest_harvested(
    tmp_path: Path, odd_id: int
) -> None:
    """An id past int64 (no SQLite INTEGER holds it) ended the whole job as an internal
    error; 0 was archived as `0.ndjson`. Now: one line, the other runs harvested, exit 1."""
    cloud = generate_cloud(runs=2, metrics=5, points=5, tests=1, projects=1)
    first, second = sorted(cloud.runs)
    run = cloud.runs.pop(first)
    run.run["id"] = odd_id
    cloud.runs[odd_id] = run
    for test in cloud.tests.values():
        test["test_run_ids"] = [odd_id if r == first else r for r in test["test_run_ids"]]
    async with Simulator(cloud) as sim:
        done = await run_cli(sim, "harvest", "--all-projects", "--out", str(tmp_path))
    err = done.stderr.decode()
    assert done.returncode == 1, err
    assert f"whose id is not a run id (a whole number from 1 to {2**63 - 1}): {odd_id}" in err
    assert "internal error" not in err and "Traceback" not in err
    assert set(read_dir(tmp_path)) == {second}


def test_both_apis_listings_keep_only_run_ids_and_name_the_others() -> None:
    """`by_run_id`, which v2's and v6's discovery take their runs through."""
    found = Discovery()
    listed: list[JsonObject] = [{"id": 5}, {"id": True}, {"id": 1.5}, {"id": 2**63}, {"id": -1},
                                {"id": 5}, {}]  # fmt: skip
    assert by_run_id(listed, found) == {5: {"id": 5}}
    assert found.not_found == [
        f"the API listed 5 runs whose id is not a run id (a whole number from 1 to {2**63 - 1}): "
        f"True, 1.5, {2**63}, -1, None; skipped"
    ]


def test_listed_tests_keep_only_test_ids_and_name_the_others() -> None:
    """`with_ids`, which v2's and v6's discovery take the tests of a project through."""
    not_found: list[str] = []
    listed: list[JsonObject] = [{"id": 5}, {"id": "6"}, {"id": True}, {"id": -1},
                                {"id": 2**63}, {}]  # fmt: skip
    assert with_ids(listed, "test", not_found) == [{"id": 5}]
    assert not_found == [
        f"the API listed 5 tests whose id is not a test id (a whole number from 1 to "
        f"{2**63 - 1}): '6', True, -1, {2**63}, None; skipped"
    ]


@pytest.mark.parametrize("api", ["v2", "v6"])
async def test_a_listed_test_whose_id_is_no_test_id_is_named_and_the_rest_harvested(
    tmp_path: Path, api: str
) -> None:
    """A test listed with its id as text ("720001") was skipped in silence: its runs never
    harvested, exit 0. Now it is named in one line, the other test's runs are harvested,
    and the job exits 1, as for a listed run whose id is no run id."""

    @web.middleware
    async def text_ids(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if request.match_info.route.name in ("tests", "v6_tests"):
            assert isinstance(response, web.Response) and isinstance(response.body, bytes)
            response.body = response.body.replace(b'"id":720001', b'"id":"720001"')
        return response

    cloud = generate_cloud(runs=2, metrics=5, points=5, tests=2, projects=1)
    sim = Simulator(cloud)
    sim.app.middlewares.insert(0, text_ids)
    async with sim:
        extra = ("--api", "v6", "--stack-id", str(sim.stack_id)) if api == "v6" else ()
        args = ("--project", str(PROJECT_A), "--out", str(tmp_path), *extra)
        done = await run_cli(sim, "harvest", *args)
    err = done.stderr.decode()
    assert done.returncode == 1, err
    assert (
        "the API listed 1 test whose id is not a test id (a whole number from 1 to "
        f"{2**63 - 1}): '720001'; skipped"
    ) in err
    assert set(read_dir(tmp_path)) == {100002}
