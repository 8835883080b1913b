"""The retry policy in one place: which errors are retried, how long to wait, when to stop.

Only `RetryableError`s (5xx, 408, 429, connection failures, truncated bodies, timeouts)
are retried; 401/403/404/414 and other 4xx never are. Waits are exponential backoff with
full jitter (uniform in [0, min(cap, base * 2**attempt)]), so retries do not arrive in
lock-step; a server's Retry-After overrides the backoff. Each request has at most
`max_attempts` tries, and each run a total `budget` of seconds it may spend waiting to retry
(never less than `max_retry_after`, so any wait we honour fits). A 429's wait, and that
of a 503 with Retry-After, is the shared gate's pause, which throttles every run alike: no
run's budget pays for it.
"""

from __future__ import annotations

import random
from contextvars import ContextVar
from dataclasses import dataclass, field

from .errors import RateLimited, RetriesExhausted, RetryableError


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    base: float = 0.5
    cap: float = 30.0
    budget: float = 1200.0
    max_retry_after: float = 900.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def backoff(self, attempt: int) -> float:
        """Full-jitter wait before try number `attempt + 1` (attempt counts from 1)."""
        return self.rng.uniform(0.0, min(self.cap, self.base * 2 ** (attempt - 1)))


def pauses_everyone(exc: RetryableError, *, from_api: bool) -> bool:
    """A 429, or a 503 from the API that says when to come back (Retry-After): the server
    tells the whole client to wait, not this request, so the shared gate pauses everyone
    (as a 429 does). A 503 without Retry-After is this request's failure: backoff, paid
    from its run's budget."""
    if isinstance(exc, RateLimited):
        return True
    return from_api and exc.status == 503 and exc.retry_after is not None


class RetryBudget:
    """Seconds a run may still spend waiting to retry; shared by all of the run's requests."""

    def __init__(self, seconds: float) -> None:
        self.left = seconds

    def spend(self, seconds: float, what: str) -> None:
        if seconds > self.left:
            raise RetriesExhausted(
                f"{what}: the run's retry budget is spent (raise --retry-budget to wait longer)"
            )
        self.left -= seconds


#: The budget of the run whose task is running; the scheduler sets it per run, and anyio
#: task groups hand it down to the run's child tasks with the rest of the context.
current_budget: ContextVar[RetryBudget | None] = ContextVar("current_budget", default=None)
