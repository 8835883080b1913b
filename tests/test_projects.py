"""Organizations and projects (issue 9.4): `harvester projects`, and `--organization` /
`--all-projects` as discovery selectors of harvest, runs and worker, over real sockets."""

from __future__ import annotations

import fcntl
import io
import os
import struct
import termios
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.from_thread
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from harvester.api import JsonObject
from harvester.cli import main
from harvester.config import load_settings
from harvester.discovery import Selection, discover_runs
from harvester.progress import Reporter
from harvester.projects import list_projects
from harvester.simulator.cloud import SimCloud
from harvester.simulator.faults import FaultPlan
from harvester.simulator.generated import (
    FIXED_ANCHOR,
    ORGANIZATION_ID,
    GeneratedRun,
    generate_cloud,
)
from harvester.simulator.server import Simulator
from harvester.stats import HarvestStats
from harvester.tables import projects_table
from harvester.worker import Worker
from tests.harvest_helpers import parse_lines, read_dir, settings_for
from tests.process_helpers import ROOT, cli_command, cli_env, wait_for

OTHER_ORG, OTHER_PROJECT, EMPTY_PROJECT, OTHER_TEST = 6001, 4100001, 4100002, 810001
OTHER_RUNS = (300001, 300002)


@pytest.fixture
def cloud() -> SimCloud:
    """The generated organization (2 projects, 3 tests, 7 runs: one still running), and a
    second one with a project holding one test of two runs and a project without tests."""
    cloud = generate_cloud(runs=6, metrics=2, points=2, pending_runs=1, projects=2, tests=3)
    cloud.add_organization(OTHER_ORG, "second org")
    for run_id in OTHER_RUNS:
        cloud.add_run(
            GeneratedRun(run_id, metrics=2, points=2, created=FIXED_ANCHOR, test_id=OTHER_TEST,
                         project_id=OTHER_PROJECT, organization_id=OTHER_ORG)
        )  # fmt: skip
    cloud.add_project(EMPTY_PROJECT, OTHER_ORG, "no tests yet")
    return cloud


@pytest.fixture
def served(cloud: SimCloud) -> Iterator[Simulator]:
    """The simulator on a thread of its own, for tests that call the CLI's `main()` (which
    runs its own event loop)."""
    with anyio.from_thread.start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(Simulator(cloud)) as sim:
            yield sim


def expected_rows(cloud: SimCloud, organizations: list[int] | None = None) -> list[JsonObject]:
    return [
        {
            "organization_id": org_id,
            "organization": cloud.organizations[org_id]["name"],
            "project_id": project["id"],
            "project": project["name"],
            "tests": len(cloud.tests_of(project["id"])),
        }
        for org_id in organizations or sorted(cloud.organizations)
        for project in cloud.projects_of(org_id)
    ]


def ready_runs_of(cloud: SimCloud, organization_id: int | None = None) -> list[int]:
    return sorted(
        run["id"]
        for run in cloud.runs_of(None)
        if run["processing_status"] == 2
        and run["run_status"] >= 3
        and organization_id in (None, run["organization_id"])
    )


# --- harvester projects -------------------------------------------------------------------


def test_projects_lists_every_project_of_every_organization_with_its_test_count(
    served: Simulator, cloud: SimCloud, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["projects", "--base-url", served.base_url, "--token", served.token])
    out = capsys.readouterr().out
    assert code == 0 and parse_lines(out.encode()) == expected_rows(cloud)
    asked = Counter(r.endpoint for r in served.log)
    # One list of organizations, one of projects per organization, one tests page per project.
    assert asked == {"organizations": 1, "projects": 2, "tests": len(cloud.projects)}
    assert expected_rows(cloud)[-1]["tests"] == 0 and len(cloud.projects) == 4


