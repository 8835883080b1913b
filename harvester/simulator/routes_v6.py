"""The simulated v6 endpoints (projects, load tests, test runs) over the shared `SimCloud`.

Lists page OData style: `$top` (default and maximum 1000; more is a 400), `$skip`,
`$count=true` adds `@count`, `@nextLink` while rows remain (a page may hold fewer rows
than `$top` when `SimState.v6.page_cap` says so). `created_after` is inclusive,
`created_before` exclusive; both need a zone. Errors use v6's body with a string code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web

from harvester.simulator.model import JsonObject
from harvester.simulator.state import SIM_STATE, SimError, SimState, json_body
from harvester.simulator.v6_model import (
    epoch_of,
    parse_moment,
    v6_load_test,
    v6_project,
    v6_run,
)

V6 = "/cloud/v6"
MAX_TOP = 1000
_ORDER = {
    "projects": ("created", "name"),
    "load_tests": ("id", "project_id", "name", "created", "updated"),
    "test_runs": ("created",),
}


def _state(request: web.Request) -> SimState:
    return request.app[SIM_STATE]


def invalid(message: str, target: str | None = None) -> SimError:
    return SimError(400, message, code="validation_error", target=target)


def _int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise invalid(f"{name} must be an integer, got {text!r}.", name) from None


def _path_id(request: web.Request, what: str) -> int:
    text = request.match_info["id"]
    if not text.isdigit():
        raise SimError(404, f"{what} {text!r} not found.", code="not_found")
    return int(text)


def _ordered(request: web.Request, kind: str, rows: list[JsonObject]) -> list[JsonObject]:
    text = request.query.get("$orderby")
    if text is None or kind == "all_runs":
        if text is not None:
            raise invalid("$orderby is not supported here.", "$orderby")
        return rows
    for part in reversed([p.strip() for p in text.split(",")]):
        field, _, direction = part.partition(" ")
        if field not in _ORDER[kind] or direction not in ("", "asc", "desc"):
            raise invalid(f"$orderby: {part!r} is not one of {_ORDER[kind]}.", "$orderby")
        rows = sorted(rows, key=lambda r: r[field], reverse=direction == "desc")
    return rows


def _created_filter(request: web.Request, rows: list[JsonObject]) -> list[JsonObject]:
    bounds = {}
    for key in ("created_after", "created_before"):
        text = request.query.get(key)
        if text is not None:
            moment = parse_moment(text)
            if moment is None:
                raise invalid(f"{key} must be an RFC 3339 date-time with a zone.", key)
            bounds[key] = moment.timestamp()
    after, before = bounds.get("created_after"), bounds.get("created_before")
    return [
        r
        for r in rows
        if (after is None or epoch_of(r["created"]) >= after)
        and (before is None or epoch_of(r["created"]) < before)
    ]


def _page(request: web.Request, rows: list[JsonObject]) -> web.Response:
    query = request.query
    top = _int(query.get("$top", str(MAX_TOP)), "$top")
    skip = _int(query.get("$skip", "0"), "$skip")
    if not 0 < top <= MAX_TOP or skip < 0:
        raise invalid(f"$top must be 1-{MAX_TOP} and $skip not negative.", "$top")
    cap = _state(request).v6.page_cap
    size = min(top, cap) if cap is not None else top
    body: dict[str, Any] = {"value": rows[skip : skip + size]}
    if query.get("$count", "").lower() == "true":
        body["@count"] = len(rows)
    if skip + size < len(rows):
        rest = [(k, v) for k, v in query.items() if k not in ("$skip", "$top")]
        link = urlencode([*rest, ("$skip", skip + size), ("$top", top)], safe="$")
        body["@nextLink"] = str(request.url.with_query(None)) + "?" + link
    return json_body(orjson.dumps(body))


def _listing(kind: str, rows: Callable[[web.Request], list[JsonObject]]) -> Any:
    async def handler(request: web.Request) -> web.Response:
        found = rows(request)
        if kind in ("test_runs", "all_runs"):
            found = _created_filter(request, found)
        if name := request.query.get("name"):
            found = [r for r in found if r.get("name") == name]
        return _page(request, _ordered(request, kind, found))

    return handler


def _projects(request: web.Request) -> list[JsonObject]:
    cloud = _state(request).cloud
    return [v6_project(cloud.projects[k]) for k in sorted(cloud.projects)]


def _project(request: web.Request) -> JsonObject:
    project_id = _path_id(request, "Project")
    found = _state(request).cloud.projects.get(project_id)
    if found is None:
        raise SimError(404, f"Project {project_id} not found.", code="not_found")
    return found


def _tests_of(request: web.Request) -> list[JsonObject]:
    project = _project(request)
    return [v6_load_test(t) for t in _state(request).cloud.tests_of(int(project["id"]))]


def _all_tests(request: web.Request) -> list[JsonObject]:
    return [v6_load_test(t) for t in _state(request).cloud.tests_of(None)]


def _test(request: web.Request) -> JsonObject:
    test_id = _path_id(request, "Load test")
    found = _state(request).cloud.tests.get(test_id)
    if found is None:
        raise SimError(404, f"Load test {test_id} not found.", code="not_found")
    return found


def _runs_of(request: web.Request) -> list[JsonObject]:
    test = _test(request)
    cloud = _state(request).cloud
    return [
        v6_run(cloud.runs[r])
        for r in sorted(cloud.runs)
        if cloud.runs[r].run["test_id"] == test["id"]
    ]


def _all_runs(request: web.Request) -> list[JsonObject]:
    cloud = _state(request).cloud
    return [v6_run(cloud.runs[r]) for r in sorted(cloud.runs)]


def _one(make: Callable[[web.Request], JsonObject]) -> Any:
    async def handler(request: web.Request) -> web.Response:
        return json_body(orjson.dumps(make(request)))

    return handler


def _run(request: web.Request) -> JsonObject:
    run_id = _path_id(request, "Test run")
    found = _state(request).cloud.runs.get(run_id)
    if found is None:
        raise SimError(404, f"Test run {run_id} not found.", code="not_found")
    return v6_run(found)


def _auth(request: web.Request) -> JsonObject:
    state = _state(request)
    if request.headers.get("X-Stack-Url", "").rstrip("/") != state.v6.stack_url:
        raise SimError(403, "No stack with that URL for this token.", code="error")
    default = min(state.cloud.projects, default=0)
    return {"stack_id": state.v6.stack_id, "default_project_id": default}


def add_v6_routes(app: web.Application) -> None:
    """Register the v6 endpoints; route names start with `v6_`."""
    get = app.router.add_get
    get(f"{V6}/auth", _one(_auth), name="v6_auth")
    get(f"{V6}/projects", _listing("projects", _projects), name="v6_projects")
    get(f"{V6}/projects/{{id}}", _one(lambda r: v6_project(_project(r))), name="v6_project")
    get(f"{V6}/projects/{{id}}/load_tests", _listing("load_tests", _tests_of), name="v6_tests")
    get(f"{V6}/load_tests", _listing("load_tests", _all_tests), name="v6_all_tests")
    get(f"{V6}/load_tests/{{id}}", _one(lambda r: v6_load_test(_test(r))), name="v6_test")
    get(f"{V6}/load_tests/{{id}}/test_runs", _listing("test_runs", _runs_of), name="v6_runs")
    get(f"{V6}/test_runs", _listing("all_runs", _all_runs), name="v6_all_runs")
    get(f"{V6}/test_runs/{{id}}", _one(_run), name="v6_run")
