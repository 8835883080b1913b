"""Harvesting through the v6 backend against the simulator: records, request counts,
readiness, discovery and its incremental guarantee, auth errors, methods and URLs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from harvester.backends import v5_query, v6_thresholds
from harvester.backends.v6_api import V6Api
from harvester.config import Settings
from harvester.discovery import Selection, discover_runs
from harvester.errors import ApiStatusError, AuthRejected, ConfigError
from harvester.job import harvest_job
from harvester.ratelimit import RateGate
from harvester.scheduler import RunTarget
from harvester.simulator.cloud import SimCloud
from harvester.simulator.faults import FaultPlan
from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator
from harvester.stats import HarvestStats
from harvester.transport import Transport
from tests.harvest_helpers import read_dir, settings_for
from tests.process_helpers import run_cli, wait_for

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PROJECT = 3458575  # tests 720001 and 720003: runs 100001, 100003, 100004, 100006, 100007


@pytest.fixture
def cloud() -> SimCloud:
    return generate_cloud(runs=5, processing_error_runs=1, pending_runs=2, metrics=30, points=20)


def v6_settings(sim: Simulator, out: Path | str, **overrides: Any) -> Settings:
    return settings_for(sim, out, api="v6", stack_id=sim.stack_id, step=3, **overrides)


def minimum_requests(sim: Simulator, run_id: int) -> int:
    """1 metrics + 1 labels + a query per metric name and default method + the two check
    aggregates + one aggregate per threshold."""
    data = sim.cloud.runs[run_id]
    types = {m["name"]: m["type"] for m in data.metrics()}
    queries = sum(len(v5_query.DEFAULT_METHODS[t]) for t in types.values())
    return 2 + queries + 2 * ("checks" in types) + len(data.thresholds()[1])


async def test_a_run_by_id_gives_every_record_kind_in_the_fewest_requests(
    simulator: Simulator, tmp_path: Path
) -> None:
    simulator.state.v6.v5_requires_stack = True  # X-Stack-Id goes on v5 requests too
    result = await harvest_job(v6_settings(simulator, tmp_path), [RunTarget(100001)])
    assert not result.report.failed
    records = read_dir(tmp_path)[100001]
    kinds = {r["type"] for r in records}
    assert kinds == {"run", "metric", "series", "check", "threshold", "summary"}
    v6_requests = simulator.requests_for("v6_run")
    v5_requests = [r for r in simulator.log if r.endpoint.startswith("v5_")]
    assert len(v6_requests) == 1
    assert len(v5_requests) == minimum_requests(simulator, 100001)
    series = [r for r in records if r["type"] == "series"]
    assert {r["query"]["method"] for r in series} == {
        "increase", "increase_nz", "increase_z", "last", "histogram_avg",
        "histogram_count_increase",
    }  # fmt: skip
    assert all(r["query"]["step"] == 3 and set(r) == {"type", "test_run_id", "query", "data"}
               for r in series)  # fmt: skip
    summary = records[-1]["data"]
    assert summary["complete"] is True and summary["harvest"]["api"] == "v6"
    thresholds = [r["data"] for r in records if r["type"] == "threshold"]
    assert {(t["metric"], t["expression"]) for t in thresholds} == {
        ("http_req_failed", "rate<0.01"), ("http_req_duration", "p(95)<800"),
    }  # fmt: skip
    assert all(t["computed"] and isinstance(t["crossed"], bool) for t in thresholds)


async def test_an_aborted_run_is_harvested_incomplete_and_a_running_one_not_at_all(
    simulator: Simulator, tmp_path: Path
) -> None:
    result = await harvest_job(
        v6_settings(simulator, tmp_path), [RunTarget(100006), RunTarget(100007)]
    )
    assert [o.run_id for o in result.report.failed] == [100007]
    assert "not ready" in (result.report.failed[0].reason or "")
    assert "status running" in (result.report.failed[0].reason or "")
    summary = read_dir(tmp_path)[100006][-1]["data"]
    assert summary["complete"] is False
    assert "aborted" in summary["incomplete_reason"]


async def test_cli_not_ready_exits_1_and_a_foreign_stack_exits_2_naming_it(
    simulator: Simulator, tmp_path: Path
) -> None:
    done = await run_cli(simulator, "harvest", "--api", "v6", "--stack-id", "1",
                         "--run", "100008", "--out", str(tmp_path))  # fmt: skip
    assert done.returncode == 1
    assert b"not ready" in done.stderr and b"processing_metrics" in done.stderr
    refused = await run_cli(simulator, "harvest", "--api", "v6", "--stack-id", "77",
                            "--run", "100001", "--out", str(tmp_path))  # fmt: skip
    assert refused.returncode == 2
    # (the line names the request refused)
    assert b"v6_run /cloud/v6/test_runs/100001: the API rejected the token for X-Stack-Id 77" in (
        refused.stderr
    )
    assert simulator.token.encode() not in refused.stderr
    no_stack = await run_cli(simulator, "harvest", "--api", "v6", "--run", "1")
    assert no_stack.returncode == 2 and b"--stack-id" in no_stack.stderr


async def test_discovery_harvests_final_runs_and_a_second_job_only_lists(
    simulator: Simulator, tmp_path: Path
) -> None:
    simulator.state.v6.page_cap = 1  # pages shorter than $top: $skip follows the rows
    settings = v6_settings(simulator, tmp_path, projects=[str(PROJECT)], page_size="2")
    found = await discover_runs(settings, Selection.from_settings(settings))
    assert [t.run_id for t in found.targets] == [100001, 100003, 100004, 100006]
    assert [p.run_id for p in found.pending] == [100007]
    assert all(t.run is not None for t in found.targets)
    assert {r.endpoint for r in simulator.log} == {"v6_tests", "v6_runs"}
    await harvest_job(settings, found.targets)
    assert sorted(read_dir(tmp_path)) == [100001, 100003, 100004, 100006]
    assert simulator.requests_for("v6_run") == []  # discovery brought the run objects
    simulator.log.clear()
    again = await discover_runs(settings, Selection.from_settings(settings))
    result = await harvest_job(settings, again.targets)
    assert sorted(result.skipped) == [100001, 100003, 100004, 100006]
    assert {r.endpoint for r in simulator.log} == {"v6_tests", "v6_runs"}


async def test_since_and_until_become_created_bounds(simulator: Simulator, tmp_path: Path) -> None:
    created = sorted(simulator.cloud.runs[r].run["created"] for r in simulator.cloud.runs)
    settings = v6_settings(simulator, tmp_path, tests=["720001", "720002", "720003"],
                           since=created[1], until=created[4])  # fmt: skip
    found = await discover_runs(settings, Selection.from_settings(settings))
    assert [t.run_id for t in found.targets] == [100002, 100003, 100004]


async def test_the_stack_url_is_resolved_once(simulator: Simulator, tmp_path: Path) -> None:
    stack_url = simulator.state.v6.stack_url
    settings = settings_for(simulator, tmp_path, api="v6", stack_url=stack_url, step=3)
    result = await harvest_job(settings, [RunTarget(100002)])
    assert not result.report.failed
    assert len(simulator.requests_for("v6_auth")) == 1


async def test_a_stack_url_refused_or_answered_without_an_id_names_the_request(
    simulator: Simulator, tmp_path: Path
) -> None:
    refused = settings_for(simulator, tmp_path, api="v6", stack_url="https://nope.grafana.net")
    with pytest.raises(AuthRejected, match=r"^v6_auth /cloud/v6/auth: the API refused --stack-url"):
        await harvest_job(refused, [RunTarget(100002)])

    @web.middleware
    async def no_id(request: web.Request, handler: Handler) -> web.StreamResponse:
        return web.json_response({}) if request.path.endswith("/auth") else await handler(request)

    sim = Simulator(simulator.cloud)
    sim.app.middlewares.insert(0, no_id)
    async with sim:
        settings = settings_for(sim, tmp_path, api="v6", stack_url="https://other.grafana.net")
        with pytest.raises(ApiStatusError, match=r"^v6_auth /cloud/v6/auth: no stack id for"):
            await harvest_job(settings, [RunTarget(100002)])


async def test_methods_map_per_type_and_a_raw_v5_method_is_taken(
    simulator: Simulator, tmp_path: Path
) -> None:
    settings = v6_settings(simulator, tmp_path, methods=["p95", "histogram_quantile(0.999)",
                                                          "rate", "max"])  # fmt: skip
    await harvest_job(settings, [RunTarget(100001)])
    records = read_dir(tmp_path)[100001]
    by_metric: dict[str, set[str]] = {}
    for r in records:
        if r["type"] == "series":
            by_metric.setdefault(r["query"]["metric"], set()).add(r["query"]["method"])
    assert by_metric["http_req_duration"] == {
        "histogram_quantile(0.95)", "histogram_quantile(0.999)", "histogram_max",
    }  # fmt: skip
    assert by_metric["http_reqs"] == {"rate"}
    assert by_metric["checks"] == {"ratio"}
    assert by_metric["vus"] == {"max"}


def test_method_names_that_fit_no_type_are_refused() -> None:
    with pytest.raises(ConfigError, match="'nonsense' fits no metric type"):
        v5_query.check_methods(["nonsense"])
    assert v5_query.v5_method("p99.9", "trend") == "histogram_quantile(0.999)"
    assert v5_query.v5_method("0.5", "trend") == "histogram_quantile(0.5)"
    assert v5_query.v5_method("p95", "counter") is None
    assert v5_query.methods_of("rate", ["default", "passes"]) == ["increase_nz", "increase_z"]


@pytest.mark.parametrize("name", ["p0", "p0.0", "0.0", ".0", "histogram_quantile(0.0)",
                                  "p99.999999999999999"])  # fmt: skip
def test_a_quantile_v5_has_not_is_refused_at_start(name: str) -> None:
    """v5's quantiles are 0 < q < 1: `p0` was accepted, and every run then failed on
    the API's 400 (exit 1) instead of the job being refused (exit 2)."""
    with pytest.raises(ConfigError, match="fits no metric type"):
        v5_query.check_methods([name])


