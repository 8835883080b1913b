"""The simulated endpoints: the documented k6 Cloud v2 paths, parameters and JSON shapes.

Run data comes from each run's `RunCache` (rendered once); discovery lists are small and
change while serving (runs are added live), so they are rendered per request.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from harvester.simulator.faults import failing_ids
from harvester.simulator.model import JsonObject
from harvester.simulator.render import INCLUDES, RunCache
from harvester.simulator.state import SIM_STATE, SimError, SimState, json_body

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
V2 = "/loadtests/v2"


def _state(request: web.Request) -> SimState:
    return request.app[SIM_STATE]


def _int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise SimError(400, f"{name} must be an integer, got {text!r}.") from None


def _int_param(request: web.Request, name: str, default: int | None = None) -> int:
    text = request.query.get(name)
    if text is None:
        if default is None:
            raise SimError(400, f"The query parameter {name} is required.")
        return default
    return _int(text, name)


def _optional_int(request: web.Request, name: str) -> int | None:
    text = request.query.get(name)
    return None if text is None else _int(text, name)


def _int_ids(request: web.Request) -> frozenset[int] | None:
    texts = request.query.getall("ids[]", ())
    return frozenset(_int(t, "ids[]") for t in texts) if texts else None


def _run(request: web.Request) -> RunCache:
    run_id = _int_param(request, "test_run_id")
    cache = _state(request).run_cache(run_id)
    if cache is None:
        raise SimError(404, f"Test run {run_id} not found.")
    return cache


def _page(request: web.Request, items: list[JsonObject]) -> tuple[list[JsonObject], int]:
    """One 1-based page of `items` (page_size defaults to 20, at most 100) and the total."""
    page = _int_param(request, "page", 1)
    size = _int_param(request, "page_size", DEFAULT_PAGE_SIZE)
    if page < 1 or size < 1:
        raise SimError(400, "page and page_size must be positive.")
    size = min(size, MAX_PAGE_SIZE)
    return items[(page - 1) * size : page * size], len(items)


def _ordered(
    request: web.Request, items: list[JsonObject], keys: dict[str, Any]
) -> list[JsonObject]:
    """Sort by `order_by` (a key of `keys`, "-" for descending); by id when absent."""
    order = request.query.get("order_by", "id")
    field = order.removeprefix("-")
    if field not in keys:
        raise SimError(400, f"order_by must be one of {', '.join(sorted(keys))}, got {order!r}.")
    return sorted(items, key=keys[field], reverse=order.startswith("-"))


def _dumps(obj: JsonObject) -> web.Response:
    return json_body(orjson.dumps(obj))


# --- run data -------------------------------------------------------------------------


async def metrics(request: web.Request) -> web.Response:
    return json_body(_run(request).metrics())


async def metric_detail(request: web.Request) -> web.Response:
    cache = _run(request)
    includes = frozenset(request.query.getall("include[]", ()))
    unknown = includes - INCLUDES.keys()
    if unknown:
        raise SimError(400, f"include[] must be url, group or check, got {sorted(unknown)}.")
    metric_id = request.match_info["id"]
    body = cache.metric_detail(metric_id, includes)
    if body is None:
        raise SimError(404, f"Metric {metric_id} not found in test run {cache.data.run_id}.")
    return json_body(body)


async def series(request: web.Request) -> web.Response:
    cache = _run(request)
    ids = list(dict.fromkeys(request.query.getall("ids[]", ())))  # once each, in order
    if not ids:
        raise SimError(400, "At least one ids[] is required.")
    method, plan = request.query.get("method"), _state(request).plan
    if method in plan.refuse_methods:
        raise SimError(400, f"Unknown aggregation method: {method}.", fault="refuse_methods")
    if cache.data.run_id in plan.refuse_runs:
        raise SimError(400, "Series are not available for this test run.", fault="refuse_runs")
    bad = failing_ids(plan, tuple(ids))
    if bad:
        message = f"Cannot aggregate metric {bad[0]}: invalid metric for this aggregation."
        raise SimError(400, message, fault="fail_metric_ids")
    glitch = {i for i in ids if i in plan.omit_once and i not in _state(request).omitted}
    if glitch:
        _state(request).omitted |= glitch
        ids = [i for i in ids if i not in glitch]
    try:
        return json_body(cache.series(ids, method))
    except ValueError as exc:
        raise SimError(400, str(exc)) from None


async def thresholds(request: web.Request) -> web.Response:
    return json_body(_run(request).thresholds(_int_ids(request)))


async def threshold(request: web.Request) -> web.Response:
    cache = _run(request)
    threshold_id = _int(request.match_info["id"], "threshold id")
    body = cache.threshold(threshold_id)
    if body is None:
        raise SimError(404, f"Threshold {threshold_id} not found.")
    return json_body(body)


async def overview(request: web.Request) -> web.Response:
    return json_body(_run(request).overview())


# --- discovery ------------------------------------------------------------------------


async def organizations(request: web.Request) -> web.Response:
    cloud = _state(request).cloud
    return _dumps({"organizations": [cloud.organizations[k] for k in sorted(cloud.organizations)]})


async def projects(request: web.Request) -> web.Response:
    cloud = _state(request).cloud
    org_id = _int(request.match_info["id"], "organization id")
    if org_id not in cloud.organizations:
        raise SimError(404, f"Organization {org_id} not found.")
    return _dumps({"projects": cloud.projects_of(org_id)})


async def tests(request: web.Request) -> web.Response:
    cloud = _state(request).cloud
    project_id = _optional_int(request, "project_id")
    if project_id is not None and project_id not in cloud.projects:
        raise SimError(404, f"Project {project_id} not found.")  # like any unknown id
    found = cloud.tests_of(project_id)
    ids = _int_ids(request)
    name = request.query.get("q", "").lower()
    found = [t for t in found if (ids is None or t["id"] in ids) and name in t["name"].lower()]

    def last_run_time(test: JsonObject) -> str:
        last = cloud.runs.get(test["last_test_run_id"] or -1)
        return str(last.run.get("created") or "") if last is not None else ""

    keys = {"id": lambda t: t["id"], "name": lambda t: t["name"], "last_run_time": last_run_time}
    page, count = _page(request, _ordered(request, found, keys))
    return _dumps({"k6-tests": page, "k6-runs": [], "load_zones": [], "meta": {"count": count}})


async def test(request: web.Request) -> web.Response:
    test_id = _int(request.match_info["id"], "test id")
    found = _state(request).cloud.tests.get(test_id)
    if found is None:
        raise SimError(404, f"Test {test_id} not found.")
    return _dumps({"k6-test": found})


async def runs(request: web.Request) -> web.Response:
    cloud = _state(request).cloud
    test_id = _optional_int(request, "test_id")
    if test_id is not None and test_id not in cloud.tests:
        raise SimError(404, f"Test {test_id} not found.")  # like any unknown id
    found = cloud.runs_of(test_id)
    ids = _int_ids(request)
    if ids is not None:
        found = [r for r in found if r["id"] in ids]
    keys = {"id": lambda r: r["id"], "created": lambda r: str(r.get("created") or "")}
    page, count = _page(request, _ordered(request, found, keys))
    return _dumps({"k6-runs": page, "meta": {"count": count}})


def _run_meta(request: web.Request) -> JsonObject:
    run_id = _int(request.match_info["id"], "test run id")
    data = _state(request).cloud.runs.get(run_id)
    if data is None:
        raise SimError(404, f"Test run {run_id} not found.")
    return data.run


async def run(request: web.Request) -> web.Response:
    meta = _run_meta(request)
    _state(request).exports.refresh(meta, time.monotonic())
    return _dumps({"k6-run": meta})


async def export(request: web.Request) -> web.Response:
    meta = _run_meta(request)
    _state(request).exports.start(meta, time.monotonic())
    status = meta["export"]["export_status"]
    return _dumps({"exports": [{"export_status": status, "load_test_run_id": meta["id"]}]})


def add_routes(app: web.Application) -> None:
    """Register every endpoint; the route name is the `endpoint` of the request log."""
    get = app.router.add_get
    get(f"{V2}/metrics", metrics, name="metrics")
    get(f"{V2}/metrics/{{id}}", metric_detail, name="metric_detail")
    get(f"{V2}/series", series, name="series")
    get(f"{V2}/thresholds", thresholds, name="thresholds")
    get(f"{V2}/thresholds/{{id}}", threshold, name="threshold")
    get(f"{V2}/run-overviews", overview, name="overview")
    get(f"{V2}/tests", tests, name="tests")
    get(f"{V2}/tests/{{id}}", test, name="test")
    get(f"{V2}/runs", runs, name="runs")
    get(f"{V2}/runs/{{id}}", run, name="run")
    app.router.add_post(f"{V2}/runs/{{id}}/export", export, name="export")
    get("/v3/organizations", organizations, name="organizations")
    get("/v3/organizations/{id}/projects", projects, name="projects")
