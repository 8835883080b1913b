"""Never lose a record: the simulator misbehaves, the harvest still comes out exact (issue 3)."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from harvester.error_answers import parse_retry_after
from harvester.job import harvest_job
from harvester.ratelimit import RateGate
from harvester.simulator.cloud import SimCloud
from harvester.simulator.faults import FaultPlan
from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator
from tests.harvest_helpers import (
    assert_exact,
    read_dir,
    settings_for,
    targets,
)
from tests.process_helpers import wait_for


@pytest.mark.parametrize(
    "plan",
    [
        FaultPlan(seed=1, p_500=0.3),
        FaultPlan(seed=2, p_502=0.15, p_503=0.15, p_504=0.15),
        FaultPlan(seed=3, p_reset=0.3),
        FaultPlan(seed=4, p_truncate=0.3),
        FaultPlan(seed=5, p_429=0.2, retry_after=0.01),
    ],
    ids=["500", "502-503-504", "reset", "truncated", "429"],
)
async def test_transient_faults_are_retried_until_the_output_is_exact(
    plan: FaultPlan, cloud: SimCloud, tmp_path: Path
) -> None:
    async with Simulator(cloud, faults=plan) as sim:
        result = await harvest_job(settings_for(sim, tmp_path, max_attempts=12), targets(cloud))
        assert sum(sim.fault_counts.values()) > 0
    assert not result.report.failed
    assert result.stats.retries == sum(sim.fault_counts.values())
    assert_exact(cloud, tmp_path)


async def test_a_timeout_is_retried_and_then_fails_the_run(tmp_path: Path) -> None:
    cloud = generate_cloud(runs=1, metrics=5, points=3)
    # The overview: other requests of the job are answered, so the API is there (a job
    # where nothing ever answers is an unreachable API, tested in test_transport).
    plan = FaultPlan(p_delay=1.0, delay_seconds=60.0, fault_endpoints=frozenset({"overview"}))
    async with Simulator(cloud, faults=plan) as sim:
        settings = settings_for(sim, tmp_path, read_timeout=0.2, max_attempts=2)
        # The answers would take a minute: only our read timeout can end this in time.
        with anyio.fail_after(30):
            result = await harvest_job(settings, targets(cloud))
        assert sim.fault_counts["delay"] == 2  # the first try and one retry
    assert "no answer in time" in (result.report.failed[0].reason or "")


async def test_5xx_gives_up_after_max_attempts(tmp_path: Path) -> None:
    cloud = generate_cloud(runs=1, metrics=5, points=3)
    plan = FaultPlan(p_503=1.0, fault_endpoints=frozenset({"metrics"}))
    async with Simulator(cloud, faults=plan) as sim:
        result = await harvest_job(settings_for(sim, tmp_path, max_attempts=3), targets(cloud))
        assert len(sim.requests_for("metrics")) == 3
    reason = result.report.failed[0].reason or ""
    assert "retries exhausted" in reason and "after 3 tries" in reason


@pytest.mark.parametrize(
    "plan",
    [
        FaultPlan(p_500=1.0, fault_endpoints=frozenset({"metrics"})),
        # Without Retry-After a 503 is this request's failure, not a pause for everyone.
        FaultPlan(p_503=1.0, fault_endpoints=frozenset({"metrics"})),
    ],
    ids=["500", "503"],
)
async def test_a_run_fails_when_its_retry_budget_is_spent(plan: FaultPlan, tmp_path: Path) -> None:
    cloud = generate_cloud(runs=1, metrics=5, points=3)
    async with Simulator(cloud, faults=plan) as sim:
        settings = settings_for(
            sim,
            tmp_path,
            max_attempts=50,
            retry_budget=0.05,
            max_retry_after=0.05,
            backoff_base=0.04,
            backoff_cap=0.04,
        )
        result = await harvest_job(settings, targets(cloud))
        assert len(sim.requests_for("metrics")) < 50
    assert "retry budget is spent" in (result.report.failed[0].reason or "")
    assert result.stats.throttled == 0


@pytest.mark.parametrize(
    ("status", "plan"),
    [
        (429, FaultPlan(seed=7, p_429=0.05, retry_after=0.4)),
        (503, FaultPlan(seed=7, p_503=0.05, retry_after=0.4, retry_after_on_503=True)),
    ],
    ids=["429", "503-with-retry-after"],
)
async def test_429_pauses_every_request_for_retry_after(
    status: int, plan: FaultPlan, tmp_path: Path
) -> None:
    """--rate 40 spreads the job over about a second, so the other runs have requests to
    send when one is told to wait: they hold them until Retry-After has passed."""
    cloud = generate_cloud(runs=3, metrics=60, points=3)
    async with Simulator(cloud, faults=plan) as sim:
        settings = settings_for(
            sim, tmp_path, rate=40, max_url_length=600, max_attempts=10, concurrency=4
        )
        result = await harvest_job(settings, targets(cloud))
        throttles = [r.at for r in sim.log if r.status == status]
        assert throttles and not result.report.failed
        for at in throttles:
            # Requests already on the wire may land just after; nothing new for Retry-After.
            quiet = [r for r in sim.log if at + 0.1 < r.at < at + 0.35]
            assert quiet == [], f"requests during the pause after the {status} at {at}"
        # The pause held back work: more than the throttled run's had yet to be sent.
        assert len({r.run_id for r in sim.log if r.at >= throttles[0] + 0.35}) >= 2
    assert_exact(cloud, tmp_path)


@pytest.mark.parametrize(
    ("status", "plan"),
    [
        (429, FaultPlan(p_429=1.0, retry_after=1.5, fault_endpoints=frozenset({"overview"}))),
        (503, FaultPlan(p_503=1.0, retry_after=1.5, retry_after_on_503=True,
                        fault_endpoints=frozenset({"overview"}))),
    ],
    ids=["429", "503-with-retry-after"],
)  # fmt: skip
async def test_a_long_retry_after_pauses_every_run_and_fails_none(
    status: int, plan: FaultPlan, tmp_path: Path
) -> None:
    """--max-retry-after and --retry-budget scaled down to 2 s: each overview asks twice
    to wait 1.5 s. Every run waits (the gate hears of each 429 before anything else), and
    no run pays for the shared pause from its budget (a run paying 1.5 s per 429 ran out
    of its 2 s budget on the second 429, and the gate never heard of that one). A 503
    with Retry-After is the API telling every client to come back later: the same (it
    used to be one request's backoff, paid from its run's budget, the others kept going)."""
    cloud = generate_cloud(runs=4, metrics=60, points=2)
    async with Simulator(cloud, faults=plan) as sim:
        settings = settings_for(
            sim, tmp_path, max_url_length=400, max_retry_after=2.0, retry_budget=2.0
        )

        def asked_twice() -> bool:
            throttled = [r.run_id for r in sim.log if r.status == status]
            return any(throttled.count(run_id) >= 2 for run_id in throttled)

        async def heal() -> None:
            await wait_for(asked_twice)
            sim.faults = FaultPlan()

        async with anyio.create_task_group() as tg:
            tg.start_soon(heal)
            result = await harvest_job(settings, targets(cloud))
        throttles = [r.at for r in sim.log if r.status == status]
        for at in throttles:
            # Requests already on the wire (on a busy machine, for a while) may land just
            # after; nothing new until the 1.5 s are over.
            quiet = [r for r in sim.log if at + 0.5 < r.at < at + 1.4]
            assert quiet == [], f"requests during the pause after the {status} at {at}"
        assert result.stats.throttled == len(throttles) >= 2
    assert not result.report.failed
    assert_exact(cloud, tmp_path)


async def test_429_with_an_http_date_is_honoured(tmp_path: Path) -> None:
    cloud = generate_cloud(runs=1, metrics=5, points=3)
    plan = FaultPlan(p_429=1.0, p_retry_after_date=1.0, retry_after=0.5,
                     fault_endpoints=frozenset({"overview"}))  # fmt: skip
    async with Simulator(cloud, faults=plan) as sim:
        settings = settings_for(sim, tmp_path, max_attempts=2)
        result = await harvest_job(settings, targets(cloud))
        overview = sim.requests_for("overview")
    assert len(overview) == 2
    # An HTTP date has whole seconds: the retry waited until that second had come.
    assert overview[1].at - overview[0].at >= 0.4
    assert "retries exhausted" in (result.report.failed[0].reason or "")


async def test_a_retry_after_beyond_the_maximum_fails_loudly_instead_of_retrying_early(
    tmp_path: Path,
) -> None:
    cloud = generate_cloud(runs=1, metrics=5, points=3)
    plan = FaultPlan(p_429=1.0, retry_after=3600, fault_endpoints=frozenset({"metrics"}))
    async with Simulator(cloud, faults=plan) as sim:
        result = await harvest_job(settings_for(sim, tmp_path, max_retry_after=60), targets(cloud))
        assert len(sim.requests_for("metrics")) == 1
    assert "asked to wait 3600s, more than --max-retry-after 60s" in (
        result.report.failed[0].reason or ""
    )


#: The simulator stamps a request when its loop gets to it, and it shares the loop with the
#: harvester: on a busy machine a stamp can be late by tens of milliseconds, and a late
#: first stamp makes a second look shorter. Counting windows this much shorter than a
#: second keeps that noise out (R + 1 requests from the gate span at least 1.01 s).
LOOP_JITTER = 0.03


async def test_against_a_server_limit_equal_to_rate_there_are_no_limit_hits(tmp_path: Path) -> None:
    cloud = generate_cloud(runs=3, metrics=100, points=3)
    plan = FaultPlan(rate_limit=25, rate_window=1.0 - LOOP_JITTER)
    async with Simulator(cloud, faults=plan) as sim:
        settings = settings_for(sim, tmp_path, rate=25, max_url_length=400)
        result = await harvest_job(settings, targets(cloud))
        assert len(sim.log) > 40
        assert sim.rate_limit_hits == 0
    assert not result.report.failed


async def test_429s_that_change_the_rate_never_push_a_second_over_the_limit(
    tmp_path: Path,
) -> None:
    """Each 429 halves the rate and each calm 0.05 s steps it back up: the rate changes
    again and again under load, and the server still never sees more than --rate requests
    in any second (a new, empty limiter per change let 14 through at --rate 10)."""
    cloud = generate_cloud(runs=3, metrics=40, points=2)
    plan = FaultPlan(seed=3, p_429=0.1, retry_after=0.0)
    async with Simulator(cloud, faults=plan) as sim:
        settings = settings_for(
            sim, tmp_path, rate=10, rate_recovery=0.05, max_url_length=400, max_attempts=20
        )
        result = await harvest_job(settings, targets(cloud))
        assert sim.fault_counts["429"] >= 2 and len(sim.log) > 20
        assert sim.log.max_in_window(1.0 - LOOP_JITTER) <= 10
    assert not result.report.failed
    assert_exact(cloud, tmp_path)


def test_the_gate_halves_once_per_429_event_and_recovers_gradually() -> None:
    now = [0.0]
    gate = RateGate(10, recovery_interval=5, recovery_step=0.1, clock=lambda: now[0])
    gate.throttled(2.0)
    assert gate.current == 5 and gate.paused_for == 2.0
    gate.throttled(1.0)  # a 429 of the same event: no shorter pause, no second halving
    assert gate.current == 5 and gate.paused_for == 2.0
    now[0] += 2.5
    gate.throttled(1.0)  # a new event halves again
    assert gate.current == 2.5 and gate.paused_for == 1.0
    for _ in range(10):
        now[0] += 1.5
        gate.throttled(1.0)
    assert gate.current == 1.0  # the floor: a tenth of the ceiling
    now[0] += 1.0
    gate.succeeded()
    assert gate.current == 1.0  # too soon after the last 429 to speed up
    steps = []
    while gate.current < 10:
        now[0] += 5
        gate.succeeded()
        steps.append(gate.current)
    assert steps == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10]


def test_retry_after_parses_seconds_and_http_dates() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.25") == 0.25
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_a_retry_after_date_in_minus_0000_is_utc_whatever_the_local_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RFC 5322's `-0000` is UTC (its zone unsaid): email.utils reads it as a naive time,
    which `timestamp()` took for local time: 5 hours off on a machine in New York."""
    try:
        with monkeypatch.context() as local:
            local.setenv("TZ", "America/New_York")
            time.tzset()
            asked = parse_retry_after("Wed, 21 Oct 2015 07:28:10 -0000", now=1445412480.0)
    finally:
        time.tzset()  # the zone the tests had
    assert asked == 10.0


