"""Which runs to harvest through v6: projects -> load tests -> test runs.

`--project`/`--test` and `--since`/`--until` map onto `/cloud/v6/projects/{id}/load_tests`
and `/cloud/v6/load_tests/{id}/test_runs` with `created_after` (inclusive) and
`created_before` (exclusive), in ascending `created` order, the upper bound pinned to the
job's start so the pages do not shift while they are read. Completed runs are harvested,
aborted runs too (incomplete), every other run waits for the next time.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import anyio

from ..errors import NotFound
from ..paging import each
from ..runstatus import PendingRun
from ..scheduler import RunTarget
from ..selection import Discovery, Selection, by_run_id, with_ids
from ..state import HarvestState
from ..waiting import follow_waiting
from .v6_api import MAX_TOP, V6, JsonObject, V6Api, readiness


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def judge(run: JsonObject) -> RunTarget | PendingRun:
    """A v6 run to harvest now (completed; aborted, incomplete), or one left for later."""
    ready, reason = readiness(run)
    if ready:
        return RunTarget(int(run["id"]), run=run, incomplete_reason=reason)
    return PendingRun(int(run["id"]), reason or "", run)


async def discover_v6(
    api: V6Api,
    selection: Selection,
    *,
    parallel: int = 4,
    state: HarvestState | None = None,
    now: datetime | None = None,
) -> Discovery:
    """The runs of the selected tests and of the tests of the selected projects, listed
    `parallel` tests at a time; a project or test v6 does not know is named in
    `not_found` and the rest is harvested. With `state`, runs left for later are
    remembered, and those earlier jobs left are asked about by id (`waiting.py`)."""
    before = api.transport.stats.request_count
    found = Discovery()
    top = min(selection.page_size, MAX_TOP)
    projects = await _project_ids(api, selection, top)
    test_ids = await _test_ids(api, selection, projects, top, found)
    params = _window(selection, now or datetime.now(UTC))
    listed: dict[int, list[JsonObject]] = {}
    slots = anyio.CapacityLimiter(parallel)

    async def one_test(test_id: int) -> None:
        async with slots:
            path = f"{V6}/load_tests/{test_id}/test_runs"
            listed[test_id] = await _listing(api, path, params, top, found, f"test {test_id}")

    await each(one_test, test_ids)
    runs = by_run_id((run for test_id in test_ids for run in listed[test_id]), found)
    for run_id in sorted(runs):
        verdict = judge(runs[run_id])
        if isinstance(verdict, RunTarget):
            found.targets.append(verdict)
        else:
            found.pending.append(verdict)
    if state is not None:  # the stack's projects are watched like --projects
        watched = replace(selection, projects=tuple(projects))
        await follow_waiting(state, watched, found, api.get_run, judge)
    found.requests = api.transport.stats.request_count - before
    return found


async def _project_ids(api: V6Api, selection: Selection, top: int) -> list[int]:
    """The `--project`s, and with `--all-projects` every project of the stack, once each."""
    projects = list(selection.projects)
    if selection.all_projects:
        projects += [p["id"] for p in await api.pages("v6_projects", f"{V6}/projects", {}, top)
                     if isinstance(p.get("id"), int)]  # fmt: skip
    return list(dict.fromkeys(projects))


async def _test_ids(
    api: V6Api, selection: Selection, projects: list[int], top: int, found: Discovery
) -> list[int]:
    """`--test`s first, then the load tests of each project, once each; names noted."""
    test_ids: dict[int, None] = dict.fromkeys(selection.tests)
    for project_id in projects:
        path = f"{V6}/projects/{project_id}/load_tests"
        listed = await _listing(api, path, {}, top, found, f"project {project_id}")
        for test in with_ids(listed, "test", found.not_found):
            test_ids.setdefault(test["id"], None)
            found.test_names[test["id"]] = str(test.get("name", ""))
    return list(test_ids)


def _window(selection: Selection, now: datetime) -> dict[str, str]:
    """`created_after` (inclusive) from --since; `created_before` (exclusive) from
    --until, never later than the job's start, so the pages do not shift."""
    until = min(selection.until, now) if selection.until else now
    params = {"$orderby": "created", "created_before": _iso(until)}
    if selection.since is not None:
        params["created_after"] = _iso(selection.since)
    return params


async def _listing(
    api: V6Api, path: str, params: dict[str, str], top: int, found: Discovery, what: str
) -> list[JsonObject]:
    """Every row of a project's or test's listing; one v6 does not know is named."""
    endpoint = "v6_runs" if path.endswith("/test_runs") else "v6_tests"
    try:
        return await api.pages(endpoint, path, params, top)
    except NotFound as exc:
        found.not_found.append(f"{what} does not exist (GET {exc.url} answered 404)")
        return []
