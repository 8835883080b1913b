"""The simulated k6 Cloud API: documented shapes, errors, discovery, generated data, CLI."""

from __future__ import annotations

import argparse
import io
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from harvester.errors import ConfigError
from harvester.simulator import command
from harvester.simulator.cloud import SimCloud
from harvester.simulator.faults import FaultPlan
from harvester.simulator.generated import FIXED_ANCHOR, GeneratedRun, generate_cloud
from harvester.simulator.requestlog import LoggedRequest, RequestLog
from harvester.simulator.server import Simulator

V2 = "/loadtests/v2"
RUN = 100001
METRIC_KEYS = {
    "check_id", "contains", "group_id", "id", "name", "project_id", "tags", "test_run_id",
    "type", "url_id",
}  # fmt: skip
K6_METRICS = {
    "http_req_duration", "http_req_blocked", "http_req_connecting", "http_req_waiting",
    "http_req_sending", "http_req_receiving", "http_req_tls_handshaking", "http_reqs",
    "http_req_failed", "checks", "iterations", "iteration_duration", "vus", "vus_max",
    "data_sent", "data_received", "group_duration",
}  # fmt: skip
HEX32 = re.compile(r"[0-9a-f]{32}")


async def get(client: aiohttp.ClientSession, path: str, **params: Any) -> tuple[int, Any]:
    """GET and parse the JSON body; list values become repeated parameters."""
    query = [(k, str(x)) for k, v in params.items() for x in (v if isinstance(v, list) else [v])]
    async with client.get(path, params=query) as response:
        assert response.content_type == "application/json"
        return response.status, orjson.loads(await response.read())


async def metric_list(client: aiohttp.ClientSession, run_id: int = RUN) -> list[dict[str, Any]]:
    status, body = await get(client, f"{V2}/metrics", test_run_id=run_id)
    assert status == 200
    metrics: list[dict[str, Any]] = body["k6-metrics"]
    return metrics


async def test_metrics_list_has_the_documented_fields_types_and_units(
    sim_client: aiohttp.ClientSession,
) -> None:
    metrics = await metric_list(sim_client)
    assert len(metrics) == 30
    for metric in metrics:
        assert set(metric) == METRIC_KEYS
        assert HEX32.fullmatch(metric["id"]) and metric["test_run_id"] == RUN
        assert metric["name"] in K6_METRICS
        expected_unit = {"data_sent": "data", "data_received": "data"}.get(metric["name"])
        if metric["type"] == "trend":
            expected_unit = "time"
        assert metric["contains"] == (expected_unit or "default")
    assert len({m["id"] for m in metrics}) == len(metrics)


async def test_http_metrics_are_split_by_url_method_and_status_with_url_and_group_ids(
    sim_client: aiohttp.ClientSession,
) -> None:
    metrics = await metric_list(sim_client)
    durations = [m for m in metrics if m["name"] == "http_req_duration"]
    variants = {(m["tags"]["url"], m["tags"]["method"], m["tags"]["status"]) for m in durations}
    assert len(variants) == len(durations) >= 2
    for metric in metrics:
        if metric["name"].startswith("http_req"):
            assert set(metric["tags"]) == {"url", "method", "status", "group"}
            assert metric["url_id"] and metric["group_id"] and metric["check_id"] is None
        if metric["name"] == "checks":
            assert metric["check_id"] and metric["type"] == "rate"


