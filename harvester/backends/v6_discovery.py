"""Which runs to harvest through v6: projects -> load tests -> test runs.

`--project`/`--test` and `--since`/`--until` map onto `/cloud/v6/projects/{id}/load_tests`
and `/cloud/v6/load_tests/{id}/test_runs` with `created_after` (inclusive) and
`created_before` (exclusive), in ascending `created` order, the upper bound pinned to the
job's start so the pages do not shift while they are read. Completed runs are harvested,
aborted runs too (incomplete), every other run waits for the next time.
"""

from __future__ import annotations

from datetime import UTC, datetime

from ..runstatus import PendingRun
from ..scheduler import RunTarget
from ..selection import Discovery, Selection
from .v6_api import MAX_TOP, V6, JsonObject, V6Api, readiness


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def discover_v6(
    api: V6Api, selection: Selection, *, now: datetime | None = None
) -> Discovery:
    before = api.transport.stats.request_count
    top = min(selection.page_size, MAX_TOP)
    names: dict[int, str] = {}
    test_ids: dict[int, None] = dict.fromkeys(selection.tests)
    projects = list(selection.projects)
    if selection.all_projects:
        projects += [p["id"] for p in await api.pages("v6_projects", f"{V6}/projects", {}, top)
                     if isinstance(p.get("id"), int)]  # fmt: skip
    for project_id in dict.fromkeys(projects):
        path = f"{V6}/projects/{project_id}/load_tests"
        for test in await api.pages("v6_tests", path, {}, top):
            if isinstance(test.get("id"), int):
                test_ids.setdefault(test["id"], None)
                names[test["id"]] = str(test.get("name", ""))
    pinned = now or datetime.now(UTC)
    until = min(selection.until, pinned) if selection.until else pinned
    params = {"$orderby": "created", "created_before": _iso(until)}
    if selection.since is not None:
        params["created_after"] = _iso(selection.since)
    runs: dict[int, JsonObject] = {}
    for test_id in test_ids:
        path = f"{V6}/load_tests/{test_id}/test_runs"
        for run in await api.pages("v6_runs", path, params, top):
            if isinstance(run.get("id"), int):
                runs[run["id"]] = run
    found = Discovery(test_names=names)
    for run_id in sorted(runs):
        ready, reason = readiness(runs[run_id])
        if ready:
            found.targets.append(RunTarget(run_id, run=runs[run_id], incomplete_reason=reason))
        else:
            found.pending.append(PendingRun(run_id, reason or "", runs[run_id]))
    found.requests = api.transport.stats.request_count - before
    return found
