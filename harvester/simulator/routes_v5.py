"""The simulated v5 metrics endpoints of a single run, with v6.md's statuses.

404 for a URL that does not parse (a non-numeric run id, an unknown or missing key, a
bad literal, a zone-less date, a trailing slash, a query string on a function route);
403 for an unknown run; 400 for a method that does not fit the metric's type, a bad
selector or a literal of the wrong type; 200 with an empty result for an unknown metric;
500 for `step<=0`, `/labels?match[]=...` and `last_time`, as observed on the live API.
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import unquote

import orjson
from aiohttp import web

from harvester.simulator.state import SIM_STATE, SimError, SimState, json_body
from harvester.simulator.v5_data import V5View
from harvester.simulator.v5_parse import (
    Invalid,
    Matcher,
    Unparsable,
    parse_call,
    parse_expression,
    parse_selector,
)
from harvester.simulator.v6_model import ended_of, epoch_of

V5 = "/cloud/v5/test_runs"


def _state(request: web.Request) -> SimState:
    return request.app[SIM_STATE]


def _view(request: web.Request) -> V5View:
    text = request.match_info["run"]
    if not text.isdigit():
        raise SimError(404, "Not found.", code="error")
    view = _state(request).v5_view(int(text))
    if view is None:
        message = "Authentication error - could not find or access requested resource."
        raise SimError(403, message, code="error")
    return view


def _success(data: object) -> web.Response:
    return json_body(orjson.dumps({"status": "success", "data": data}))


async def metrics(request: web.Request) -> web.Response:
    return json_body(orjson.dumps({"value": _view(request).metrics()}))


async def labels(request: web.Request) -> web.Response:
    view = _view(request)
    if "match[]" in request.query:
        raise SimError(500, "Unknown error", code="error", fault="observed_500")
    return _success(view.label_names())


async def label_values(request: web.Request) -> web.Response:
    view = _view(request)
    label = request.match_info["label"]
    values = {s.labels.get(label) for s in view.series}
    if label == "__name__":
        values = {s.name for s in view.series}
    return _success(sorted(v for v in values if v is not None))


async def series(request: web.Request) -> web.Response:
    view = _view(request)
    selectors = request.query.getall("match[]", ())
    if not selectors:
        raise SimError(400, "At least one match[] is required.", code="validation_error")
    found = []
    for text in selectors:
        name, matchers = _selector(text)
        found += view.label_sets(name, matchers)
    return _success(found)


def _selector(text: str) -> tuple[str, tuple[Matcher, ...]]:
    try:
        return parse_selector(text)
    except Invalid as exc:
        raise SimError(400, str(exc), code="validation_error") from None


def _epoch(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


async def query(request: web.Request) -> web.Response:
    view = _view(request)
    prefix = f"{V5}/{request.match_info['run']}/"
    raw = request.rel_url.raw_path
    if request.rel_url.raw_query_string or not raw.startswith(prefix):
        raise SimError(404, "Not found.", code="error")
    try:
        call = parse_call(unquote(raw[len(prefix) :]))
        expr = parse_expression(call.query)
        name, matchers = parse_selector(call.metric)
    except Unparsable:
        raise SimError(404, "Not found.", code="error") from None
    except Invalid as exc:
        raise SimError(400, str(exc), code="validation_error", target=None) from None
    if call.step is not None and call.step <= 0:
        raise SimError(500, "Unknown error", code="error", fault="observed_500")
    if expr.method == "last_time":
        raise SimError(500, "Unknown error", code="error", fault="observed_500")
    meta = view.data.run
    start = epoch_of(str(meta["created"]))
    ended = ended_of(view.data)
    span = (start, ended.timestamp() if ended is not None else start)
    aggregate = call.function == "query_aggregate_k6"
    try:
        result = view.query(
            expr,
            name,
            matchers,
            step=None if aggregate else (call.step or 1),
            window=(_epoch(call.start), _epoch(call.end)),
            span=span,
        )
    except Invalid as exc:
        raise SimError(400, str(exc), code="error") from None
    kind = "vector" if aggregate else "matrix"
    return _success({"resultType": kind, "result": result})


def add_v5_routes(app: web.Application) -> None:
    """Register the v5 endpoints of a run; route names start with `v5_`."""
    get = app.router.add_get
    get(f"{V5}/{{run}}/metrics", metrics, name="v5_metrics")
    get(f"{V5}/{{run}}/labels", labels, name="v5_labels")
    get(f"{V5}/{{run}}/label/{{label}}/values", label_values, name="v5_label_values")
    get(f"{V5}/{{run}}/series", series, name="v5_series")
    get(f"{V5}/{{run}}/{{call:.+}}", query, name="v5_query")