async def test_metric_detail_adds_only_the_included_check_group_and_url_that_apply(
    sim_client: aiohttp.ClientSession,
) -> None:
    metrics = await metric_list(sim_client)
    http = next(m for m in metrics if m["name"] == "http_req_duration")
    check = next(m for m in metrics if m["name"] == "checks")
    path = f"{V2}/metrics/{http['id']}"
    _, bare = await get(sim_client, path, test_run_id=RUN)
    assert bare == {"k6-metric": http}
    _, full = await get(sim_client, path, test_run_id=RUN, **{"include[]": ["url", "group"]})
    assert set(full) == {"k6-metric", "k6-url", "k6-group"}
    assert full["k6-url"] == {
        "id": http["url_id"],
        "method": http["tags"]["method"],
        "status": int(http["tags"]["status"]),
        "url": http["tags"]["url"],
    }
    assert full["k6-group"]["id"] == http["group_id"] and full["k6-group"]["name"]
    every = ["url", "group", "check"]
    _, checked = await get(
        sim_client, f"{V2}/metrics/{check['id']}", test_run_id=RUN, **{"include[]": every}
    )
    assert set(checked) == {"k6-metric", "k6-group", "k6-check"}  # a check has no URL
    assert checked["k6-check"] == {"id": check["check_id"], "name": check["tags"]["check"]}


async def test_metric_detail_rejects_unknown_includes_and_unknown_metrics(
    sim_client: aiohttp.ClientSession,
) -> None:
    metric = (await metric_list(sim_client))[0]
    path = f"{V2}/metrics/{metric['id']}"
    status, body = await get(sim_client, path, test_run_id=RUN, **{"include[]": "colour"})
    assert status == 400 and body["error"]["message"]
    status, body = await get(sim_client, f"{V2}/metrics/{'0' * 32}", test_run_id=RUN)
    assert status == 404 and body["error"]["code"] == 404


async def test_series_returns_one_documented_serie_per_id_from_the_run_start(
    simulator: Simulator, sim_client: aiohttp.ClientSession
) -> None:
    ids = [m["id"] for m in await metric_list(sim_client)][:5]
    status, body = await get(sim_client, f"{V2}/series", test_run_id=RUN, **{"ids[]": ids})
    assert status == 200 and list(body) == ["k6-serie"]
    assert [s["metric_id"] for s in body["k6-serie"]] == ids
    started = datetime.strptime(simulator.cloud.runs[RUN].run["started"], "%Y-%m-%dT%H:%M:%SZ")
    expected = [
        (started + timedelta(seconds=3 * i)).strftime("%Y-%m-%dT%H:%M:%SZ") for i in range(20)
    ]
    for serie in body["k6-serie"]:
        assert set(serie) == {"agg", "id", "method", "metric_id", "test_run_id", "values"}
        assert serie["method"] == "mean" and serie["test_run_id"] == RUN
        assert HEX32.fullmatch(serie["id"])
        assert [v["timestamp"] for v in serie["values"]] == expected
        assert all(set(v) == {"timestamp", "value"} and v["value"] >= 0 for v in serie["values"])


async def test_series_method_changes_the_values_deterministically(
    sim_client: aiohttp.ClientSession,
) -> None:
    metric = next(m for m in await metric_list(sim_client) if m["name"] == "http_req_duration")

    async def values(method: str) -> list[float]:
        params = {"ids[]": metric["id"], "method": method}
        _, body = await get(sim_client, f"{V2}/series", test_run_id=RUN, **params)
        assert body["k6-serie"][0]["method"] == method
        return [v["value"] for v in body["k6-serie"][0]["values"]]

    mean, p95, fraction, top, low = [await values(m) for m in ("mean", "p95", "0.95", "max", "min")]
    assert p95 == fraction  # two spellings of one aggregation
    assert all(lo < m < p < t for lo, m, p, t in zip(low, mean, p95, top, strict=True))
    assert await values("mean") == mean
    counts = await values("count")
    assert all(isinstance(n, int) and n >= 1 for n in counts)


async def test_series_rejects_unknown_methods_and_requests_without_ids(
    sim_client: aiohttp.ClientSession,
) -> None:
    metric = (await metric_list(sim_client))[0]
    params = {"ids[]": metric["id"], "method": "loudest"}
    status, body = await get(sim_client, f"{V2}/series", test_run_id=RUN, **params)
    assert status == 400 and "loudest" in body["error"]["message"]
    status, _ = await get(sim_client, f"{V2}/series", test_run_id=RUN)
    assert status == 400