def test_projects_of_chosen_organizations_and_an_unknown_one(
    served: Simulator, cloud: SimCloud, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["projects", "--base-url", served.base_url, "--token", served.token]
    assert main([*args, "--organization", str(OTHER_ORG)]) == 0
    assert parse_lines(capsys.readouterr().out.encode()) == expected_rows(cloud, [OTHER_ORG])
    assert main([*args, "--organization", str(OTHER_ORG), "--output", "csv"]) == 0
    csv_lines = capsys.readouterr().out.splitlines()
    assert csv_lines[0] == "organization_id,organization,project_id,project,tests"
    assert csv_lines[1:] == [f"{OTHER_ORG},second org,{OTHER_PROJECT},project {OTHER_PROJECT},1",
                             f"{OTHER_ORG},second org,{EMPTY_PROJECT},no tests yet,0"]  # fmt: skip
    assert main([*args, "--organization", "77", "--organization", str(OTHER_ORG)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"harvester: organization 77 is not one the token sees (it sees "
                   f"{ORGANIZATION_ID}, {OTHER_ORG})"]  # fmt: skip


async def test_projects_on_a_terminal_is_a_table(simulator: Simulator, cloud: SimCloud) -> None:
    master, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    try:
        with anyio.fail_after(20):  # the table is far smaller than the terminal's buffer
            done = await anyio.run_process(
                cli_command(simulator, "projects"), stdout=terminal, env=cli_env(simulator),
                cwd=ROOT, check=False,
            )  # fmt: skip
        os.close(terminal)
        terminal = -1
        shown = os.read(master, 1 << 16).decode()
    finally:
        if terminal >= 0:
            os.close(terminal)
        os.close(master)
    assert done.returncode == 0, done.stderr
    assert "organization" in shown and "tests" in shown and "{" not in shown
    assert all(project["name"] in shown for project in cloud.projects.values())


def test_organizations_are_refused_with_the_v6_api(capsys: pytest.CaptureFixture[str]) -> None:
    """v6 has stacks, not organizations: the selectors say so instead of being ignored."""
    v6 = ["--api", "v6", "--stack-id", "7", "--token", "t", "--base-url", "http://127.0.0.1:9"]
    assert main(["runs", *v6, "--organization", "5"]) == 2
    assert main(["projects", *v6, "--organization", "5"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all("with --api v6 name the projects" in line for line in lines)


def test_a_long_project_name_wraps_and_leaves_the_ids_whole_at_80_columns() -> None:
    """The names kept to one line squeezed the other columns: the project id showed as
    `345` (of 3458575), and the test counts were not shown at all."""
    stream = io.StringIO()
    rows = [{"organization_id": 5001, "organization": "acme", "project_id": 3458575,
             "project": "checkout " + "x" * 120, "tests": 12}]  # fmt: skip
    projects_table(stream, rows, width=80)
    lines = stream.getvalue().splitlines()
    assert any("5001" in line and "3458575" in line and " 12 " in line for line in lines)
    assert max(len(line) for line in lines) <= 80


def test_projects_table_shows_one_row_per_project_and_unknown_counts() -> None:
    stream = io.StringIO()
    rows = [
        {"organization_id": 5, "organization": "acme", "project_id": 7, "project": "shop",
         "tests": 12},
        {"organization_id": 5, "organization": "acme", "project_id": 8, "project": "api",
         "tests": None},
    ]  # fmt: skip
    projects_table(stream, rows)
    lines = stream.getvalue().splitlines()
    assert any("organization" in line and "project" in line and "tests" in line for line in lines)
    assert any("shop" in line and " 12 " in line for line in lines)
    assert any("api" in line and " ? " in line for line in lines)


# --- paging of the v3 lists ---------------------------------------------------------------


def paging_v3_app(asked: list[tuple[str, dict[str, str]]]) -> web.Application:
    """A server whose v3 lists do page, with `meta.count` (the docs show none): 5
    organizations of 3 projects each, each project with 2 tests."""
    orgs = [{"id": o, "name": f"org {o}"} for o in range(1, 6)]

    def page(request: web.Request, key: str, items: list[JsonObject]) -> web.Response:
        asked.append((request.path, dict(request.query)))
        number, size = int(request.query["page"]), int(request.query["page_size"])
        chunk = items[(number - 1) * size : number * size]
        return web.json_response({key: chunk, "meta": {"count": len(items)}})

    async def organizations(request: web.Request) -> web.Response:
        return page(request, "organizations", orgs)

    async def projects(request: web.Request) -> web.Response:
        org = int(request.match_info["id"])
        items = [{"id": org * 10 + p, "name": f"p{p}", "organization_id": org} for p in range(3)]
        return page(request, "projects", items)

    async def tests(request: web.Request) -> web.Response:
        return page(request, "k6-tests", [{"id": 1}, {"id": 2}])

    app = web.Application()
    app.router.add_get("/v3/organizations", organizations)
    app.router.add_get("/v3/organizations/{id}/projects", projects)
    app.router.add_get("/loadtests/v2/tests", tests)
    return app


async def test_v3_lists_are_followed_page_by_page_when_the_answer_has_a_meta(
    tmp_path: Path,
) -> None:
    asked: list[tuple[str, dict[str, str]]] = []
    async with TestServer(paging_v3_app(asked), host="127.0.0.1") as server:
        base = str(server.make_url("")).rstrip("/")
        settings = load_settings({"base_url": base, "token": "t", "page_size": 2}, environ={})
        rows = await list_projects(settings)
    assert [row["project_id"] for row in rows] == [
        o * 10 + p for o in range(1, 6) for p in range(3)
    ]
    assert {row["tests"] for row in rows} == {2}
    paths = Counter(path.rsplit("/", 1)[-1] for path, _ in asked)
    # ceil(5/2) pages of organizations, ceil(3/2) of projects for each, one tests page each.
    assert paths == {"organizations": 3, "projects": 5 * 2, "tests": 15}
    assert all(q["page_size"] == "1" for p, q in asked if p.endswith("tests"))


async def test_v3_lists_without_a_meta_are_read_in_one_request(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    """The simulator answers as the docs show (no meta): a full page is the whole list."""
    settings = settings_for(simulator, tmp_path, page_size=1, all_projects=True)
    found = await discover_runs(settings, Selection.from_settings(settings))
    asked = Counter(r.endpoint for r in simulator.log)
    assert asked["organizations"] == 1 and asked["projects"] == len(cloud.organizations)
    assert sorted(t.run_id for t in found.targets) == ready_runs_of(cloud)


# --- the selectors ----------------------------------------------------------------------------


def test_harvest_takes_every_project_of_an_organization(
    served: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    args = ["--base-url", served.base_url, "--token", served.token, "--rate", "1000"]
    assert main(["harvest", *args, "--organization", str(OTHER_ORG), "--out", str(tmp_path)]) == 0
    assert sorted(read_dir(tmp_path)) == ready_runs_of(cloud, OTHER_ORG) == list(OTHER_RUNS)
    # The organization named: its projects are listed, the organizations are not.
    assert {r.endpoint for r in served.log} >= {"projects", "tests", "runs", "metrics"}
    assert "organizations" not in {r.endpoint for r in served.log}


def test_all_projects_takes_every_organization_the_token_sees(
    served: Simulator, cloud: SimCloud, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--base-url", served.base_url, "--token", served.token, "--all-projects"]
    assert main(["runs", *args]) == 0
    listed = parse_lines(capsys.readouterr().out.encode())
    assert sorted(row["test_run_id"] for row in listed) == sorted(cloud.runs)
    assert main(["harvest", *args, "--out", str(tmp_path), "--rate", "1000"]) == 0
    assert sorted(read_dir(tmp_path)) == ready_runs_of(cloud)


def test_a_run_left_waiting_in_an_organizations_project_is_asked_about_again(
    served: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    """The organizations' projects are watched like --projects: a later job harvests the
    run once final, even when its --since no longer lists it."""
    cloud.add_run(
        GeneratedRun(300003, metrics=2, points=2, created=FIXED_ANCHOR, test_id=OTHER_TEST,
                     project_id=OTHER_PROJECT, organization_id=OTHER_ORG, run_status=2)
    )  # fmt: skip
    args = ["harvest", "--base-url", served.base_url, "--token", served.token, "--rate", "1000",
            "--organization", str(OTHER_ORG), "--out", str(tmp_path)]  # fmt: skip
    assert main(args) == 0 and sorted(read_dir(tmp_path)) == list(OTHER_RUNS)
    cloud.update_run(300003, run_status=3)
    assert main([*args, "--since", "2099-01-01"]) == 0
    assert sorted(read_dir(tmp_path)) == [*OTHER_RUNS, 300003]


async def test_the_organization_lists_share_the_rate_gate_and_the_retries(
    cloud: SimCloud, tmp_path: Path
) -> None:
    plan = FaultPlan(seed=3, p_503=0.5, fault_endpoints=frozenset({"organizations", "projects"}))
    async with Simulator(cloud, faults=plan) as sim:
        settings = settings_for(sim, tmp_path, all_projects=True, organizations=[OTHER_ORG])
        stats = HarvestStats()
        found = await discover_runs(settings, Selection.from_settings(settings), stats=stats)
    faults = [r for r in sim.log if r.fault == "503"]
    assert faults and {r.endpoint for r in faults} <= {"organizations", "projects"}
    assert stats.retries == len(faults) and stats.request_count == len(sim.log)
    assert sorted(t.run_id for t in found.targets) == ready_runs_of(cloud)
    # An organization named and seen is listed once.
    assert sum(r.status == 200 for r in sim.log if r.endpoint == "projects") == 2


async def test_an_unknown_organization_is_named_and_the_others_still_discovered(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    settings = settings_for(simulator, tmp_path, organizations=[77, OTHER_ORG])
    found = await discover_runs(settings, Selection.from_settings(settings))
    assert found.not_found == [
        "organization 77 does not exist (GET /v3/organizations/77/projects?page=1&page_size=50 "
        "answered 404)"
    ]
    assert sorted(t.run_id for t in found.targets) == list(OTHER_RUNS)


async def test_the_worker_watches_an_organization(cloud: SimCloud, tmp_path: Path) -> None:
    async with Simulator(cloud) as sim:
        settings = settings_for(sim, tmp_path, organizations=[OTHER_ORG], interval="0.1s",
                                listen_port=0)  # fmt: skip
        log = io.StringIO()
        worker = Worker(settings, reporter=Reporter(log, json_lines=True, level="info"),
                        handle_signals=False, grace=1.0)  # fmt: skip
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            await wait_for(lambda: sorted(read_dir(tmp_path)) == list(OTHER_RUNS))
            worker.stop()
    assert worker.status.failed_cycles == 0


def test_organization_settings_from_the_environment_and_a_file(tmp_path: Path) -> None:
    settings = load_settings(environ={"HARVESTER_ORGANIZATIONS": "5, 6"})
    assert settings.organizations == (5, 6) and not settings.all_projects
    config = tmp_path / "h.toml"
    config.write_text("[discovery]\nall_projects = true\norganizations = [7]\n")
    from_file = load_settings(config_file=str(config), environ={})
    assert from_file.all_projects and from_file.organizations == (7,)
    assert Selection.from_settings(from_file).active and not Selection().active


async def test_list_projects_counts_every_request(simulator: Simulator, tmp_path: Path) -> None:
    stats = HarvestStats()
    rows = await list_projects(settings_for(simulator, tmp_path), stats=stats)
    assert len(rows) == 4 and stats.request_count == len(simulator.log) == 1 + 2 + 4
