"""The simulator's fault plan and the decisions taken from it: injected errors, rate limit, URL cap.

Everything here is plain, clock-free logic (the caller passes `now`) so that it can be unit
tested without a server; `app.py` applies the decisions to real responses.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime

#: Endpoints that answer with a test run's data (the ones the harvester pulls in bulk).
DATA_ENDPOINTS = frozenset(
    {"metrics", "metric_detail", "series", "thresholds", "threshold", "overview"}
    | {"v5_metrics", "v5_labels", "v5_label_values", "v5_series", "v5_query"}
)
#: Every `/loadtests/v2/*` endpoint, discovery and export included.
LOADTESTS_ENDPOINTS = DATA_ENDPOINTS | frozenset({"tests", "test", "runs", "run", "export"})
#: The v6 endpoints (projects, load tests, runs).
V6_ENDPOINTS = frozenset(
    {"v6_projects", "v6_project", "v6_tests", "v6_all_tests", "v6_test", "v6_runs"}
    | {"v6_all_runs", "v6_run"}
)

#: Injected faults, in the order their probabilities are stacked on one uniform draw.
STATUS_FAULTS = ("500", "502", "503", "504", "429")
BODY_FAULTS = ("reset", "truncate")
FAULT_KINDS = (*STATUS_FAULTS, *BODY_FAULTS, "delay", "unlisted", "latin1")


@dataclass(frozen=True)
class FaultPlan:
    """How the simulator misbehaves. The default plan is a perfectly healthy server.

    The `p_*` are probabilities per request to an endpoint in `fault_endpoints`; they are
    exclusive (one request gets at most one injected fault), so they must sum to <= 1. A
    drawn fault strikes only an answer that would have succeeded (a 404 stays a 404).
    """

    seed: int = 0
    p_500: float = 0.0
    p_502: float = 0.0
    p_503: float = 0.0
    p_504: float = 0.0
    p_429: float = 0.0
    #: Headers and part of the body, then a TCP reset.
    p_reset: float = 0.0
    #: A 200 whose Content-Length promises the whole body; part of it, then a clean close.
    p_truncate: float = 0.0
    #: A correct answer that starts `delay_seconds` late.
    p_delay: float = 0.0
    #: A 200 whose JSON object lacks the endpoint's list (`{}`): a glitch, not a refusal.
    p_unlisted: float = 0.0
    #: A 200 whose body has a Latin-1 byte where UTF-8 was due (`latin1_body`): what a
    #: server encoding text as Latin-1 sends, every time.
    p_latin1: float = 0.0
    delay_seconds: float = 1.0
    #: Retry-After of injected 429s, in seconds.
    retry_after: float = 1.0
    #: Share of injected 429s whose Retry-After is an HTTP date instead of seconds.
    p_retry_after_date: float = 0.0
    #: Injected 503s say Retry-After too (as 429s do: `retry_after`, `p_retry_after_date`),
    #: a service that tells every client when to come back.
    retry_after_on_503: bool = False
    #: At most `rate_limit` requests in any `rate_window` seconds, over all requests.
    rate_limit: int | None = None
    rate_window: float = 1.0
    #: 414 when the request target (path, "?", query as sent) is longer than this.
    max_url_length: int | None = None
    #: A series request asking for any of these ids answers 400 (not a URL error).
    fail_metric_ids: frozenset[str] = field(default_factory=frozenset)
    #: A series request asking with any of these methods answers 400, whatever its ids
    #: (an API that does not know a spelling the harvester accepts).
    refuse_methods: frozenset[str] = field(default_factory=frozenset)
    #: A series request of any of these runs answers 400, whatever its ids.
    refuse_runs: frozenset[int] = field(default_factory=frozenset)
    #: Metric ids whose serie the first answer asking for it leaves out (a glitch: asked
    #: again, it comes back).
    omit_once: frozenset[str] = field(default_factory=frozenset)
    #: Every request about any of these runs answers 403 (a run of another organisation).
    forbidden_runs: frozenset[int] = field(default_factory=frozenset)
    fault_endpoints: frozenset[str] = DATA_ENDPOINTS

    def __post_init__(self) -> None:
        probabilities = {kind: self.probability(kind) for kind in FAULT_KINDS}
        probabilities["retry_after_date"] = self.p_retry_after_date
        for name, p in probabilities.items():
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"p_{name} must be between 0 and 1, got {p}")
        if sum(self.probability(kind) for kind in FAULT_KINDS) > 1.0 + 1e-9:
            raise ValueError("the fault probabilities must add up to at most 1")
        if self.delay_seconds < 0 or self.retry_after < 0:
            raise ValueError("delay_seconds and retry_after must not be negative")
        if self.rate_limit is not None and self.rate_limit < 1:
            raise ValueError("rate_limit must be at least 1")
        if self.rate_window <= 0:
            raise ValueError("rate_window must be positive")
        if self.max_url_length is not None and self.max_url_length < 1:
            raise ValueError("max_url_length must be at least 1")

    def probability(self, kind: str) -> float:
        """The probability of one injected fault kind (see `FAULT_KINDS`)."""
        value: float = getattr(self, f"p_{kind}")
        return value


@dataclass(frozen=True)
class Fault:
    """One injected fault for one request."""

    kind: str
    #: Share of the body written before a reset or truncation (0 <= cut < 1).
    cut: float = 0.5
    #: For a 429 (or a 503 with `retry_after_on_503`): say Retry-After as an HTTP date
    #: rather than seconds.
    retry_after_date: bool = False


def choose_fault(plan: FaultPlan, u: float) -> str | None:
    """Map a uniform draw in [0, 1) to a fault kind by stacking the plan's probabilities."""
    edge = 0.0
    for kind in FAULT_KINDS:
        edge += plan.probability(kind)
        if u < edge:
            return kind
    return None


