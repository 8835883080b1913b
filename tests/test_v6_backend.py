"""The backend interface (issue 10 "Design"): the API chosen in one place, `harvester
projects --api v6`, and the v6 backend's minimum requests for the bench, which are the
requests it makes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import orjson
import pytest
from yarl import URL

from harvester.backends.choose import backend_for
from harvester.backends.v2 import V2Backend
from harvester.backends.v2_plan import V2Plan
from harvester.backends.v6 import V6Backend
from harvester.config import Settings
from harvester.job import harvest_job
from harvester.projects import list_projects
from harvester.ratelimit import RateGate
from harvester.scheduler import RunTarget
from harvester.simulator.cloud import SimCloud
from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator
from harvester.simulator.v6_model import v6_run
from harvester.stats import HarvestStats
from harvester.transport import Transport
from tests.harvest_helpers import settings_for
from tests.process_helpers import run_cli


@pytest.fixture
def cloud() -> SimCloud:
    return generate_cloud(runs=5, metrics=12, points=4, projects=3, tests=4)


def v6_settings(sim: Simulator, out: Path | str, **overrides: Any) -> Settings:
    return settings_for(sim, out, api="v6", stack_id=sim.stack_id, step=3, **overrides)


def backend(settings: Settings) -> Any:
    transport = Transport(settings, gate=RateGate.for_settings(settings), stats=HarvestStats())
    return backend_for(settings, transport)


async def test_the_api_setting_alone_chooses_the_backend(
    simulator: Simulator, tmp_path: Path
) -> None:
    assert isinstance(backend(settings_for(simulator, tmp_path)), V2Backend)
    assert isinstance(backend(v6_settings(simulator, tmp_path)), V6Backend)


async def test_projects_over_v6_pages_the_stack_and_counts_tests(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    simulator.state.v6.page_cap = 1  # one project a page: $skip follows the rows
    rows = await list_projects(v6_settings(simulator, tmp_path, page_size="2"))
    stack = simulator.stack_id
    assert rows == [
        {"organization_id": stack, "organization": f"stack {stack}", "project_id": pid,
         "project": cloud.projects[pid]["name"], "tests": len(cloud.tests_of(pid))}
        for pid in sorted(cloud.projects)
    ]  # fmt: skip
    assert len(cloud.projects) == 3 and sum(row["tests"] for row in rows) == 4
    asked = Counter(r.endpoint for r in simulator.log)
    assert asked == {"v6_projects": 3, "v6_tests": 3}


async def test_the_projects_command_over_v6_has_v2s_columns(simulator: Simulator) -> None:
    done = await run_cli(simulator, "projects", "--api", "v6", "--stack-id",
                         str(simulator.stack_id), "--output", "csv")  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert lines[0] == "organization_id,organization,project_id,project,tests"
    assert len(lines) == 1 + 3
    as_json = await run_cli(simulator, "projects", "--api", "v6", "--stack-id",
                            str(simulator.stack_id), "--output", "json")  # fmt: skip
    assert [orjson.loads(line)["tests"] for line in as_json.stdout.splitlines()] == [2, 1, 1]


@pytest.mark.parametrize("given", [True, False])
async def test_the_minimum_the_backend_names_is_what_it_asks(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path, given: bool
) -> None:
    """`V6Backend.minimum_paths` (the bench's minimum) lists exactly the requests of a
    harvest: with the run object from discovery (`given`) or asked for by id."""
    settings = v6_settings(simulator, tmp_path)
    run_id = min(cloud.runs)
    view = simulator.state.v5_view(run_id)
    assert view is not None
    run = v6_run(cloud.runs[run_id])
    planned = backend(settings).minimum_paths(
        run, view.metrics(), view.label_names(), discovered=given
    )
    target = RunTarget(run_id, run=run) if given else RunTarget(run_id)
    result = await harvest_job(settings, [target])
    assert not result.report.failed
    assert Counter(r.path for r in simulator.log) == Counter(map(unquote, planned))
    assert len(planned) == (2 if given else 3) + len(simulator.requests_for("v5_query"))


async def test_the_v2_minimum_the_backend_names_is_what_it_asks(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    """`V2Backend.minimum_plan` (the bench's v2 minimum) names exactly the requests of a
    harvest, series batches included: the job's first probe of at most 16 ids, then the
    rest in batches under the URL cap."""
    settings = settings_for(simulator, tmp_path, max_url_length=400)
    run_id = min(cloud.runs)
    ids = [str(m["id"]) for m in cloud.runs[run_id].metrics()]
    plan = V2Plan()
    backend(settings).minimum_plan(plan, run_id, ids, [], points=4)
    result = await harvest_job(settings, [RunTarget(run_id)])
    assert not result.report.failed
    wanted = Counter((URL(p).path, tuple(URL(p).query.getall("ids[]", ()))) for p in plan.paths)
    asked = Counter((r.path, r.ids if r.endpoint == "series" else ()) for r in simulator.log)
    assert asked == wanted
    assert plan.series_requests >= 2  # the cap split the series
