"""The simulator's faults: the plan's decisions as plain logic, then each fault on the wire."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson
import pytest
from yarl import URL

from harvester.simulator.faults import (
    FAULT_KINDS,
    FaultDecider,
    FaultPlan,
    SlidingWindow,
    choose_fault,
    cut_point,
    format_retry_after,
)
from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator

RUN = 100001
METRICS = f"/loadtests/v2/metrics?test_run_id={RUN}"


# --- the decisions, without a server -------------------------------------------------


def test_choose_fault_stacks_the_probabilities_in_a_fixed_order() -> None:
    plan = FaultPlan(p_500=0.1, p_429=0.2, p_truncate=0.3)
    assert choose_fault(plan, 0.05) == "500"
    assert choose_fault(plan, 0.15) == "429"
    assert choose_fault(plan, 0.45) == "truncate"
    assert choose_fault(plan, 0.61) is None
    assert all(choose_fault(FaultPlan(), u / 10) is None for u in range(10))


@pytest.mark.parametrize(
    "options",
    [
        {"p_500": 0.7, "p_503": 0.4},
        {"p_reset": -0.1},
        {"p_retry_after_date": 2.0},
        {"rate_limit": 0},
        {"rate_window": 0.0},
        {"max_url_length": 0},
        {"delay_seconds": -1.0},
    ],
)
def test_a_fault_plan_that_makes_no_sense_is_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        FaultPlan(**options)


def test_a_seeded_decider_replays_its_sequence_and_another_seed_does_not() -> None:
    plan = FaultPlan(seed=11, p_500=0.2, p_reset=0.2, p_429=0.2, p_retry_after_date=0.5)

    def sequence(p: FaultPlan) -> list[Any]:
        decider = FaultDecider(p)
        return [decider.draw() for _ in range(200)]

    first = sequence(plan)
    assert first == sequence(plan)
    assert first != sequence(FaultPlan(seed=12, p_500=0.2, p_reset=0.2, p_429=0.2))
    kinds = {f.kind for f in first if f is not None}
    assert kinds == {"500", "reset", "429"} and None in first
    assert {f.retry_after_date for f in first if f is not None and f.kind == "429"} == {True, False}


def test_sliding_window_admits_at_most_the_limit_in_any_window() -> None:
    window = SlidingWindow(limit=3, window=1.0)
    admitted = [t / 10 for t in range(40) if window.admit(t / 10) is None]
    for start in admitted:
        assert sum(1 for t in admitted if start <= t < start + 1.0) <= 3
    assert len(admitted) == 12  # 3 per second, over 4 seconds


def test_sliding_window_says_how_long_until_a_slot_frees_and_does_not_count_refusals() -> None:
    window = SlidingWindow(limit=2, window=10.0)
    assert window.admit(0.0) is None and window.admit(4.0) is None
    assert window.admit(5.0) == pytest.approx(5.0)
    assert window.admit(9.0) == pytest.approx(1.0)
    assert window.admit(10.0) is None  # the slot of t=0 freed; refusals took none


def test_retry_after_is_written_in_seconds_or_as_an_http_date() -> None:
    assert format_retry_after(2.0) == "2"
    assert format_retry_after(0.25) == "0.25"
    assert format_retry_after(0.0004) == "0.001"  # never rounds a wait down to nothing
    stamp = format_retry_after(3.0, as_date=True, wall=1_000_000_000.2)
    assert stamp.endswith("GMT") and parsedate_to_datetime(stamp).timestamp() == 1_000_000_004


def test_a_cut_body_is_always_shorter_than_the_whole() -> None:
    assert cut_point(100, 0.5) == 50
    assert cut_point(100, 0.999999) == 99
    assert cut_point(1, 0.9) == 0


# --- each fault on the wire ----------------------------------------------------------


async def fetch(sim: Simulator, path: str = METRICS) -> tuple[int, aiohttp.ClientResponse, bytes]:
    async with (
        aiohttp.ClientSession(headers=sim.headers) as client,
        client.get(URL(sim.base_url + path, encoded=True)) as response,
    ):
        return response.status, response, await response.read()


def always(kind: str) -> FaultPlan:
    """A plan where every data request meets the fault `kind`."""
    options: dict[str, Any] = {f"p_{kind}": 1.0}
    return FaultPlan(**options)


@pytest.mark.parametrize("kind", ["500", "503"])
async def test_injected_server_errors_answer_their_status_with_a_json_error(
    simulator: Simulator, kind: str
) -> None:
    simulator.faults = always(kind)
    status, response, body = await fetch(simulator)
    assert status == int(kind) and response.content_type == "application/json"
    assert orjson.loads(body)["error"]["code"] == int(kind)
    assert simulator.log[-1].fault == kind and simulator.fault_counts[kind] == 1


@pytest.mark.parametrize("kind", ["502", "504"])
async def test_injected_gateway_errors_answer_an_html_page(simulator: Simulator, kind: str) -> None:
    simulator.faults = always(kind)
    status, response, body = await fetch(simulator)
    assert status == int(kind) and response.content_type == "text/html"
    assert kind.encode() in body


async def test_injected_429_says_retry_after_in_seconds(simulator: Simulator) -> None:
    simulator.faults = FaultPlan(p_429=1.0, retry_after=2.5)
    status, response, _ = await fetch(simulator)
    assert status == 429 and response.headers["Retry-After"] == "2.5"
    assert simulator.rate_limit_hits == 0  # an injected 429 is a fault, not the rate limit


async def test_injected_429_can_say_retry_after_as_an_http_date(simulator: Simulator) -> None:
    simulator.faults = FaultPlan(p_429=1.0, retry_after=30.0, p_retry_after_date=1.0)
    before = time.time()
    status, response, _ = await fetch(simulator)
    moment = parsedate_to_datetime(response.headers["Retry-After"]).timestamp()
    assert status == 429 and before + 29 <= moment <= time.time() + 31


async def test_a_reset_sends_headers_and_part_of_the_body_then_breaks_the_connection(
    simulator: Simulator,
) -> None:
    simulator.faults = FaultPlan(p_reset=1.0)
    with pytest.raises((aiohttp.ClientPayloadError, aiohttp.ClientOSError)):
        await fetch(simulator)
    (entry,) = simulator.log
    assert (entry.status, entry.fault) == (200, "reset")


async def test_a_truncated_body_promises_more_bytes_than_it_sends(simulator: Simulator) -> None:
    simulator.faults = FaultPlan(p_truncate=1.0)
    with pytest.raises(aiohttp.ClientPayloadError):
        await fetch(simulator)
    assert simulator.log[-1].fault == "truncate"
    simulator.faults = FaultPlan()
    status, _, body = await fetch(simulator)  # the server is fine afterwards
    assert status == 200 and orjson.loads(body)["k6-metrics"]


async def test_a_delay_answers_late_but_whole(simulator: Simulator) -> None:
    simulator.faults = FaultPlan(p_delay=1.0, delay_seconds=0.2)
    started = time.monotonic()
    status, _, body = await fetch(simulator)
    assert status == 200 and time.monotonic() - started >= 0.2
    assert orjson.loads(body)["k6-metrics"] and simulator.log[-1].fault == "delay"


async def test_faults_apply_only_to_their_endpoints(simulator: Simulator) -> None:
    simulator.faults = FaultPlan(p_500=1.0)
    assert (await fetch(simulator, "/loadtests/v2/runs"))[0] == 200  # discovery: not by default
    assert (await fetch(simulator))[0] == 500
    simulator.faults = FaultPlan(p_500=1.0, fault_endpoints=frozenset({"runs"}))
    assert (await fetch(simulator, "/loadtests/v2/runs"))[0] == 500
    assert (await fetch(simulator))[0] == 200


async def test_injected_faults_never_replace_a_documented_error(simulator: Simulator) -> None:
    simulator.faults = FaultPlan(p_503=1.0)
    status, _, body = await fetch(simulator, "/loadtests/v2/metrics?test_run_id=7")
    assert status == 404 and orjson.loads(body)["error"]["code"] == 404
    assert simulator.log[-1].fault is None and not simulator.fault_counts
    assert (await fetch(simulator))[0] == 503  # the next draw still follows request order


async def test_the_rate_limit_refuses_exactly_the_request_over_the_limit(
    simulator: Simulator,
) -> None:
    simulator.faults = FaultPlan(rate_limit=5, rate_window=60.0)
    paths = [METRICS, "/loadtests/v2/runs", "/v3/organizations"] * 2  # all requests count
    statuses = [(await fetch(simulator, path))[0] for path in paths]
    assert statuses == [200] * 5 + [429]
    assert simulator.rate_limit_hits == 1 and simulator.log[-1].fault == "rate_limit"
    assert not simulator.fault_counts  # counted apart from injected faults
    _, response, _ = await fetch(simulator)
    assert 59 <= float(response.headers["Retry-After"]) <= 60


async def test_a_request_target_over_the_url_cap_gets_414_json(simulator: Simulator) -> None:
    target = f"/loadtests/v2/series?test_run_id={RUN}&ids%5B%5D={'a' * 32}&ids%5B%5D={'b' * 32}"
    simulator.faults = FaultPlan(max_url_length=len(target))
    assert (await fetch(simulator, target))[0] == 200
    simulator.faults = FaultPlan(max_url_length=len(target) - 1)
    status, _, body = await fetch(simulator, target)
    assert status == 414 and orjson.loads(body)["error"]["code"] == 414
    assert simulator.log[-1].url_length == len(target) and simulator.log[-1].fault == "url_too_long"


async def test_a_long_url_without_a_cap_is_served(simulator: Simulator) -> None:
    ids = "".join(f"&ids%5B%5D={i:032x}" for i in range(400))  # ~16 KB, over aiohttp's 8 KB
    assert (await fetch(simulator, f"/loadtests/v2/series?test_run_id={RUN}{ids}"))[0] == 200


async def test_series_asking_for_a_failing_metric_get_400_that_is_not_about_the_url(
    simulator: Simulator,
) -> None:
    run = simulator.cloud.runs[RUN]
    good, bad = (m["id"] for m in run.metrics()[:2])
    simulator.faults = FaultPlan(fail_metric_ids=frozenset({bad}))
    series = f"/loadtests/v2/series?test_run_id={RUN}"
    status, _, body = await fetch(simulator, f"{series}&ids%5B%5D={good}&ids%5B%5D={bad}")
    message = orjson.loads(body)["error"]["message"]
    assert status == 400 and bad in message and "url" not in message.lower()
    assert simulator.log[-1].fault == "fail_metric_ids"
    assert (await fetch(simulator, f"{series}&ids%5B%5D={good}"))[0] == 200


async def test_the_same_seeded_plan_replays_the_same_faults_over_http() -> None:
    plan = FaultPlan(seed=5, p_500=0.25, p_503=0.25, p_429=0.2, retry_after=0.0)
    async with Simulator(generate_cloud(runs=1, metrics=3, points=2), faults=plan) as sim:

        async def statuses() -> list[int]:
            return [(await fetch(sim))[0] for _ in range(30)]

        first = await statuses()
        sim.faults = plan  # the same plan again starts from the seed
        assert await statuses() == first
        sim.faults = FaultPlan(seed=6, p_500=0.25, p_503=0.25, p_429=0.2)
        assert await statuses() != first
    assert set(first) == {200, 500, 503, 429}
    assert [e.fault for e in sim.log[:30]] == [e.fault for e in sim.log[30:60]]


def test_every_fault_kind_has_a_probability_field() -> None:
    plan = FaultPlan()
    assert all(plan.probability(kind) == 0.0 for kind in FAULT_KINDS)


async def test_a_latin1_answer_is_json_but_not_utf8(simulator: Simulator) -> None:
    simulator.faults = FaultPlan(p_latin1=1.0)
    status, _, body = await fetch(simulator)
    assert status == 200 and simulator.log[-1].fault == "latin1"
    with pytest.raises(UnicodeDecodeError):
        body.decode("utf-8")
    assert "ék6-metrics" in orjson.loads(body.decode("latin-1").encode())  # whole JSON
