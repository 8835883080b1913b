"""Issue 10's "Choosing the API" and "Pinned details", one quick check each where no other
test pins them: the API from the config file, `--stack-url` asked once per job,
`--since`/`--until` as dates, and an unknown project or test named, not fatal."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harvester.config import Settings, load_settings
from harvester.discovery import Selection, discover_runs
from harvester.job import harvest_job
from harvester.simulator.cloud import SimCloud
from harvester.simulator.generated import FIRST_PROJECT_ID, FIRST_TEST_ID, generate_cloud
from harvester.simulator.server import Simulator
from harvester.state import STATE_FILE_NAME, HarvestState
from tests.harvest_helpers import read_dir, settings_for
from tests.process_helpers import run_cli


def v6_settings(sim: Simulator, out: Path | str, **overrides: Any) -> Settings:
    return settings_for(sim, out, api="v6", stack_id=sim.stack_id, step=3, **overrides)


def test_the_api_and_the_stack_come_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "harvester.toml"
    config.write_text('[api]\napi = "v6"\nstack_url = "https://acme.grafana.net"\n')
    settings = load_settings(config_file=str(config), environ={})
    assert (settings.api, settings.stack_url) == ("v6", "https://acme.grafana.net")
    flagged = load_settings({"api": "v2"}, config_file=str(config), environ={})
    assert flagged.api == "v2"  # a flag beats the file


async def test_the_stack_url_is_asked_once_per_job_discovery_included(
    simulator: Simulator, tmp_path: Path
) -> None:
    done = await run_cli(simulator, "harvest", "--api", "v6", "--stack-url",
                         simulator.state.v6.stack_url, "--project", str(FIRST_PROJECT_ID),
                         "--step", "3", "--out", str(tmp_path))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert read_dir(tmp_path)  # discovered and harvested
    assert len(simulator.requests_for("v6_auth")) == 1


async def test_since_as_a_date_is_midnight_utc_inclusive_and_until_exclusive(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    first, second, third = sorted(cloud.runs)
    cloud.update_run(first, created="2024-06-01T23:59:59Z")
    cloud.update_run(second, created="2024-06-02T00:00:00Z")  # the --since day's first second
    cloud.update_run(third, created="2024-06-03T00:00:00Z")  # the --until day: left out
    settings = v6_settings(simulator, tmp_path, since="2024-06-02", until="2024-06-03",
                           tests=[str(FIRST_TEST_ID + t) for t in range(3)])  # fmt: skip
    found = await discover_runs(settings, Selection.from_settings(settings))
    assert [t.run_id for t in found.targets] == [second]
    assert found.pending == []


async def test_an_unknown_project_or_test_is_named_and_the_rest_harvested(
    simulator: Simulator, tmp_path: Path
) -> None:
    settings = v6_settings(simulator, tmp_path, projects=["4242"],
                           tests=[str(FIRST_TEST_ID), "979797"])  # fmt: skip
    found = await discover_runs(settings, Selection.from_settings(settings))
    project, test = found.not_found  # each naming its request
    assert project == (
        "project 4242 does not exist "
        "(GET /cloud/v6/projects/4242/load_tests?$top=50&$skip=0&$count=true answered 404)"
    )
    assert re.fullmatch(
        r"test 979797 does not exist \(GET /cloud/v6/load_tests/979797/test_runs\?"
        r"\$orderby=created&created_before=[-0-9T:.]+Z&\$top=50&\$skip=0&\$count=true answered "
        r"404\)",
        test,
    ), test
    assert found.targets and {t.run.get("test_id") for t in found.targets if t.run} == {
        FIRST_TEST_ID
    }
    done = await run_cli(simulator, "harvest", "--api", "v6", "--stack-id",
                         str(simulator.stack_id), "--project", "4242", "--step", "3",
                         "--out", str(tmp_path))  # fmt: skip
    assert done.returncode == 1 and b"project 4242 does not exist" in done.stderr
    assert b"Traceback" not in done.stderr


async def test_a_foreign_stack_ends_discovery_and_projects_with_2_naming_it(
    simulator: Simulator,
) -> None:
    for args in (("runs", "--project", str(FIRST_PROJECT_ID)), ("projects",),
                 ("harvest", "--all-projects", "--out", "-")):  # fmt: skip
        done = await run_cli(simulator, args[0], "--api", "v6", "--stack-id", "77", *args[1:])
        assert done.returncode == 2, (args, done.stderr)
        assert b"X-Stack-Id 77" in done.stderr and b"Traceback" not in done.stderr
        assert simulator.token.encode() not in done.stderr + done.stdout
    assert simulator.requests_for("v6_runs") == []  # stopped at the first refusal


async def test_a_run_left_waiting_is_asked_for_by_id_once_outside_the_window(
    tmp_path: Path,
) -> None:
    """A v6 run still processing at one job is remembered in the state; when a later
    job's --since no longer covers it, it is asked for by id and harvested once final."""
    cloud = generate_cloud(runs=1, metrics=3, points=2, pending_runs=1, projects=1, tests=1)
    waiting = max(cloud.runs)
    async with Simulator(cloud) as sim:
        settings = v6_settings(sim, tmp_path, projects=[str(FIRST_PROJECT_ID)])
        with HarvestState.open(tmp_path / STATE_FILE_NAME) as state:
            found = await discover_runs(settings, Selection.from_settings(settings), state=state)
            assert [p.run_id for p in found.pending] == [waiting]
            cloud.update_run(waiting, processing_status=2)  # final now
            sim.log.clear()
            later = replace(Selection.from_settings(settings), since=datetime.now(UTC))
            found = await discover_runs(settings, later, state=state)
            assert found.rechecked == 1 and [t.run_id for t in found.targets] == [waiting]
            assert [r.path for r in sim.requests_for("v6_run")] == [
                f"/cloud/v6/test_runs/{waiting}"
            ]
            await harvest_job(settings, found.targets, state=state)
            assert state.waiting([FIRST_PROJECT_ID], []) == []
    assert waiting in read_dir(tmp_path)


async def test_a_stack_url_the_api_does_not_know_is_named_not_a_stack_id_of_none(
    simulator: Simulator,
) -> None:
    done = await run_cli(simulator, "harvest", "--api", "v6", "--stack-url",
                         "https://other.grafana.net", "--run", "100001", "--out", "-")  # fmt: skip
    assert done.returncode == 2, done.stderr
    err = done.stderr.decode()
    assert "None" not in err and "Traceback" not in err
    assert "https://other.grafana.net" in err and "--stack-url" in err
    assert simulator.requests_for("v6_runs") == []


async def test_a_stack_url_pasted_from_the_web_app_is_its_stack(
    simulator: Simulator, tmp_path: Path
) -> None:
    pasted = simulator.state.v6.stack_url + "/a/k6-app/runs/100001"
    done = await run_cli(simulator, "harvest", "--api", "v6", "--stack-url", pasted,
                         "--run", "100001", "--step", "3", "--out", str(tmp_path))  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    assert list(read_dir(tmp_path)) == [100001]