async def test_series_leaves_out_metrics_without_a_serie_and_unknown_ids() -> None:
    cloud = generate_cloud(runs=1, metrics=30, points=5, missing_series=4)
    run = cloud.runs[RUN]
    assert isinstance(run, GeneratedRun)
    missing = run.missing
    async with (
        Simulator(cloud) as sim,
        aiohttp.ClientSession(sim.base_url, headers=sim.headers) as client,
    ):
        ids = [m["id"] for m in await metric_list(client)]
        status, body = await get(
            client, f"{V2}/series", test_run_id=RUN, **{"ids[]": [*ids, "f" * 32]}
        )
    assert status == 200 and len(missing) == 4
    assert [s["metric_id"] for s in body["k6-serie"]] == [i for i in ids if i not in missing]


async def test_thresholds_list_filter_and_read_have_the_documented_shapes(
    sim_client: aiohttp.ClientSession,
) -> None:
    status, body = await get(sim_client, f"{V2}/thresholds", test_run_id=RUN)
    assert status == 200 and set(body) == {"k6-metrics", "k6-thresholds"}
    thresholds = body["k6-thresholds"]
    assert 1 <= len(thresholds) <= 3
    assert [m["id"] for m in body["k6-metrics"]] == [f"threshold_{t['id']}" for t in thresholds]
    for threshold in thresholds:
        assert set(threshold) == {
            "calc_state", "calculated_value", "id", "metric_id", "name", "stat", "tainted",
            "tainted_at", "testrun_id", "value",
        }  # fmt: skip
        assert set(threshold["calc_state"]) == {
            "max_created_at",
            "max_time",
            "min_time",
            "tainted_value",
        }
    first = thresholds[0]
    _, one = await get(sim_client, f"{V2}/thresholds", test_run_id=RUN, **{"ids[]": first["id"]})
    assert one["k6-thresholds"] == [first] and len(one["k6-metrics"]) == 1
    status, read = await get(sim_client, f"{V2}/thresholds/{first['id']}", test_run_id=RUN)
    assert status == 200 and read["k6-threshold"]["test_run_id"] == RUN  # the read spelling
    assert read["k6-threshold"]["metric_id"] == first["metric_id"]
    status, _ = await get(sim_client, f"{V2}/thresholds/999", test_run_id=RUN)
    assert status == 404


async def test_run_overview_and_export_answer_the_documented_bodies(
    sim_client: aiohttp.ClientSession,
) -> None:
    status, body = await get(sim_client, f"{V2}/run-overviews", test_run_id=RUN)
    assert status == 200
    (overview,) = body["k6-run-overviews"]
    assert set(overview) == {
        "checks_hits_successes", "checks_hits_total", "checks_successes", "checks_total",
        "http_req_duration_avg", "http_reqs_avg", "test_run_id", "thresholds_successes",
        "thresholds_total", "urls_hits_successes", "urls_hits_total", "urls_successes",
        "urls_total",
    }  # fmt: skip
    assert overview["test_run_id"] == RUN and overview["urls_total"] >= 2
    async with sim_client.post(f"{V2}/runs/{RUN}/export") as response:
        assert response.status == 200
        assert await response.json() == {"exports": [{"export_status": 1, "load_test_run_id": RUN}]}