@pytest.mark.parametrize(
    ("name", "method"),
    [("p99.99999", "histogram_quantile(0.9999999)"),
     ("0.00000001", "histogram_quantile(0.00000001)"),
     ("p99.9", "histogram_quantile(0.999)"), ("p(95)", "histogram_quantile(0.95)")],
)  # fmt: skip
def test_a_quantile_is_written_with_all_its_decimals(name: str, method: str) -> None:
    """`{q:g}` wrote 0.9999999 as `1` and 0.00000001 as `1e-08`: the API refused both."""
    assert v5_query.v5_method(name, "trend") == method


async def test_a_method_that_fits_no_type_of_the_run_fails_it(tmp_path: Path) -> None:
    cloud = generate_cloud(runs=1, metrics=6)  # gauges, counters, a trend: no rate
    async with Simulator(cloud) as sim:
        result = await harvest_job(v6_settings(sim, tmp_path, methods=["passes"]),
                                   [RunTarget(100001)])  # fmt: skip
    assert "'passes' fits no metric type of this run" in (result.report.failed[0].reason or "")


async def test_a_404_from_v5_is_a_bug_not_retried(simulator: Simulator, tmp_path: Path) -> None:
    settings = v6_settings(simulator, tmp_path)
    async with Transport(settings, gate=RateGate.for_settings(settings),
                         stats=HarvestStats()) as transport:  # fmt: skip
        api = V6Api(transport)
        with pytest.raises(ApiStatusError, match="harvester bug"):
            await api.result("v5_query", "/cloud/v5/test_runs/100001/metrics/")
    assert len([r for r in simulator.log if r.status == 404]) == 1


