"""The shared request gate: a strict, adaptive rate limit that every request passes through.

Guarantee: with a ceiling of R requests/s, no two requests leave closer than
1 / (R * (1 - margin)) seconds apart, so any one-second window holds at most R of them:
requests at t0, t0 + s, ..., t0 + R*s with s > 1/R span more than one second.
The spacing is aiolimiter's leaky bucket one request deep, `AsyncLimiter(1, s)`: a deeper
bucket (`AsyncLimiter(R, 1)`) admits a burst of R at once and then R more within the same
second (LESSONS.md #1). The small margin absorbs jitter between our clock and the server's.

On 429 the gate pauses everyone until Retry-After has passed (not only the task that was
throttled) and halves the rate, once per throttling event: the other 429s that arrive
while the pause is on answer requests sent before it and do not halve again. The rate
never drops below `floor` (a tenth of the ceiling by default); after `recovery_interval`
seconds without a 429 it steps back up towards the ceiling by `recovery_step` of it
(additive increase, multiplicative decrease).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
from aiolimiter import AsyncLimiter

if TYPE_CHECKING:
    from .config import Settings

Clock = Callable[[], float]


class RateGate:
    """Admits requests at no more than `ceiling` per second, adapting down on 429s."""

    def __init__(
        self,
        ceiling: float,
        *,
        margin: float = 0.02,
        floor: float | None = None,
        recovery_interval: float = 5.0,
        recovery_step: float = 0.1,
        clock: Clock = anyio.current_time,
    ) -> None:
        if ceiling <= 0:
            raise ValueError("ceiling must be positive")
        self.ceiling = ceiling
        self.floor = floor if floor is not None else ceiling / 10
        self._margin = margin
        self._recovery_interval = recovery_interval
        self._recovery_step = recovery_step * ceiling
        self._clock = clock
        self._paused_until = -math.inf
        self._last_change = -math.inf
        self.current = ceiling
        self.throttle_count = 0
        self._limiter = self._make_limiter(ceiling)

    @classmethod
    def for_settings(cls, settings: Settings) -> RateGate:
        """The gate `--rate` and `--rate-recovery` describe; one per process and job."""
        return cls(settings.rate, recovery_interval=settings.rate_recovery)

    def _make_limiter(self, rate: float) -> AsyncLimiter:
        return AsyncLimiter(1, 1.0 / (rate * (1.0 - self._margin)))

    @property
    def paused_for(self) -> float:
        """Seconds left in the current pause (0 when not paused)."""
        return max(0.0, self._paused_until - self._clock())

    async def acquire(self) -> None:
        """Wait for a slot; returns when this request may be sent."""
        while True:
            pause = self._paused_until - self._clock()
            if pause > 0:
                await anyio.sleep(pause)
                continue
            limiter = self._limiter
            await limiter.acquire()
            # A pause or a rate change while we queued invalidates the slot: queue again,
            # so throttled tasks cannot burst out at the old rate after the pause.
            if limiter is self._limiter and self._paused_until <= self._clock():
                return

    def throttled(self, retry_after: float) -> None:
        """A 429 arrived: pause every request for `retry_after` seconds and halve the rate."""
        self.throttle_count += 1
        now = self._clock()
        same_event = now < self._paused_until
        self._paused_until = max(self._paused_until, now + retry_after)
        lowered = max(self.floor, self.current / 2)
        if not same_event and lowered < self.current:
            self._set_rate(lowered, now)
        else:
            self._last_change = now

    def succeeded(self) -> None:
        """A request went through: step the rate back up if we have been calm long enough."""
        if self.current >= self.ceiling:
            return
        now = self._clock()
        if now - self._last_change >= self._recovery_interval:
            self._set_rate(min(self.ceiling, self.current + self._recovery_step), now)

    def _set_rate(self, rate: float, now: float) -> None:
        self.current = rate
        self._last_change = now
        self._limiter = self._make_limiter(rate)
