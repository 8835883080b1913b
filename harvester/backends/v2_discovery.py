"""v2 discovery: the runs of the selected projects and tests through `/loadtests/v2`.

Pages through `/loadtests/v2/tests` and `/loadtests/v2/runs` with the same `CloudApi`
(so the same rate gate and retries) as the harvest, and sorts what it finds: runs that
are final and processed become `RunTarget`s carrying their `k6-run` object; runs k6
Cloud could not fully process are harvested but marked incomplete; runs still running or
processing are reported and left for the next time (`runstatus.py`), and with a state
file remembered and asked about again by later jobs (`waiting.py`). A project or test the
API does not know is named in `Discovery.not_found`.
"""

from __future__ import annotations

from dataclasses import replace

import anyio

from ..api import CloudApi, JsonObject
from ..errors import NotFound
from ..paging import Page, each, read_pages
from ..projects import selected_projects
from ..runstatus import classify
from ..selection import Discovery, Selection, sort_runs, with_ids
from ..state import HarvestState
from ..waiting import follow_waiting


async def _tests_of(
    api: CloudApi, project_id: int, page_size: int, not_found: list[str], *, named: bool
) -> list[JsonObject]:
    """The project's tests; a `named` project (a --project) without any is reported."""

    async def fetch(page: int, size: int) -> Page:
        return await api.list_tests(project_id, page, size)

    try:
        tests = await read_pages(fetch, page_size)
    except NotFound as exc:
        not_found.append(f"project {project_id} does not exist (GET {exc.url} answered 404)")
        return []
    if not tests and named:  # the v2 API may answer an unknown project with an empty list
        not_found.append(f"project {project_id} has no tests: is the id right?")
    return tests


async def _runs_of(
    api: CloudApi, test_id: int, page_size: int, not_found: list[str], *, selected: bool
) -> list[JsonObject]:
    """The test's runs; a `selected` test (a --test) with none is checked to exist."""

    async def fetch(page: int, size: int) -> Page:
        return await api.list_runs(test_id, page, size)

    try:
        runs = await read_pages(fetch, page_size)
        if not runs and selected:  # no runs yet, or an unknown test answered with []?
            await api.get_test(test_id)
    except NotFound as exc:
        not_found.append(f"test {test_id} does not exist (GET {exc.url} answered 404)")
        return []
    return runs


async def _test_ids(
    api: CloudApi,
    selection: Selection,
    projects: list[int],
    names: dict[int, str],
    not_found: list[str],
) -> list[int]:
    """`--test`s first, then the tests of each selected project, once each; the names of
    the tests listed go into `names`. (An organization's project may have no tests yet.)"""
    ids: dict[int, None] = dict.fromkeys(selection.tests)
    for project_id in projects:
        named = project_id in selection.projects
        listed = await _tests_of(api, project_id, selection.page_size, not_found, named=named)
        for test in with_ids(listed, "test", not_found):
            ids.setdefault(test["id"], None)
            if isinstance(test.get("name"), str):
                names[test["id"]] = test["name"]
    return list(ids)


async def discover(
    api: CloudApi, selection: Selection, *, parallel: int = 4, state: HarvestState | None = None
) -> Discovery:
    """Runs of every selected test (the tests of the selected projects, the organizations'
    included, and `--test`s), sorted into targets and pending runs. Tests are listed
    `parallel` at a time; the rate gate spaces the requests whatever `parallel` is. With
    `state`, pending runs are remembered and those earlier jobs left waiting are asked
    about again."""
    runs: list[JsonObject] = []
    not_found: list[str] = []
    before = api.transport.stats.request_count
    projects = await selected_projects(api, selection, not_found)
    names: dict[int, str] = {}
    test_ids = await _test_ids(api, selection, projects, names, not_found)
    slots = anyio.CapacityLimiter(parallel)

    async def one_test(test_id: int) -> None:
        async with slots:
            selected = test_id in selection.tests
            runs.extend(
                await _runs_of(api, test_id, selection.page_size, not_found, selected=selected)
            )

    await each(one_test, test_ids)
    found = sort_runs(runs, selection)
    found.not_found = [*not_found, *found.not_found]
    if state is not None:  # the organizations' projects are watched like --projects
        watched = replace(selection, projects=tuple(projects))
        await follow_waiting(state, watched, found, api.get_run, classify)
    found.requests = api.transport.stats.request_count - before
    found.test_names = names
    return found