class FaultDecider:
    """Draws the fault, if any, of each eligible request, in request order.

    Every draw consumes exactly three numbers from `random.Random(plan.seed)`, whatever the
    outcome, so the same request sequence meets the same faults: a failing test replays.
    """

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan
        self._rng = random.Random(plan.seed)

    def applies_to(self, endpoint: str) -> bool:
        return endpoint in self.plan.fault_endpoints

    def draw(self) -> Fault | None:
        u, cut, date_draw = self._rng.random(), self._rng.random(), self._rng.random()
        kind = choose_fault(self.plan, u)
        if kind is None:
            return None
        return Fault(kind, cut=cut, retry_after_date=date_draw < self.plan.p_retry_after_date)


class SlidingWindow:
    """A true sliding-window limit: at most `limit` admitted requests in any `window` seconds.

    Refused requests are not counted, so a client that waits as told gets back in.
    """

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._admitted: deque[float] = deque()

    def admit(self, now: float) -> float | None:
        """Admit a request at `now`: None if admitted, else the seconds until a slot frees."""
        horizon = now - self.window
        while self._admitted and self._admitted[0] <= horizon:
            self._admitted.popleft()
        if len(self._admitted) < self.limit:
            self._admitted.append(now)
            return None
        return self._admitted[0] + self.window - now


def format_retry_after(seconds: float, *, as_date: bool = False, wall: float = 0.0) -> str:
    """A Retry-After value: seconds (fractions kept, rounded up to the millisecond) or an
    HTTP date `seconds` after the wall-clock time `wall`, rounded up to the next second."""
    if as_date:
        moment = datetime.fromtimestamp(math.ceil(wall + seconds), UTC)
        return format_datetime(moment, usegmt=True)
    millis = math.ceil(seconds * 1000 - 1e-6)
    if millis % 1000 == 0:
        return str(millis // 1000)
    return f"{millis / 1000:.3f}".rstrip("0")


def cut_point(length: int, cut: float) -> int:
    """How many body bytes a reset or truncation writes: always fewer than `length`."""
    return min(max(length - 1, 0), int(length * cut))


def latin1_body(body: bytes) -> bytes:
    """`body` with an "é" as Latin-1 writes it (the byte 0xe9, not UTF-8's 0xc3 0xa9) at
    the start of its first string: whole JSON, but not UTF-8."""
    return body.replace(b'"', b'"\xe9', 1)


def url_too_long(plan: FaultPlan, raw_target: str) -> bool:
    """True when the request target as received exceeds the plan's URL cap."""
    return plan.max_url_length is not None and len(raw_target) > plan.max_url_length


def failing_ids(plan: FaultPlan, ids: tuple[str, ...]) -> list[str]:
    """The ids of a series request that the plan makes fail with a 400."""
    return [metric_id for metric_id in ids if metric_id in plan.fail_metric_ids]
