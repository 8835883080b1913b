"""The shared request gate: a strict, adaptive rate limit that every request passes through.

Guarantee: with a ceiling of R requests/s, any one-second window (half-open) holds at
most R acquisitions. The gate is aiolimiter's leaky bucket, leaking L = R(1 - m) per
second, with a capacity of 1 + e where 0 < e <= R*m/2 (and e < 1): an acquisition adds
1 and is admitted while the level stays within capacity. Proof: if n acquisitions fall
in [t, t + 1), the level before the last is at most e, it got n - 1 added since the
first and drained at most L * (t_last - t_first) < L, so n - 1 < e + L <= R - R*m/2,
hence n <= R. A capacity below 2 never admits two at once; a deeper bucket
(`AsyncLimiter(R, 1)`) admits R at once and R more within the same second (LESSONS #1).

Why 1 + e and not 1: with `AsyncLimiter(1, 1/L)` every late wake-up of the event loop
(about a millisecond) is added to the next gap, and a long rate-limited job ran 4%
slower than its limit; the small extra capacity absorbs that lateness without a burst.
The margin m (2%) leaves the server room for network jitter: R + 1 requests span at
least (1 - m/2) / (1 - m) seconds, about 10 ms more than one second.

On 429 the gate pauses everyone until Retry-After has passed (not only the task that was
throttled) and halves the rate, once per throttling event: the other 429s that arrive
while the pause is on answer requests sent before it and do not halve again. The rate
never drops below `floor` (a tenth of the ceiling by default); after `recovery_interval`
seconds without a 429 it steps back up towards the ceiling by `recovery_step` of it
(additive increase, multiplicative decrease).
"""

from __future__ import annotations

import math
from collections import deque
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
        self._limiter = self._make_limiter(ceiling)
        self._admitted: deque[float] = deque()  # admission times of the last second

    @classmethod
    def for_settings(cls, settings: Settings) -> RateGate:
        """The gate `--rate` and `--rate-recovery` describe; one per process and job."""
        return cls(settings.rate, recovery_interval=settings.rate_recovery)

    def _make_limiter(self, rate: float) -> AsyncLimiter:
        leak = rate * (1.0 - self._margin)
        extra = min(0.5, rate * self._margin / 2)  # e in the guarantee above
        capacity = 1.0 + extra
        return AsyncLimiter(capacity, capacity / leak)

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
                self._admitted.append(self._clock())
                self.admitted_last_second()  # keeps the deque at most a second long
                return

    def admitted_last_second(self) -> int:
        """Requests admitted in the last second: the window the guarantee is about, so
        this never exceeds the ceiling (the progress display shows it as the rate)."""
        now = self._clock()
        while self._admitted and self._admitted[0] <= now - 1.0:
            self._admitted.popleft()
        return len(self._admitted)

    def throttled(self, retry_after: float) -> None:
        """A 429 arrived: pause every request for `retry_after` seconds and halve the rate."""
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
