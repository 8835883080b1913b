"""The shared request gate: a strict, adaptive rate limit that every request passes through.

Guarantee: with a ceiling of R requests/s, any one-second window (half-open) holds at most
R admissions (at most ceil(R) for a fractional R, the least any window can hold at an
average of R), rate changes and pauses included.

The gate is a leaky bucket of level `l`. Admitting a request adds 1 to `l`, and a request
is admitted only while `l <= e`; between admissions `l` drains at L = r(1 - m) per second
for the rate r in force, and never below 0. A rate change changes L and e from that
moment on and keeps the level: the bucket remembers the last window. (The gate used to
swap in a new, empty aiolimiter limiter on every change, which admitted the next request
at once: 6, even 7, requests in one second at `--rate 5` after a 429. aiolimiter cannot
change a limiter's rate, hence this small bucket of our own.) The slack e is
min(max(0.5, r*t), r*m/2) with t the event loop's timer tick (1 ms): up to 500 requests/s
1 + e < 2 and the bucket never admits two requests at once; above, it admits at once what
the rate allows in one tick, since a shorter wait is a whole tick late (uvloop counts its
timers in milliseconds): at `--rate 1000000` each request sat ~10 ms in the gate, holding
a connection slot, and the v6 bench ran at half its concurrency.

Proof (it needs e <= r*m/2 only): let n admissions fall at s_1 <= ... <= s_n within
[t, t + 1), and let R' be the highest rate in force from s_1 to s_n (R' <= R). Right
after s_1 the level is at least 1, the n - 2 admissions between add n - 2, and the drain
from s_1 to s_n is at most R'(1 - m)(s_n - s_1) < R'(1 - m) (stopping at 0 only keeps
the level higher). So just before s_n the level exceeds n - 1 - R'(1 - m), and it is at
most e(s_n) <= R'm/2 since s_n was admitted. Hence n - 1 < R'(1 - m/2): n < R' + 1, so
n <= ceil(R') <= ceil(R).
A deeper bucket (`AsyncLimiter(R, 1)`) would admit R at once and R more within the same
second (LESSONS #1).

Why the slack: with a capacity of exactly 1 every late wake-up of the event loop (about
a millisecond) is added to the next gap, and a long rate-limited job ran 4% slower than
its limit; the slack absorbs that lateness without a burst. The margin m (2%) leaves the
server room for network jitter: R + 1 requests span at least (1 - m/2) / (1 - m) seconds,
about 10 ms more than one second.

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

if TYPE_CHECKING:
    from .config import Settings

Clock = Callable[[], float]
#: The event loop's timer granularity: a sleep shorter than this lasts this long.
TIMER_TICK = 0.001


class LeakyBucket:
    """The bucket of the guarantee above; plain logic, the caller passes the time."""

    def __init__(self, rate: float, *, margin: float) -> None:
        self._margin = margin
        self.level = 0.0
        self._at = -math.inf  # empty since ever
        self._use(rate)

    def _use(self, rate: float) -> None:
        self._leak = rate * (1.0 - self._margin)
        self._slack = min(max(0.5, rate * TIMER_TICK), rate * self._margin / 2)  # e above

    def set_rate(self, rate: float, now: float) -> None:
        """Drain at the old rate up to `now`, then at `rate`; the level is kept."""
        self._drain(now)
        self._use(rate)

    def _drain(self, now: float) -> None:
        if now > self._at:
            self.level = max(0.0, self.level - (now - self._at) * self._leak)
            self._at = now

    def wait(self, now: float) -> float:
        """Seconds until a request may be admitted (0: now)."""
        self._drain(now)
        excess = self.level - self._slack
        # Rounding may leave a few ulps after a wait computed here: that is no wait.
        return excess / self._leak if excess > 1e-9 else 0.0

    def admit(self, now: float) -> None:
        self._drain(now)
        self.level += 1.0


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
        self._recovery_interval = recovery_interval
        self._recovery_step = recovery_step * ceiling
        self._clock = clock
        self._paused_until = -math.inf
        self._last_change = -math.inf
        self.current = ceiling
        self._bucket = LeakyBucket(ceiling, margin=margin)
        self._admitted: deque[float] = deque()  # admission times of the last second
        # Waiters queue here in arrival order (anyio's Lock is first come, first served);
        # only the first one watches the clock.
        self._queue = anyio.Lock()

    @classmethod
    def for_settings(cls, settings: Settings) -> RateGate:
        """The gate `--rate` and `--rate-recovery` describe; one per process and job."""
        return cls(settings.rate, recovery_interval=settings.rate_recovery)

    @property
    def paused_for(self) -> float:
        """Seconds left in the current pause (0 when not paused)."""
        return max(0.0, self._paused_until - self._clock())

    def try_acquire(self) -> float:
        """Admit a request now and return 0, or return the seconds to wait before asking
        again (a pause, or the bucket still too full)."""
        now = self._clock()
        wait = max(self._paused_until - now, self._bucket.wait(now))
        if wait <= 0:
            self._bucket.admit(now)
            self._admitted.append(now)
            # Keep only what the longest rate window can need: ceil(r)/r < 1 + 1/r seconds.
            while self._admitted[0] <= now - 1.0 - 1.0 / self.floor:
                self._admitted.popleft()
        return max(wait, 0.0)

    async def acquire(self) -> None:
        """Wait for a slot; returns when this request may be sent."""
        if not self._queue.locked() and self.try_acquire() == 0:
            return  # nobody queued and room now: no need to yield to the event loop
        async with self._queue:
            while True:
                # Asked again after each sleep: a pause or a rate change meanwhile counts.
                wait = self.try_acquire()
                if wait == 0:
                    return
                await anyio.sleep(wait)

    def recent_rate(self) -> float:
        """Requests per second admitted over the last W = ceil(r)/r seconds (one second for
        a whole rate r). The proof above, over a window of length W, gives n - 1 < e + L*W
        <= ceil(r): W holds at most ceil(r) admissions, so this never reads above r while
        r is in force. (The progress display shows it; counting answers instead showed
        bunched answers as a rate above the limit.)"""
        now = self._clock()
        window = math.ceil(self.current) / self.current
        admitted = sum(1 for moment in self._admitted if moment > now - window)
        return admitted / window

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
        self._bucket.set_rate(rate, now)
