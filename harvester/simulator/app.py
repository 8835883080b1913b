"""The simulator's aiohttp application: the server-side behaviour shared by every endpoint.

One middleware does, in this order: outage switch (503), URL length cap (414), sliding-window
rate limit (429), token check (401), the endpoint (`routes.py`), then the injected fault
drawn for the request, if any, and logs every answer. Endpoints raise `SimError` for the
documented errors (400/404), which injected faults never replace.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from harvester.simulator.cloud import SimCloud
from harvester.simulator.faults import (
    BODY_FAULTS,
    STATUS_FAULTS,
    Fault,
    FaultPlan,
    cut_point,
    format_retry_after,
    latin1_body,
    url_too_long,
)
from harvester.simulator.requestlog import LoggedRequest
from harvester.simulator.routes import add_routes
from harvester.simulator.routes_v5 import add_v5_routes
from harvester.simulator.routes_v6 import add_v6_routes
from harvester.simulator.state import SIM_STATE, SimError, SimState, json_body, json_error

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: What went wrong on purpose with a request (`LoggedRequest.fault`).
FAULT_NOTE = web.RequestKey("sim_fault", str)

_REASONS = {
    "500": "Internal server error.",
    "503": "Service temporarily unavailable.",
    "429": "Request was throttled.",
}
# Gateways answer 502/504 with their own HTML page, not the API's JSON.
_GATEWAY_PAGE = "<html><head><title>{0}</title></head><body><h1>{0}</h1></body></html>"
_GATEWAY = {"502": "502 Bad Gateway", "504": "504 Gateway Time-out"}


def _authorized(request: web.Request, scheme: str, token: str) -> bool:
    said, _, value = request.headers.get("Authorization", "").partition(" ")
    return said.lower() == scheme and value.strip() == token


def _cloud_code(request: web.Request) -> str | None:
    """v6 and v5 answer errors with a string code; v2 with the status."""
    return "error" if request.path.startswith(("/cloud/v6/", "/cloud/v5/")) else None


def _auth_refusal(state: SimState, request: web.Request) -> web.Response | None:
    """v2 takes `Token <t>`; v6 and v5 `Bearer <t>` and `X-Stack-Id` (not required on
    v5 unless `v6.v5_requires_stack`; never on `/cloud/v6/auth`)."""
    path = request.path
    if _cloud_code(request) is None:
        if _authorized(request, "token", state.token):
            return None
        return json_error(401, "Invalid token or no token provided (Authorization: Token ...).")
    if not _authorized(request, "bearer", state.token):
        return json_error(401, "Invalid token", code="error")
    knobs = state.v6
    stack = request.headers.get("X-Stack-Id")
    optional = path.startswith("/cloud/v5/") and not knobs.v5_requires_stack
    if path == "/cloud/v6/auth" or (stack is None and optional) or stack == str(knobs.stack_id):
        return None
    message = f"The token has no access to stack {stack!r}." if stack else "X-Stack-Id missing."
    return json_error(knobs.stack_status, message, code="error")


def _status_fault(fault: Fault, plan: FaultPlan) -> web.Response:
    if fault.kind in _GATEWAY:
        page = _GATEWAY_PAGE.format(_GATEWAY[fault.kind])
        return web.Response(status=int(fault.kind), text=page, content_type="text/html")
    headers = None
    if fault.kind == "429" or (fault.kind == "503" and plan.retry_after_on_503):
        wait = format_retry_after(
            plan.retry_after, as_date=fault.retry_after_date, wall=time.time()
        )
        headers = {"Retry-After": wait}
    return json_error(int(fault.kind), _REASONS[fault.kind], headers)


async def _broken_body(
    request: web.Request, response: web.Response, fault: Fault
) -> web.StreamResponse:
    """Promise the whole body, write part of it, then reset or close the connection."""
    body = response.body
    if not isinstance(body, bytes):  # every endpoint answers with rendered bytes
        return response
    stream = web.StreamResponse(status=response.status)
    stream.content_type = response.content_type
    stream.content_length = len(body)
    await stream.prepare(request)
    await stream.write(body[: cut_point(len(body), fault.cut)])
    transport = request.transport
    if transport is not None:
        if fault.kind == "reset":
            # Linger 0 makes close() send a TCP RST instead of a FIN.
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        else:
            transport.close()
    return stream


def _gatekeep(state: SimState, request: web.Request, at: float) -> web.Response | None:
    """The checks before any endpoint runs; an answer when one of them says no."""
    plan = state.plan
    if state.outage:
        request[FAULT_NOTE] = "outage"
        return json_error(503, "The service is down for maintenance.")
    if url_too_long(plan, request.raw_path):
        request[FAULT_NOTE] = "url_too_long"
        return json_error(414, f"Request-URI too long (limit {plan.max_url_length} characters).")
    if state.window is not None:
        wait = state.window.admit(at)
        if wait is not None:
            state.rate_limit_hits += 1
            request[FAULT_NOTE] = "rate_limit"
            headers = {"Retry-After": format_retry_after(wait)}
            return json_error(429, "Request was throttled.", headers)
    refusal = _auth_refusal(state, request)
    if refusal is None and _run_id(request) in plan.forbidden_runs:
        request[FAULT_NOTE] = "forbidden_runs"
        return json_error(403, "You do not have permission to perform this action.")
    return refusal


async def _answer(
    state: SimState, request: web.Request, handler: Handler, at: float
) -> web.StreamResponse:
    refusal = _gatekeep(state, request, at)
    if refusal is not None:
        return refusal
    # Drawn on arrival, so the sequence follows request order whatever the answers are.
    fault = state.draw_fault(_endpoint(request))
    try:
        response = await handler(request)
    except SimError as exc:
        if exc.fault is not None:
            request[FAULT_NOTE] = exc.fault
        return json_error(exc.status, exc.message, code=exc.code, target=exc.target)
    except web.HTTPException as exc:  # the router's 404/405
        return json_error(exc.status, exc.reason, code=_cloud_code(request))
    if fault is None or not isinstance(response, web.Response):
        return response
    # Only answers that would have succeeded meet a fault: a 404 stays a 404.
    state.fault_counts[fault.kind] += 1
    request[FAULT_NOTE] = fault.kind
    if fault.kind in STATUS_FAULTS:
        return _status_fault(fault, state.plan)
    if fault.kind in BODY_FAULTS:
        return await _broken_body(request, response, fault)
    if fault.kind == "unlisted":
        return json_body(b"{}")
    if fault.kind == "latin1":
        if isinstance(response.body, bytes):  # every endpoint answers with rendered bytes
            response.body = latin1_body(response.body)
        return response
    await asyncio.sleep(state.plan.delay_seconds)  # a delay: the right answer, late
    return response


def _endpoint(request: web.Request) -> str:
    return request.match_info.route.name or "unknown"


def _run_id(request: web.Request) -> int | None:
    """The test run a request is about, if any."""
    on_path = _endpoint(request) in ("run", "export", "v6_run")
    raw = request.match_info.get("id") if on_path else request.query.get("test_run_id")
    raw = raw or request.match_info.get("run")
    return int(raw) if raw is not None and raw.isdigit() else None


def _logged(request: web.Request, status: int, at: float) -> LoggedRequest:
    query = request.query
    ids = tuple(query.getall("ids[]", ()))
    path_id = request.match_info.get("id")
    endpoint = _endpoint(request)
    if path_id is not None and endpoint in ("metric_detail", "threshold"):
        ids = (path_id,)
    return LoggedRequest(
        endpoint=endpoint,
        path=request.path,
        run_id=_run_id(request),
        ids=ids,
        method=query.get("method"),
        status=status,
        fault=request.get(FAULT_NOTE),
        url_length=len(request.raw_path),
        at=at,
    )


@web.middleware
async def simulate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Apply the simulated server's rules around every endpoint and log the answer."""
    state = request.app[SIM_STATE]
    at = time.monotonic()
    response = await _answer(state, request, handler, at)
    state.log.append(_logged(request, response.status, at))
    return response


def build_app(cloud: SimCloud, *, token: str, faults: FaultPlan | None = None) -> web.Application:
    """The simulated API over `cloud`, accepting `Authorization: Token <token>`."""
    app = web.Application(middlewares=[simulate])
    app[SIM_STATE] = SimState(cloud, token, faults or FaultPlan())
    add_routes(app)
    add_v6_routes(app)
    add_v5_routes(app)
    return app