async def test_v5_faults_are_retried(simulator: Simulator, tmp_path: Path) -> None:
    simulator.faults = FaultPlan(seed=3, p_500=0.3, p_429=0.1, retry_after=0.01)
    settings = v6_settings(simulator, tmp_path, max_attempts=12)
    result = await harvest_job(settings, [RunTarget(100002)])
    assert not result.report.failed
    assert simulator.fault_counts["500"] > 0 and simulator.fault_counts["429"] > 0
    records = read_dir(tmp_path)[100002]
    assert records[-1]["data"]["complete"] is True


async def test_v6_and_v5_answers_without_their_list_are_glitches_asked_again(
    simulator: Simulator, tmp_path: Path
) -> None:
    """A 2xx `{}` (the simulator's `unlisted`) from any endpoint a v6 harvest reads is
    asked again, as v2's are: it failed the run at once ('no labels 'data' list')."""
    clean = await harvest_job(v6_settings(simulator, tmp_path / "clean"), [RunTarget(100002)])
    assert not clean.report.failed
    every = frozenset({"v6_run", "v6_runs", "v6_tests", "v5_metrics", "v5_labels", "v5_query"})
    simulator.faults = FaultPlan(seed=5, p_unlisted=0.3, fault_endpoints=every)
    settings = v6_settings(simulator, tmp_path / "glitchy", max_attempts=20,
                           projects=[PROJECT])  # fmt: skip
    selection = Selection.from_settings(settings)
    found = await discover_runs(settings, selection)
    targets = [*found.targets, RunTarget(100002)]
    result = await harvest_job(settings, targets)
    assert not result.report.failed, result.report.failed
    assert simulator.fault_counts["unlisted"] > 5
    records = read_dir(tmp_path / "glitchy")
    assert {t.run_id for t in found.targets} and 100002 in records
    assert strip_times(records[100002]) == strip_times(read_dir(tmp_path / "clean")[100002])


