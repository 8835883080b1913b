"""The rate gate's guarantee: never more than R acquisitions in any one-second window,
through rate changes too."""

from __future__ import annotations

import random

import anyio
import pytest

from harvester.ratelimit import RateGate
from harvester.simulator.requestlog import max_in_window


@pytest.mark.parametrize("rate", [7.0, 50.0])
async def test_no_window_of_one_second_holds_more_than_the_rate(rate: float) -> None:
    """Many tasks hammer the gate for ~1.6 s; count acquisitions per window as they happen."""
    gate = RateGate(rate)
    times: list[float] = []

    async def hammer() -> None:
        while True:
            await gate.acquire()
            times.append(anyio.current_time())

    with anyio.move_on_after(1.6):
        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(hammer)
    assert max_in_window(times, 1.0) <= rate
    # Nor is it stuck: a gate admitting far below its rate would show here (its speed is
    # measured by scripts/bench, not by this test).
    assert len(times) >= int(rate * 1.6 * 0.5)


async def test_a_pause_holds_back_every_waiting_task() -> None:
    gate = RateGate(100)
    gate.throttled(0.3)
    started = anyio.current_time()
    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(gate.acquire)
    assert anyio.current_time() - started >= 0.29


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def admit_next(gate: RateGate, clock: FakeClock, times: list[float]) -> None:
    """Wait (on the fake clock) as long as the gate says, then record the admission."""
    while (wait := gate.try_acquire()) > 0:
        clock.now += wait
    times.append(clock.now)


def test_a_rate_change_keeps_the_history_of_the_last_window() -> None:
    clock = FakeClock()
    gate = RateGate(5, recovery_interval=0.5, clock=clock)
    times: list[float] = []
    for _ in range(5):
        admit_next(gate, clock, times)
    gate.throttled(0.0)  # halves the rate, no pause
    # The bucket is as full as before the change: the next request waits its turn (a new,
    # empty limiter admitted it at once).
    assert gate.try_acquire() > 0.3
    for _ in range(4):
        admit_next(gate, clock, times)
    # At the halved rate 2.5/s, a window holds at most 3 once the change is a second old.
    later = [t for t in times if t >= times[5] + 1.0]
    assert max_in_window(later, 1.0) <= 3
    while gate.current < 5:  # steps back up every 0.5 s of calm, one change after another
        admit_next(gate, clock, times)
        gate.succeeded()
    for _ in range(10):
        admit_next(gate, clock, times)
    assert max_in_window(times, 1.0) <= 5


def test_a_fast_gate_admits_a_timer_ticks_worth_at_once() -> None:
    """Waits shorter than the loop's 1 ms timer tick cost a whole tick each: above 500/s
    the gate admits at once what the rate allows in a tick, and still no window holds
    more than the rate."""
    for rate, at_once in ((1_000_000.0, 1001), (5000.0, 6), (500.0, 1), (5.0, 1)):
        clock = FakeClock()
        gate = RateGate(rate, clock=clock)
        admitted = 0
        while gate.try_acquire() == 0:
            admitted += 1
        assert admitted == at_once, rate
    clock = FakeClock()
    gate = RateGate(2000, clock=clock)
    times: list[float] = []
    for _ in range(10_000):
        admit_next(gate, clock, times)
    assert max_in_window(times, 1.0) <= 2000


@pytest.mark.parametrize("ceiling", [5.0, 10.0, 50.0])
def test_no_window_holds_more_than_the_ceiling_whatever_the_rate_changes(ceiling: float) -> None:
    """Thousands of admissions as fast as allowed, with 429s (some with a pause) and
    step-ups at random moments: the guarantee of the docstring, on a fake clock."""
    rng = random.Random(int(ceiling))
    clock = FakeClock()
    gate = RateGate(ceiling, recovery_interval=0.0, clock=clock)
    times: list[float] = []
    changes = 0
    for _ in range(3000):
        admit_next(gate, clock, times)
        draw = rng.random()
        if draw < 0.05:
            gate.throttled(rng.choice([0.0, 0.0, rng.uniform(0.0, 0.5)]))
            changes += 1
        elif draw < 0.6:
            before = gate.current
            gate.succeeded()
            changes += gate.current != before
    assert changes > 300
    assert max_in_window(times, 1.0) <= ceiling
