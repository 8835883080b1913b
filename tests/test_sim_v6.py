"""The simulator's v6 side: shapes (validated against Grafana's OpenAPI document), paging,
date filters, statuses, authentication and the fault knobs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from jsonschema import ValidationError

from harvester.simulator.cloud import SimCloud
from harvester.simulator.faults import V6_ENDPOINTS, FaultPlan
from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator
from tests.v6_schema import validate


@pytest.fixture
def cloud() -> SimCloud:
    # 5 finished runs (one aborted now and then), 1 with failed processing, 2 pending.
    return generate_cloud(runs=5, processing_error_runs=1, pending_runs=2, metrics=12, points=10)


@pytest.fixture
async def v6(simulator: Simulator) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(simulator.base_url, headers=simulator.v6_headers) as s:
        yield s


async def _get(session: aiohttp.ClientSession, path: str, **kw: Any) -> tuple[int, Any]:
    async with session.get(path, **kw) as resp:
        return resp.status, await resp.json()


#: (spec path, a concrete path, expected status) covering every v6 endpoint served.
ANSWERS = [
    ("/cloud/v6/projects", "/cloud/v6/projects?$count=true", 200),
    ("/cloud/v6/projects/{id}", "/cloud/v6/projects/3458575", 200),
    ("/cloud/v6/projects/{id}", "/cloud/v6/projects/1", 404),
    ("/cloud/v6/projects/{id}/load_tests", "/cloud/v6/projects/3458575/load_tests", 200),
    ("/cloud/v6/projects/{id}/load_tests", "/cloud/v6/projects/3458575/load_tests?$top=0", 400),
    ("/cloud/v6/load_tests", "/cloud/v6/load_tests?$orderby=name%20desc", 200),
    ("/cloud/v6/load_tests", "/cloud/v6/load_tests?$orderby=nope", 400),
    ("/cloud/v6/load_tests/{id}", "/cloud/v6/load_tests/720001", 200),
    ("/cloud/v6/load_tests/{id}", "/cloud/v6/load_tests/9", 404),
    ("/cloud/v6/load_tests/{id}/test_runs", "/cloud/v6/load_tests/720001/test_runs", 200),
    ("/cloud/v6/test_runs", "/cloud/v6/test_runs?$top=3", 200),
    ("/cloud/v6/test_runs", "/cloud/v6/test_runs?created_after=2024-01-01T00:00:00", 400),
    ("/cloud/v6/test_runs/{id}", "/cloud/v6/test_runs/100001", 200),
    ("/cloud/v6/test_runs/{id}", "/cloud/v6/test_runs/999", 404),
    ("/cloud/v6/test_runs/{id}", "/cloud/v6/test_runs/100001?x=1", 200),
]


async def test_every_v6_answer_fits_the_openapi_document(
    simulator: Simulator, v6: aiohttp.ClientSession
) -> None:
    for template, path, expected in ANSWERS:
        status, body = await _get(v6, path)
        assert status == expected, (path, body)
        validate(template, status, body)
    # Every run, in every state the generated account has, fits TestRunApiModel.
    for run_id in simulator.cloud.runs:
        status, body = await _get(v6, f"/cloud/v6/test_runs/{run_id}")
        validate("/cloud/v6/test_runs/{id}", status, body)
    status, body = await _get(v6, "/cloud/v6/auth", headers={"X-Stack-Url": "https://no.pe"})
    assert status == 403
    validate("/cloud/v6/auth", 403, body)
    stack = {"X-Stack-Url": simulator.state.v6.stack_url}
    status, body = await _get(v6, "/cloud/v6/auth", headers=stack)
    validate("/cloud/v6/auth", status, body)
    assert body["stack_id"] == simulator.stack_id


async def test_the_validator_catches_a_wrong_shape() -> None:
    with pytest.raises(ValidationError):
        validate("/cloud/v6/test_runs/{id}", 200, {"id": 1})
    with pytest.raises(ValidationError):  # a date-time without a zone is no RFC 3339
        stamp = "2024-12-03T09:53:00Z"
        project = {"id": 1, "name": "p", "is_default": False, "grafana_folder_uid": None}
        project |= {"created": stamp.replace("Z", ".553"), "updated": stamp}
        validate("/cloud/v6/projects", 200, {"value": [project]})


async def test_run_states_map_to_v6_statuses(v6: aiohttp.ClientSession) -> None:
    _, page = await _get(v6, "/cloud/v6/test_runs")
    by_id = {r["id"]: r for r in page["value"]}
    assert len(by_id) == 8
    statuses = [by_id[i]["status"] for i in sorted(by_id)]
    assert set(statuses[:5]) <= {"completed", "aborted"}
    assert statuses[5] == "aborted"  # metrics processing failed
    assert by_id[100006]["status_details"]["extra"]["message"] == "Metrics processing failed."
    assert set(statuses[6:]) == {"running", "processing_metrics"}
    for run in page["value"]:
        final = run["status"] in ("completed", "aborted")
        assert (run["ended"] is not None) == final
        assert (run["result"] is not None) == final
        assert run["options"]["thresholds"]


async def test_paging_with_top_skip_count_and_next_link(
    simulator: Simulator, v6: aiohttp.ClientSession
) -> None:
    status, page = await _get(v6, "/cloud/v6/test_runs?$top=3&$count=true")
    assert status == 200
    assert [r["id"] for r in page["value"]] == [100001, 100002, 100003]
    assert page["@count"] == 8
    assert "$skip=3" in page["@nextLink"] and "$top=3" in page["@nextLink"]
    _, last = await _get(v6, "/cloud/v6/test_runs?$top=3&$skip=6")
    assert [r["id"] for r in last["value"]] == [100007, 100008]
    assert "@nextLink" not in last and "@count" not in last
    # The server may answer fewer rows than $top: the link says where the next page starts.
    simulator.state.v6.page_cap = 2
    _, short = await _get(v6, "/cloud/v6/test_runs?$top=5")
    assert len(short["value"]) == 2
    assert "$skip=2" in short["@nextLink"]
    status, _ = await _get(v6, "/cloud/v6/test_runs?$top=1001")
    assert status == 400


async def test_created_after_is_inclusive_and_created_before_exclusive(
    v6: aiohttp.ClientSession,
) -> None:
    _, page = await _get(v6, "/cloud/v6/test_runs")
    created = [r["created"] for r in page["value"]]
    after, before = created[2], created[5]
    path = f"/cloud/v6/load_tests/720001/test_runs?created_after={after}&created_before={before}"
    _, found = await _get(v6, "/cloud/v6/test_runs", params={"created_after": after})
    assert [r["created"] for r in found["value"]] == created[2:]
    _, found = await _get(
        v6, "/cloud/v6/test_runs", params={"created_after": after, "created_before": before}
    )
    assert [r["created"] for r in found["value"]] == created[2:5]
    status, found = await _get(v6, path.replace("Z", "%2B00:00"))
    assert status == 200
    assert all(after <= r["created"] < before for r in found["value"])


async def test_bearer_and_stack_id_are_required(simulator: Simulator) -> None:
    bearer = {"Authorization": f"Bearer {simulator.token}"}
    cases = [
        ({"Authorization": f"Token {simulator.token}", "X-Stack-Id": "1"}, 401),
        (bearer, 401),  # no stack id
        ({**bearer, "X-Stack-Id": "2"}, 401),  # another stack
        ({**bearer, "X-Stack-Id": "1"}, 200),
    ]
    async with aiohttp.ClientSession(simulator.base_url) as session:
        for headers, expected in cases:
            status, body = await _get(session, "/cloud/v6/projects", headers=headers)
            assert status == expected, headers
            validate("/cloud/v6/projects", status, body)
        simulator.state.v6.stack_status = 403
        status, body = await _get(session, "/cloud/v6/projects", headers=bearer)
        assert status == 403
        assert "X-Stack-Id" in body["error"]["message"]
        # v2 keeps its own scheme.
        status, _ = await _get(session, "/loadtests/v2/runs", headers=bearer)
        assert status == 401


async def test_faults_and_rate_limit_reach_v6_paths(
    simulator: Simulator, v6: aiohttp.ClientSession
) -> None:
    simulator.faults = FaultPlan(p_503=1.0, fault_endpoints=V6_ENDPOINTS)
    async with v6.get("/cloud/v6/test_runs/100001") as resp:
        assert resp.status == 503
    simulator.faults = FaultPlan(rate_limit=1, rate_window=60)
    statuses = []
    for _ in range(2):
        async with v6.get("/cloud/v6/projects") as resp:
            statuses.append(resp.status)
    assert statuses == [200, 429]


def test_simulate_takes_the_stack_id_it_accepts() -> None:
    import urllib.error
    import urllib.request

    from harvester.cli import main
    from tests.k6_helpers import SIM_TOKEN, simulate

    with simulate("--runs", "1", "--stack-id", "7") as (base_url, _):
        for stack, expected in (("7", 200), ("1", 401)):
            request = urllib.request.Request(
                f"{base_url}/cloud/v6/projects",
                headers={"Authorization": f"Bearer {SIM_TOKEN}", "X-Stack-Id": stack},
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as resp:
                    status = resp.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            assert status == expected, stack
    assert main(["simulate", "--port", "0", "--stack-id", "0"]) == 2