def strip_times(records: list[dict[str, Any]]) -> list[bytes]:
    """The records in any order (queries answer in any), without the summary's harvest
    time (it differs between two harvests)."""
    return sorted(orjson.dumps({**r, "data": {**r["data"], "harvest": None}}
                               if r["type"] == "summary" else r) for r in records)  # fmt: skip


# --- URLs and thresholds, pinned ------------------------------------------------------


def test_urls_are_encoded_exactly_as_v6_md_says() -> None:
    path = v5_query.range_path(7, "increase by (name,status)", 'http_reqs{status!="0"}', 5)
    assert path == (
        "/cloud/v5/test_runs/7/query_range_k6(query='increase%20by%20(name,status)',"
        "metric='http_reqs%7Bstatus!=%220%22%7D',step=5)"
    )
    odd = v5_query.aggregate_path(7, "ratio", v5_query.selector("m", [("g", "a'b|c\\d^`é%?#")]))
    assert odd == (
        "/cloud/v5/test_runs/7/query_aggregate_k6(query='ratio',"
        "metric='m%7Bg=%22a''b%7Cc%5C%5Cd%5E%60%C3%A9%25%3F%23%22%7D')"
    )


def test_threshold_plans_and_k6_verdicts_on_empty_answers() -> None:
    types = {"http_req_duration": "trend", "reqs": "counter", "errors": "rate", "vus": "gauge"}
    p95 = v6_thresholds.plan("http_req_duration{group:::a::b,région:eu}", "p(95)<500", types)
    assert (p95.method, p95.metric) == (
        "histogram_quantile(0.95)", 'http_req_duration{group="::a::b",r_gion="eu"}',
    )  # fmt: skip
    assert v6_thresholds.verdict(p95, [], 10)["value"] == 0.0  # a Trend without samples
    rate = v6_thresholds.plan("reqs", {"threshold": "rate>2", "abortOnFail": True}, types)
    answer = [{"metric": {}, "values": [[0, 30.0]]}]
    assert v6_thresholds.verdict(rate, answer, 10) | {} == {
        "metric": "reqs", "expression": "rate>2", "query": {"method": "increase", "metric": "reqs"},
        "value": 3.0, "crossed": False, "computed": True,
    }  # fmt: skip
    errors = v6_thresholds.plan("errors", "rate<0.1", types)
    assert v6_thresholds.verdict(errors, [], 10)["crossed"] is False  # a Rate without samples
    gauge = v6_thresholds.plan("vus", "value>=1", types)
    assert v6_thresholds.verdict(gauge, [{"value": [0, 3]}], 10)["crossed"] is False
    for key, expression, why in [
        ("nope", "p(95)<1", "no metric"),
        ("reqs", "p(95)<1", "no statistic"),
        ("reqs", "count<", "not understood"),
        ("reqs", 42, "not a threshold"),
    ]:
        record = v6_thresholds.verdict(v6_thresholds.plan(key, expression, types), [], 1)
        assert why in record["reason"] and record["crossed"] is None and record["computed"]
    trend = {"t": "trend"}
    assert v6_thresholds.plan("t", "p(100)<1", trend).method == "histogram_max"
    assert v6_thresholds.plan("t", "p(0)<1", trend).method == "histogram_min"
    assert v6_thresholds.plan("t", "med<1", trend).method == "histogram_quantile(0.5)"