async def test_414_splits_the_batch_and_the_cap_is_kept_for_the_run(tmp_path: Path) -> None:
    cloud = generate_cloud(runs=2, metrics=120, points=3)
    async with Simulator(cloud, faults=FaultPlan(max_url_length=1500)) as sim:
        result = await harvest_job(settings_for(sim, tmp_path), targets(cloud))
        rejected = [r for r in sim.log if r.status == 414]
        assert max(r.url_length for r in sim.log if r.status == 200) <= 1500
        # Each run learns once: once a request passed after its first 414, none is too long.
        for run_id in cloud.runs:
            statuses = [r.status for r in sim.log if r.run_id == run_id and r.endpoint == "series"]
            learned = statuses[statuses.index(414) :]
            assert 414 not in learned[learned.index(200) :]
        assert 0 < len(rejected) <= 2 * 3
    assert not result.report.failed
    for records in read_dir(tmp_path).values():
        assert records[-1]["data"]["url_cap"] < 1500
    assert_exact(cloud, tmp_path)


async def test_a_4xx_batch_is_bisected_to_the_one_bad_id_and_the_run_completes(
    tmp_path: Path,
) -> None:
    cloud = generate_cloud(runs=1, metrics=64, points=3)
    run_id = min(cloud.runs)
    bad = cloud.runs[run_id].metrics()[17]["id"]
    async with Simulator(cloud, faults=FaultPlan(fail_metric_ids=frozenset({bad}))) as sim:
        result = await harvest_job(settings_for(sim, tmp_path), targets(cloud))
        failed_requests = [r for r in sim.log if r.status == 400]
        assert len(failed_requests) <= 8  # log2(64) + 1 halvings, not one per id
    assert not result.report.failed
    records = read_dir(tmp_path)[run_id]
    errors = [r["data"] for r in records if r["type"] == "error"]
    assert [e["metric_id"] for e in errors] == [bad] and errors[0]["status"] == 400
    served = {r["data"]["metric_id"] for r in records if r["type"] == "series"}
    expected = {m["id"] for m in cloud.runs[run_id].metrics()} - {bad}
    assert served == expected


async def test_soak_thousands_of_requests_through_a_fault_mix_equal_a_clean_run(
    tmp_path: Path,
) -> None:
    cloud = generate_cloud(runs=30, metrics=240, points=2, seed=11)
    plan = FaultPlan(seed=99, p_500=0.04, p_502=0.02, p_503=0.02, p_504=0.02, p_429=0.05,
                     retry_after=0.01, p_reset=0.03, p_truncate=0.02)  # fmt: skip
    async with Simulator(cloud, faults=plan) as sim:
        settings = settings_for(
            sim, tmp_path, max_url_length=220, max_attempts=12, rate_recovery=0.05
        )
        result = await harvest_job(settings, targets(cloud))
        assert len(sim.log) > 2000
        kinds = sim.fault_counts
        assert {"500", "429", "reset", "truncate"} <= set(kinds)
    assert not result.report.failed
    assert_exact(cloud, tmp_path)