@pytest.mark.parametrize(
    "authorization", [None, "Token wrong", "Bearer sim-token", "sim-token", "Token"]
)
async def test_a_missing_or_wrong_token_gets_401_json(
    simulator: Simulator, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    async with aiohttp.ClientSession(simulator.base_url, headers=headers) as client:
        status, body = await get(client, f"{V2}/metrics", test_run_id=RUN)
    assert status == 401 and body["error"]["code"] == 401 and body["error"]["message"]


async def test_the_token_scheme_is_case_insensitive(simulator: Simulator) -> None:
    async with aiohttp.ClientSession(
        simulator.base_url, headers={"Authorization": "token sim-token"}
    ) as client:
        status, _ = await get(client, f"{V2}/metrics", test_run_id=RUN)
    assert status == 200


@pytest.mark.parametrize(
    "path", ["metrics", "series?ids[]=abc", "thresholds", "run-overviews", "metrics/abc"]
)
async def test_an_unknown_run_is_404_json_and_a_malformed_run_id_400_json(
    sim_client: aiohttp.ClientSession, path: str
) -> None:
    joiner = "&" if "?" in path else "?"
    status, body = await get(sim_client, f"{V2}/{path}{joiner}test_run_id=42")
    assert status == 404 and "42" in body["error"]["message"]
    status, body = await get(sim_client, f"{V2}/{path}{joiner}test_run_id=abc")
    assert status == 400 and "test_run_id" in body["error"]["message"]


async def test_unknown_run_paths_and_unknown_routes_are_404_json(
    sim_client: aiohttp.ClientSession,
) -> None:
    assert (await get(sim_client, f"{V2}/runs/42"))[0] == 404
    async with sim_client.post(f"{V2}/runs/42/export") as response:
        assert response.status == 404
    assert (await get(sim_client, f"{V2}/nothing-here"))[0] == 404


async def test_organizations_and_their_projects_are_listed(
    sim_client: aiohttp.ClientSession,
) -> None:
    status, body = await get(sim_client, "/v3/organizations")
    assert status == 200
    (org,) = body["organizations"]
    status, body = await get(sim_client, f"/v3/organizations/{org['id']}/projects")
    assert status == 200 and len(body["projects"]) == 2
    assert all(p["organization_id"] == org["id"] for p in body["projects"])
    assert (await get(sim_client, "/v3/organizations/1/projects"))[0] == 404


async def test_tests_paginate_one_based_with_the_total_in_meta_count() -> None:
    cloud = generate_cloud(runs=5, metrics=1, points=1, projects=1, tests=5)
    project = next(iter(cloud.projects))
    async with (
        Simulator(cloud) as sim,
        aiohttp.ClientSession(sim.base_url, headers=sim.headers) as client,
    ):
        pages = [
            await get(client, f"{V2}/tests", project_id=project, page=page, page_size=2)
            for page in (1, 2, 3, 4)
        ]
        _, default = await get(client, f"{V2}/tests", project_id=project)
    assert [len(body["k6-tests"]) for _, body in pages] == [2, 2, 1, 0]
    assert {body["meta"]["count"] for _, body in pages} == {5}
    seen = [t["id"] for _, body in pages for t in body["k6-tests"]]
    assert seen == sorted(cloud.tests)
    assert set(pages[0][1]) == {"k6-tests", "k6-runs", "load_zones", "meta"}
    assert len(default["k6-tests"]) == 5  # default page_size 20


async def test_page_size_is_capped_at_100_and_bad_pages_are_400() -> None:
    cloud = generate_cloud(runs=130, metrics=1, points=1, tests=1)
    async with (
        Simulator(cloud) as sim,
        aiohttp.ClientSession(sim.base_url, headers=sim.headers) as client,
    ):
        _, big = await get(client, f"{V2}/runs", page_size=500)
        _, default = await get(client, f"{V2}/runs")
        status, _ = await get(client, f"{V2}/runs", page=0)
    assert len(big["k6-runs"]) == 100 and big["meta"]["count"] == 130
    assert len(default["k6-runs"]) == 20 and status == 400


async def test_tests_filter_by_ids_and_name_and_order(sim_client: aiohttp.ClientSession) -> None:
    _, body = await get(sim_client, f"{V2}/tests", order_by="-id")
    ids = [t["id"] for t in body["k6-tests"]]
    assert ids == sorted(ids, reverse=True) and body["meta"]["count"] == 3
    _, body = await get(sim_client, f"{V2}/tests", **{"ids[]": ids[:2]})
    assert sorted(t["id"] for t in body["k6-tests"]) == sorted(ids[:2])
    _, body = await get(sim_client, f"{V2}/tests", q="CHECKOUT")
    assert [t["name"] for t in body["k6-tests"]] == ["checkout flow"]
    assert (await get(sim_client, f"{V2}/tests", order_by="colour"))[0] == 400


async def test_runs_of_a_test_and_one_run_carry_the_run_fields(
    simulator: Simulator, sim_client: aiohttp.ClientSession
) -> None:
    test_id = simulator.cloud.runs[RUN].run["test_id"]
    status, test = await get(sim_client, f"{V2}/tests/{test_id}")
    assert status == 200 and RUN in test["k6-test"]["test_run_ids"]
    _, body = await get(sim_client, f"{V2}/runs", test_id=test_id)
    assert [r["id"] for r in body["k6-runs"]] == test["k6-test"]["test_run_ids"]
    assert body["meta"]["count"] == len(body["k6-runs"])
    _, one = await get(sim_client, f"{V2}/runs/{RUN}")
    assert {
        "id", "test_id", "project_id", "organization_id", "created", "started", "ended",
        "duration", "run_status", "processing_status", "result_status", "vus", "note", "export",
    } <= set(one["k6-run"])  # fmt: skip
    _, some = await get(sim_client, f"{V2}/runs", **{"ids[]": [RUN, RUN + 2]})
    assert [r["id"] for r in some["k6-runs"]] == [RUN, RUN + 2]


def test_generated_cloud_is_the_same_for_the_same_seed_and_differs_for_another() -> None:
    def snapshot(seed: int) -> bytes:
        run = generate_cloud(runs=2, metrics=40, points=10, seed=seed).runs[RUN + 1]
        ids = [m["id"] for m in run.metrics()]
        series = [run.serie(i, "p95") for i in ids]
        return orjson.dumps([run.run, run.metrics(), run.thresholds(), run.overview(), series])

    assert snapshot(3) == snapshot(3)
    assert snapshot(3) != snapshot(4)


def test_generated_runs_cover_finished_pending_and_failed_processing_states() -> None:
    cloud = generate_cloud(runs=20, metrics=8, points=4, pending_runs=2, processing_error_runs=2)
    runs = [cloud.runs[k].run for k in sorted(cloud.runs)]
    assert [r["id"] for r in runs] == list(range(RUN, RUN + 24))
    done, errors, pending = runs[:20], runs[20:22], runs[22:]
    assert all(r["run_status"] in (3, 5, 8) and r["processing_status"] == 2 for r in done)
    assert {r["run_status"] for r in done} >= {3, 5} or {r["run_status"] for r in done} >= {3, 8}
    assert all((r["run_status"], r["processing_status"]) == (3, 3) for r in errors)
    assert [(r["run_status"], r["processing_status"]) for r in pending] == [(2, 0), (3, 1)]
    assert pending[0]["ended"] is None
    created = [
        datetime.strptime(r["created"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) for r in runs
    ]
    assert created == sorted(created) and created[-1] < FIXED_ANCHOR
    assert (created[-1] - created[0]).days >= 5  # spread over past days
    assert len({r["test_id"] for r in runs}) == 3 and len({r["project_id"] for r in runs}) == 2


def test_generated_dates_can_be_anchored_to_now() -> None:
    now = datetime.now(UTC)
    run = generate_cloud(runs=1, anchor=now).runs[RUN].run
    created = datetime.strptime(run["created"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert timedelta(0) < now - created < timedelta(hours=2)


async def test_a_run_added_while_serving_is_discovered_and_served(
    simulator: Simulator, sim_client: aiohttp.ClientSession
) -> None:
    assert (await get(sim_client, f"{V2}/metrics", test_run_id=555))[0] == 404
    simulator.cloud.add_run(
        GeneratedRun(555, metrics=5, points=3, test_id=42, project_id=43, organization_id=44)
    )
    assert len(await metric_list(sim_client, 555)) == 5
    _, runs = await get(sim_client, f"{V2}/runs", test_id=42)
    assert [r["id"] for r in runs["k6-runs"]] == [555]
    _, tests = await get(sim_client, f"{V2}/tests", project_id=43)
    assert tests["k6-tests"][0]["test_run_ids"] == [555]
    assert (await get(sim_client, "/v3/organizations/44/projects"))[0] == 200


async def test_a_replaced_run_is_rendered_again_and_status_updates_show_at_once(
    simulator: Simulator, sim_client: aiohttp.ClientSession
) -> None:
    before = await metric_list(sim_client)
    simulator.cloud.add_run(GeneratedRun(RUN, metrics=4, points=3))
    assert len(await metric_list(sim_client)) == 4 != len(before)
    simulator.cloud.update_run(RUN, run_status=2, processing_status=1)
    _, one = await get(sim_client, f"{V2}/runs/{RUN}")
    assert (one["k6-run"]["run_status"], one["k6-run"]["processing_status"]) == (2, 1)


async def test_outage_answers_503_to_every_request_until_switched_off(
    simulator: Simulator, sim_client: aiohttp.ClientSession
) -> None:
    simulator.set_outage(True)
    assert (await get(sim_client, f"{V2}/metrics", test_run_id=RUN))[0] == 503
    assert (await get(sim_client, "/v3/organizations"))[0] == 503
    assert [e.fault for e in simulator.log] == ["outage", "outage"]
    simulator.set_outage(False)
    assert (await get(sim_client, f"{V2}/metrics", test_run_id=RUN))[0] == 200


async def test_the_log_records_endpoint_run_ids_method_status_and_url_length(
    simulator: Simulator, sim_client: aiohttp.ClientSession
) -> None:
    ids = [m["id"] for m in await metric_list(sim_client)][:2]
    await get(sim_client, f"{V2}/series", test_run_id=RUN, method="max", **{"ids[]": ids})
    await get(sim_client, f"{V2}/runs/{RUN}")
    metrics, series, run = simulator.log[:3]
    assert (metrics.endpoint, metrics.run_id, metrics.status) == ("metrics", RUN, 200)
    assert (series.endpoint, series.ids, series.method, series.fault) == (
        "series",
        tuple(ids),
        "max",
        None,
    )
    assert series.url_length > 2 * 32 and series.at >= metrics.at
    assert (run.endpoint, run.run_id) == ("run", RUN)
    assert simulator.requests_for("series") == [series]
    simulator.log.clear()
    assert len(simulator.log) == 0


async def test_warm_renders_every_serie_before_the_first_request(simulator: Simulator) -> None:
    assert simulator.warm(["mean", "p95"]) == 3 * 30 * 2


def _namespace(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_simulate_refuses_a_non_loopback_host_unless_allowed() -> None:
    with pytest.raises(ConfigError, match="allow-non-loopback"):
        command.run(_namespace("--host", "0.0.0.0"))
    with pytest.raises(ConfigError, match="p_500"):
        command.run(_namespace("--p-500", "1.5"))


def test_simulate_serves_k6_files_instead_of_generated_runs_unless_runs_is_given(
    tmp_path: Path,
) -> None:
    metric = {
        "type": "Metric",
        "metric": "vus",
        "data": {
            "name": "vus",
            "type": "gauge",
            "contains": "default",
            "thresholds": [],
            "submetrics": None,
        },
    }
    point = {
        "type": "Point",
        "metric": "vus",
        "data": {"time": "2026-01-01T00:00:01Z", "value": 3, "tags": {}},
    }
    k6_file = tmp_path / "run.json"
    k6_file.write_bytes(orjson.dumps(metric) + b"\n" + orjson.dumps(point) + b"\n")
    cloud = command.build_cloud(_namespace("--from-k6", str(k6_file), "--run-id", "7"))
    assert list(cloud.runs) == [7]
    cloud = command.build_cloud(_namespace("--runs", "2", "--from-k6", str(k6_file)))
    assert sorted(cloud.runs) == [RUN, RUN + 1, RUN + 2]
    assert command.describe_runs([1, 2, 3, 7, 9, 10]) == "1-3, 7, 9-10"


def simulate(*before: str) -> subprocess.Popen[str]:
    """`harvester simulate` on a free port (`before`: a command that runs it, as nohup)."""
    argv = [*before, sys.executable, "-m", "harvester", "simulate", "--port", "0", "--runs",
            "2", "--token", "t0k"]  # fmt: skip
    return subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env={**os.environ})


def serving(proc: subprocess.Popen[str]) -> None:
    """Wait for the start line (the signal handlers are in place by then), then ask it."""
    assert proc.stderr is not None
    line = proc.stderr.readline()
    match = re.search(r"listening on (http://\S+) \(token: t0k\); runs: 100001-100002", line)
    assert match, line
    request = urllib.request.Request(
        f"{match.group(1)}/loadtests/v2/runs/100002", headers={"Authorization": "Token t0k"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert orjson.loads(response.read())["k6-run"]["id"] == 100002


def stopped(proc: subprocess.Popen[str]) -> str:
    """Its exit status checked (0: being stopped is how a server ends), its last words."""
    assert proc.wait(timeout=20) == 0
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_simulate_command_serves_until_a_stop_signal_and_exits_0(sig: signal.Signals) -> None:
    """SIGHUP (a closed terminal) too: it killed the simulator outright (status -1)."""
    with simulate() as proc:
        serving(proc)
        proc.send_signal(sig)
        assert stopped(proc).endswith(f"\nsimulator stopped by {sig.name}\n")


def test_under_nohup_the_simulator_outlives_a_sighup() -> None:
    with simulate("nohup") as proc:
        serving(proc)
        proc.send_signal(signal.SIGHUP)
        proc.send_signal(signal.SIGTERM)  # watched, the SIGHUP would stop it first
        err = stopped(proc)
    assert err.endswith("\nsimulator stopped by SIGTERM\n") and "SIGHUP" not in err


def test_sim_cloud_creates_missing_entries_for_an_added_run() -> None:
    cloud = SimCloud()
    cloud.add_run(GeneratedRun(9, metrics=1, points=1, test_id=8, project_id=7, organization_id=6))
    assert cloud.tests[8]["test_run_ids"] == [9] and cloud.tests[8]["last_test_run_id"] == 9
    assert cloud.projects[7]["organization_id"] == 6 and 6 in cloud.organizations
    assert cloud.runs_of(8) == [cloud.runs[9].run] and cloud.tests_of(7) == [cloud.tests[8]]


@pytest.mark.parametrize(
    "method",
    ["mean", "avg", "min", "max", "median", "sum", "count", "rate", "value", "last", "stddev",
     "p(99)", "p99.9", "0.5", "1"],
)  # fmt: skip
def test_every_method_gives_plausible_values_for_every_metric_type(method: str) -> None:
    run = generate_cloud(runs=1, metrics=60, points=12).runs[RUN]
    for metric in run.metrics():
        serie = run.serie(metric["id"], method)
        assert serie is not None and serie["method"] == method
        values = [v["value"] for v in serie["values"]]
        assert len(values) == 12 and all(v >= 0 for v in values)
        if method == "count":
            assert all(isinstance(v, int) for v in values)
        elif metric["type"] == "rate" and method not in ("sum", "rate"):
            assert all(v <= 1 for v in values)


@pytest.mark.parametrize("method", ["p(101)", "1.5", "loudest", "-0.5"])
def test_unknown_methods_are_refused_by_name(method: str) -> None:
    run = generate_cloud(runs=1, metrics=2, points=2).runs[RUN]
    with pytest.raises(ValueError, match="unknown aggregation method"):
        run.serie(run.metrics()[0]["id"], method)


def test_the_request_log_finds_the_busiest_window_and_stays_bounded() -> None:
    log = RequestLog(limit=10)
    for at in (0.0, 0.1, 0.2, 1.15, 1.2, 1.25, 1.3, 5.0):
        log.append(LoggedRequest("series", "/", RUN, (), None, 200, None, 1, at))
    assert log.max_in_window(1.0) == 4 and log.max_in_window(0.05) == 1
    assert log.max_in_window(10.0, log.for_endpoint("metrics")) == 0
    for _ in range(5):
        log.append(log[0])
    assert len(log) == 10  # past the limit the oldest entries go
    assert log.faults() == []


def test_simulate_maps_the_fault_flags_onto_a_fault_plan() -> None:
    ns = _namespace(
        "--p-reset", "0.2", "--p-429", "0.1", "--retry-after", "3", "--rate-limit", "5",
        "--rate-window", "2", "--max-url-length", "4000", "--fail-metric-id", "abc",
        "--fault-endpoint", "series", "--fault-seed", "9", "--delay", "0.5", "--p-delay", "0.1",
        "--retry-after-on-503",
    )  # fmt: skip
    assert command.fault_plan(ns) == FaultPlan(
        seed=9, p_reset=0.2, p_429=0.1, p_delay=0.1, delay_seconds=0.5, retry_after=3.0,
        retry_after_on_503=True, rate_limit=5, rate_window=2.0, max_url_length=4000,
        fail_metric_ids=frozenset({"abc"}), fault_endpoints=frozenset({"series"}),
    )  # fmt: skip
    assert command.fault_plan(_namespace()) == FaultPlan()


def test_simulate_accepts_loopback_hosts_and_pairs_summaries_with_k6_files() -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        command._check_host(host, allowed=False)
    command._check_host("0.0.0.0", allowed=True)
    with pytest.raises(ConfigError, match="pairs with a --from-k6"):
        command.build_cloud(_namespace("--summary", "s.json"))
    with pytest.raises(ConfigError, match="negative"):
        command.build_cloud(_namespace("--runs", "-1"))


def test_simulate_run_serves_in_process_until_sigterm(monkeypatch: pytest.MonkeyPatch) -> None:
    """The line on stderr comes once the signal handlers are in place: safe to signal then."""
    announced: list[str] = []
    ready = threading.Event()

    class Stderr(io.StringIO):
        def write(self, text: str) -> int:
            announced.append(text)
            ready.set()
            return len(text)

    monkeypatch.setattr(sys, "stderr", Stderr())
    answers: list[int] = []

    def client() -> None:
        try:
            ready.wait(timeout=30)
            base = re.search(r"http://\S+", announced[0])
            assert base
            headers = {"Authorization": "Token sim-token"}
            request = urllib.request.Request(f"{base.group(0)}/v3/organizations", headers=headers)
            with urllib.request.urlopen(request, timeout=10) as response:
                answers.append(response.status)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # even on failure, so that run() returns

    thread = threading.Thread(target=client)
    thread.start()
    try:
        assert command.run(_namespace("--port", "0", "--runs", "1", "--metrics", "3")) == 0
    finally:
        thread.join(timeout=30)
    assert answers == [200] and "runs: 100001" in announced[0]


def test_simulated_runs_are_dated_near_now_and_the_start_line_lists_what_to_ask_for() -> None:
    """By default the runs are from the last days, so the README's `--since 7d` finds
    them; --anchor pins the dates; the start line names projects, tests and dates."""
    cloud = command.build_cloud(_namespace("--runs", "5"))
    created = [datetime.fromisoformat(run["created"]) for run in cloud.runs_of(None)]
    assert all(timedelta(0) < datetime.now(UTC) - c < timedelta(days=7) for c in created)
    text = command.describe_cloud(cloud)
    for project_id, project in cloud.projects.items():
        assert f"{project_id} ({project['name']})" in text
    for test_id, test in cloud.tests.items():
        assert f"{test_id} ({test['name']}, project {test['project_id']})" in text
    assert f"harvester runs --project {min(cloud.projects)} --since 7d" in text
    fixed = command.build_cloud(_namespace("--runs", "2", "--anchor", "2024-06-03T12:00:00"))
    assert max(run["created"] for run in fixed.runs_of(None)) == "2024-06-03T11:00:00Z"
    # Runs older than a week (an --anchor, a --from-k6 recording): `--since 7d` found none.
    oldest = min(run["created"] for run in fixed.runs_of(None))[:10]
    assert f"--since {oldest}" in command.describe_cloud(fixed)
    with pytest.raises(ConfigError, match="--anchor 'soon' is not an ISO 8601 date"):
        command.build_cloud(_namespace("--anchor", "soon"))
