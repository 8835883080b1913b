"""The simulator's v5 metrics side: the function-call syntax and its quoting rules, the
documented statuses, label sanitizing, and values that agree with the v2 series."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from yarl import URL

from harvester.simulator.cloud import SimCloud
from harvester.simulator.faults import FaultPlan
from harvester.simulator.generated import generate_cloud
from harvester.simulator.model import JsonObject
from harvester.simulator.server import Simulator
from harvester.simulator.v5_parse import (
    Invalid,
    Unparsable,
    parse_arguments,
    parse_call,
    parse_expression,
    parse_selector,
)

RUN = "/cloud/v5/test_runs/100001"


@pytest.fixture
async def v5(simulator: Simulator) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(simulator.base_url, headers=simulator.v6_headers) as s:
        yield s


async def _get(session: aiohttp.ClientSession, path: str) -> tuple[int, Any]:
    async with session.get(URL(path, encoded=True)) as resp:
        return resp.status, await resp.json()


def _call(function: str, query: str, metric: str, extra: str = "") -> str:
    """A v5 path with the characters a path cannot hold percent-encoded."""
    text = f"{function}(query='{query}',metric='{metric}'{extra})"
    for char, code in ((" ", "%20"), ('"', "%22"), ("{", "%7B"), ("}", "%7D")):
        text = text.replace(char, code)
    return f"{RUN}/{text}"


# --- the syntax ---------------------------------------------------------------------


def test_arguments_quoting_and_literals() -> None:
    args = parse_arguments("query='it''s',step=5,ids=[1, 2],start=2025-01-01T00:00:00Z")
    assert args["query"].text == "it's"  # type: ignore[union-attr]
    assert args["step"] == 5
    assert args["ids"] == [1, 2]
    assert args["start"] == datetime(2025, 1, 1, tzinfo=UTC)
    for bad in ("step=5,", "step=5, query='x'", "step", "start=2025-01-01T00:00:00",
                "query='open", "ids=[]", "step=5,step=6", "x=abc"):  # fmt: skip
        with pytest.raises(Unparsable):
            parse_arguments(bad)


def test_calls_need_their_keys_and_types() -> None:
    call = parse_call("query_range_k6(metric='m',query='increase',step=2)")
    assert (call.function, call.query, call.metric, call.step) == (
        "query_range_k6",
        "increase",
        "m",
        2,
    )
    with pytest.raises(Unparsable):
        parse_call("query_range_k6(query='increase')")  # no metric
    with pytest.raises(Unparsable):
        parse_call("query_aggregate_k6(query='x',metric='m',step=5)")  # no step here
    with pytest.raises(Unparsable):
        parse_call("query_range_k6(query='x',metric='m')/")
    with pytest.raises(Invalid):
        parse_call("query_range_k6(query='x',metric='m',start='2025-01-01T00:00:00Z')")
    with pytest.raises(Invalid):
        parse_call("query_range_k6(query='x',metric='m',step='5')")


def test_expressions_and_selectors() -> None:
    expr = parse_expression("histogram_quantile(0.95) by (name,status)")
    assert (expr.method, expr.by, expr.wrap) == (
        "histogram_quantile(0.95)",
        ("name", "status"),
        None,
    )
    expr = parse_expression("avg(rate by (name,method)) by (method)")
    assert (expr.wrap, expr.method, expr.by, expr.outer_by) == (
        "avg",
        "rate",
        ("name", "method"),
        ("method",),
    )
    assert parse_expression("max").method == "max"
    with pytest.raises(Invalid):
        parse_expression("increase by name")
    name, matchers = parse_selector('http_reqs{status!="0",name=~"a.*",q="say \\"hi\\""}')
    assert name == "http_reqs"
    assert [(m.label, m.op, m.value) for m in matchers] == [
        ("status", "!=", "0"),
        ("name", "=~", "a.*"),
        ("q", "=", 'say "hi"'),
    ]
    with pytest.raises(Invalid):
        parse_selector('{__name__="x"}')
    with pytest.raises(Invalid):
        parse_selector("http_reqs{status}")


# --- statuses -----------------------------------------------------------------------


async def test_documented_statuses(v5: aiohttp.ClientSession) -> None:
    cases = [
        (f"{RUN}/metrics", 200),
        (f"{RUN}/metrics/", 404),  # a trailing slash
        ("/cloud/v5/test_runs/abc/metrics", 404),
        ("/cloud/v5/test_runs/999/metrics", 403),
        ("/cloud/v5/test_runs/999/" + _call("query_range_k6", "increase", "http_reqs")[34:], 403),
        (_call("query_range_k6", "increase", "http_reqs", ",step=3"), 200),
        (_call("query_range_k6", "increase", "http_reqs", ",nope=3"), 404),
        (_call("query_range_k6", "increase", "http_reqs", ",step=3") + "?x=1", 404),
        (_call("query_range_k6", "increase", "http_reqs", ",start=2024-06-01T00:00:00"), 404),
        (_call("query_range_k6", "increase", "http_reqs", ",start='2024-06-01T00:00:00Z'"), 400),
        (_call("query_range_k6", "histogram_avg", "http_reqs"), 400),  # not for a counter
        (_call("query_range_k6", "histogram_avg", "no_such_metric"), 200),
        (_call("query_range_k6", "increase", "http_reqs", ",step=0"), 500),
        (_call("query_range_k6", "last_time", "vus"), 500),
        (_call("query_aggregate_k6", "increase", '{__name__="http_reqs"}'), 400),
        (f"{RUN}/series", 400),  # match[] is required
        (f"{RUN}/labels?match[]=http_reqs", 500),
    ]
    for path, expected in cases:
        status, body = await _get(v5, path)
        assert status == expected, (path, body)
        if status >= 400:
            assert isinstance(body["error"]["message"], str)
    _, empty = await _get(v5, _call("query_range_k6", "histogram_avg", "no_such_metric"))
    assert empty == {"status": "success", "data": {"resultType": "matrix", "result": []}}


async def test_literal_and_encoded_parentheses_and_quotes_read_the_same(
    v5: aiohttp.ClientSession,
) -> None:
    plain = _call("query_aggregate_k6", "increase", "http_reqs")
    encoded = plain.replace("(", "%28").replace(")", "%29").replace("'", "%27")
    assert await _get(v5, plain) == await _get(v5, encoded)


async def test_v5_auth_bearer_required_stack_id_optional(simulator: Simulator) -> None:
    bearer = {"Authorization": f"Bearer {simulator.token}"}
    async with aiohttp.ClientSession(simulator.base_url) as session:
        for headers, expected in [
            ({}, 401),
            ({"Authorization": f"Token {simulator.token}"}, 401),
            (bearer, 200),
            ({**bearer, "X-Stack-Id": "1"}, 200),
            ({**bearer, "X-Stack-Id": "7"}, 401),
        ]:
            async with session.get(f"{RUN}/labels", headers=headers) as resp:
                assert resp.status == expected, headers
        simulator.state.v6.v5_requires_stack = True
        async with session.get(f"{RUN}/labels", headers=bearer) as resp:
            assert resp.status == 401


async def test_faults_and_rate_limit_reach_v5_paths(
    simulator: Simulator, v5: aiohttp.ClientSession
) -> None:
    simulator.faults = FaultPlan(p_500=1.0)
    status, _ = await _get(v5, _call("query_aggregate_k6", "increase", "http_reqs"))
    assert status == 500
    assert simulator.fault_counts["500"] == 1
    simulator.faults = FaultPlan(rate_limit=1, rate_window=60)
    assert (await _get(v5, f"{RUN}/labels"))[0] == 200
    assert (await _get(v5, f"{RUN}/metrics"))[0] == 429


# --- values -------------------------------------------------------------------------


async def test_range_values_agree_with_the_v2_series(
    simulator: Simulator, v5: aiohttp.ClientSession
) -> None:
    data = simulator.cloud.runs[100001]
    _, labels = await _get(v5, f"{RUN}/labels")
    assert {"__name__", "test_run_id", "group", "method", "status", "url"} <= set(labels["data"])
    by = ",".join(n for n in labels["data"] if n not in ("__name__", "test_run_id"))
    _, answer = await _get(
        v5, _call("query_range_k6", f"increase by ({by})", "http_reqs", ",step=3")
    )
    result = answer["data"]["result"]
    v2_metrics = [m for m in data.metrics() if m["name"] == "http_reqs"]
    assert len(result) == len(v2_metrics)  # grouped by every label: one series per metric
    for metric in v2_metrics:
        entry = next(
            e for e in result if all(e["metric"].get(k) == v for k, v in metric["tags"].items())
        )
        serie = data.serie(metric["id"], "sum")
        assert serie is not None
        assert [v for _, v in entry["values"]] == [p["value"] for p in serie["values"]]
        assert entry["metric"]["test_run_id"] == "100001"
    # No `by`: one series; a wider step adds buckets up; the aggregate is the whole run.
    _, one = await _get(v5, _call("query_range_k6", "increase", "http_reqs", ",step=30"))
    (single,) = one["data"]["result"]
    assert set(single["metric"]) == {"__name__", "test_run_id"}
    total = sum(v for e in result for _, v in e["values"])
    assert math.isclose(sum(v for _, v in single["values"]), total)
    _, agg = await _get(v5, _call("query_aggregate_k6", "increase", "http_reqs"))
    assert agg["data"]["resultType"] == "vector"
    assert math.isclose(agg["data"]["result"][0]["values"][0][1], total)
    _, summed = await _get(
        v5, _call("query_aggregate_k6", "sum(increase by (status)) by (method)", "http_reqs")
    )
    assert math.isclose(sum(e["values"][0][1] for e in summed["data"]["result"]), total)


async def test_rate_and_trend_methods(v5: aiohttp.ClientSession) -> None:
    nz = await _get(v5, _call("query_aggregate_k6", "increase_nz", "checks"))
    z = await _get(v5, _call("query_aggregate_k6", "increase_z", "checks"))
    total = await _get(v5, _call("query_aggregate_k6", "increase_total", "checks"))
    ratio = await _get(v5, _call("query_aggregate_k6", "ratio", "checks"))

    def value(answer: tuple[int, Any]) -> float:
        return float(answer[1]["data"]["result"][0]["values"][0][1])

    assert math.isclose(value(nz) + value(z), value(total))
    assert math.isclose(value(ratio), value(nz) / value(total))
    selector = 'http_req_duration{status="200"}'
    for method in ("histogram_avg", "histogram_quantile(0.95)", "histogram_count_increase"):
        status, body = await _get(v5, _call("query_aggregate_k6", method, selector))
        assert status == 200, method
        assert body["data"]["result"][0]["values"][0][1] > 0


class TaggedRun:
    """A run whose one counter carries a k6 tag key that is no label name."""

    run_id = 42

    def __init__(self) -> None:
        created = "2024-06-01T00:00:00Z"
        self.run: JsonObject = {"id": 42, "test_id": 1, "project_id": 1, "organization_id": 1,
                    "created": created, "started": created, "ended": "2024-06-01T00:00:03Z",
                    "duration": 3, "run_status": 3, "processing_status": 2, "result_status": 0,
                    "vus": 1}  # fmt: skip

    def metrics(self) -> list[JsonObject]:
        return [{"id": "m1", "name": "orders", "type": "counter", "tags": {"région": "eu"}}]

    def metric_detail(self, metric_id: str) -> JsonObject | None:
        return None

    def serie(self, metric_id: str, method: str | None) -> JsonObject | None:
        value = {"count": 2.0, "sum": 5.0, "min": 2.0, "max": 3.0, "last": 3.0}.get(method or "")
        value = 2.5 if method == "mean" else 0.5 if method == "stddev" else value
        return {"values": [{"timestamp": "2024-06-01T00:00:00Z", "value": value}]}

    def thresholds(self) -> tuple[list[JsonObject], list[JsonObject]]:
        return [], []

    def overview(self) -> JsonObject:
        return {}


async def test_tag_keys_that_are_no_label_names_are_sanitized() -> None:
    cloud = SimCloud()
    cloud.add_run(TaggedRun())
    async with (
        Simulator(cloud) as sim,
        aiohttp.ClientSession(sim.base_url, headers=sim.v6_headers) as s,
    ):
        _, labels = await _get(s, "/cloud/v5/test_runs/42/labels")
        assert labels["data"] == ["__name__", "r_gion", "test_run_id"]
        path = "/cloud/v5/test_runs/42/query_aggregate_k6(query='increase%20by%20(r_gion)'"
        path += ",metric='orders')"
        _, answer = await _get(s, path)
        assert answer["data"]["result"] == [
            {
                "metric": {"__name__": "orders", "r_gion": "eu", "test_run_id": "42"},
                "values": [[1717200003, 5.0]],
            }
        ]
        _, values = await _get(s, "/cloud/v5/test_runs/42/label/r_gion/values")
        assert values["data"] == ["eu"]


@pytest.fixture
def cloud() -> SimCloud:
    return generate_cloud(runs=2, metrics=40, points=12)