def test_v6_settings_are_validated() -> None:
    from harvester.config import load_settings

    env = {"K6_CLOUD_STACK_ID": "42", "HARVESTER_API": "v6"}
    settings = load_settings(environ=env)
    assert (settings.api, settings.stack_id, settings.step) == ("v6", 42, 60)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"api": "v3"}, "--api 'v3' must be one of v2, v6"),
        ({"stack_id": "0"}, "--stack-id '0' must be at least 1"),
        ({"stack_url": "http://x.grafana.net"}, "not an https URL"),
        ({"step": "0"}, "--step '0' must be at least 1"),
        ({"export_csv": True, "out": "d"}, "no CSV export"),
        ({"methods": ["nonsense"]}, "fits no metric type"),
    ]
    for flags, said in cases:
        with pytest.raises(ConfigError, match=said):
            load_settings(flags, environ=env)


async def test_runs_lists_v6_runs_with_their_status(simulator: Simulator) -> None:
    done = await run_cli(simulator, "runs", "--api", "v6", "--stack-id", "1",
                         "--project", str(PROJECT), "--output", "json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [orjson.loads(line) for line in done.stdout.splitlines()]
    by_id = {row["test_run_id"]: row for row in rows}
    assert (by_id[100001]["status"], by_id[100001]["action"]) == ("completed", "harvest")
    assert by_id[100006]["status"] == "aborted" and by_id[100006]["result"] == "error"
    assert (by_id[100007]["status"], by_id[100007]["action"]) == ("running", "wait")


async def test_the_worker_over_v6_takes_new_and_newly_final_runs_once(tmp_path: Path) -> None:
    from tests.test_worker import make_worker, running, worker_settings

    cloud = generate_cloud(runs=3, metrics=3, points=2, pending_runs=1, projects=1, tests=2)
    pending = max(cloud.runs)
    async with Simulator(cloud) as sim:
        settings = worker_settings(sim, tmp_path, api="v6", stack_id=sim.stack_id, step=3)
        worker, _log = make_worker(settings)
        async with running(worker):
            await wait_for(lambda: sorted(read_dir(tmp_path)) == sorted(cloud.runs)[:3])
            cloud.update_run(pending, processing_status=2)
            await wait_for(lambda: pending in read_dir(tmp_path))
            cycles = worker.status.cycles
            await wait_for(lambda: worker.status.cycles >= cycles + 2)
        asked = Counter(r.run_id for r in sim.requests_for("v5_metrics"))
        assert asked == Counter(dict.fromkeys(cloud.runs, 1))  # each run's data once
        assert sim.requests_for("v6_run") == []
        assert worker.status.failed_cycles == 0


async def test_all_projects_lists_every_project_of_the_stack(
    simulator: Simulator, tmp_path: Path
) -> None:
    settings = v6_settings(simulator, tmp_path, all_projects=True)
    found = await discover_runs(settings, Selection.from_settings(settings))
    assert [t.run_id for t in found.targets] == [100001, 100002, 100003, 100004, 100005, 100006]
    assert len(simulator.requests_for("v6_projects")) == 1
    # v2 takes it too (every organization's projects: tests/test_projects.py); v6 has no
    # organizations to name.
    with pytest.raises(ConfigError, match="with --api v6 name the projects"):
        v6_settings(simulator, tmp_path, organizations=[5])
