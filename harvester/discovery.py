"""Which runs to harvest: selectors (projects, tests, a created-date window) -> run targets.

Discovery pages through `/loadtests/v2/tests` and `/loadtests/v2/runs` with the same
`CloudApi` (so the same rate gate and retries) as the harvest, and sorts what it finds:
runs that are final and processed become `RunTarget`s carrying their `k6-run` object;
runs k6 Cloud could not fully process are harvested but marked incomplete; runs still
running or processing are reported and left for the next time. With a state file, those
are remembered ("waiting") and asked about one by one (`GET /runs/{id}`) by every later
job whose selectors cover them, whatever its --since/--until, until they are final. A
project or test the API does not know is named in `Discovery.not_found`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import anyio

from .api import CloudApi, JsonObject
from .config import Settings
from .errors import ConfigError, NotFound, unwrap
from .export import run_archived
from .ratelimit import RateGate
from .scheduler import RunTarget
from .state import HarvestState, WaitingRun
from .stats import HarvestStats
from .transport import Transport

#: run_status values after which a run never changes (finished, timed out, aborted ...).
FINAL_RUN_STATUSES = frozenset(range(3, 10))
PROCESSED, PROCESSING_ERROR = 2, 3
RUN_STATUS_NAMES = {
    -2: "created", -1: "validated", 0: "queued", 1: "initializing", 2: "running",
    3: "finished", 4: "timed out", 5: "aborted by user", 6: "aborted by system",
    7: "aborted by script error", 8: "aborted by threshold", 9: "aborted by limit",
}  # fmt: skip
PROCESSING_NAMES = {0: "not started", 1: "processing", 2: "processed", 3: "processing error"}
INCOMPLETE_REASON = "k6 Cloud reported a processing error (processing_status 3)"

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_WHEN_HELP = "use an ISO date (2026-01-31), a date and time (2026-01-31T12:00:00Z) or an age"

T = TypeVar("T")
PageFetch = Callable[[int, int], Awaitable[tuple[list[JsonObject], int | None]]]


# --- parsing ----------------------------------------------------------------------------


def parse_duration(text: str, what: str) -> float:
    """Seconds in "30s", "5m", "12h", "7d", "2w" (or a bare number of seconds)."""
    raw = text.strip()
    match = _AGE.match(raw)
    try:
        seconds = float(match[1]) * _UNIT_SECONDS[match[2].lower()] if match else float(raw)
    except ValueError:
        raise ConfigError(
            f"{what} {text!r} is not a duration: write e.g. 30s, 5m, 12h or 7d"
        ) from None
    if seconds <= 0:
        raise ConfigError(f"{what} {text!r} must be longer than zero")
    return seconds


def parse_when(text: str, what: str, *, now: datetime) -> datetime:
    """A moment from an ISO date or datetime (naive means UTC) or an age like `7d`
    (that long before `now`)."""
    raw = text.strip()
    if _AGE.match(raw):
        return now - timedelta(seconds=parse_duration(raw, what))
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise ConfigError(
            f"{what} {text!r} is not a date: {_WHEN_HELP} like 7d, 12h, 30m"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_created(run: JsonObject) -> datetime | None:
    """The run's `created` moment, or None when it is missing or unreadable."""
    value = run.get("created")
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Selection:
    """What discovery looks for: runs of these projects and tests, created in [since, until)."""

    projects: tuple[int, ...] = ()
    tests: tuple[int, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    page_size: int = 50

    @classmethod
    def from_settings(cls, settings: Settings, *, now: datetime | None = None) -> Selection:
        """Parse the selectors of `settings`; bad dates are `ConfigError`s."""
        now = now or datetime.now(UTC)
        since = parse_when(settings.since, "--since", now=now) if settings.since else None
        until = parse_when(settings.until, "--until", now=now) if settings.until else None
        if since is not None and until is not None and since >= until:
            raise ConfigError(
                f"--since ({since:%Y-%m-%d %H:%M}) must be before --until ({until:%Y-%m-%d %H:%M})"
            )
        return cls(settings.projects, settings.tests, since, until, settings.page_size)

    @property
    def active(self) -> bool:
        """True when there is anything to discover (projects or tests were given)."""
        return bool(self.projects or self.tests)

    def in_window(self, created: datetime | None) -> bool:
        if self.since is None and self.until is None:
            return True
        if created is None:
            return False  # cannot tell: a window was asked for, so leave it out
        return (self.since is None or created >= self.since) and (
            self.until is None or created < self.until
        )


def has_selectors(settings: Settings) -> bool:
    return bool(settings.projects or settings.tests)


# --- classifying ------------------------------------------------------------------------


@dataclass(frozen=True)
class PendingRun:
    """A run discovery saw but leaves for later, and why."""

    run_id: int
    reason: str
    run: JsonObject


def _status(run: JsonObject, key: str) -> int | None:
    value = run.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def classify(run: JsonObject) -> RunTarget | PendingRun:
    """Harvest a run whose `run_status` is final and whose processing is done (2) or failed
    (3, harvested as incomplete); leave every other run for the next time."""
    run_id = int(run["id"])
    run_status, processing = _status(run, "run_status"), _status(run, "processing_status")
    if run_status not in FINAL_RUN_STATUSES:
        name = RUN_STATUS_NAMES.get(run_status, "unknown") if run_status is not None else "unknown"
        return PendingRun(run_id, f"not finished: run_status {run_status} ({name})", run)
    if processing == PROCESSED:
        return RunTarget(run_id, run=run)
    if processing == PROCESSING_ERROR:
        return RunTarget(run_id, run=run, incomplete_reason=INCOMPLETE_REASON)
    name = PROCESSING_NAMES.get(processing, "unknown") if processing is not None else "unknown"
    return PendingRun(run_id, f"not processed yet: processing_status {processing} ({name})", run)


@dataclass
class Discovery:
    """What discovery found: runs to harvest (by id) and runs left for later."""

    targets: list[RunTarget] = field(default_factory=list)
    pending: list[PendingRun] = field(default_factory=list)
    #: Runs listed but outside the --since/--until window.
    outside_window: int = 0
    requests: int = 0
    #: Test names from the tests listings read (runs do not carry their test's name).
    test_names: dict[int, str] = field(default_factory=dict)
    #: One line per selected project or test the API does not know.
    not_found: list[str] = field(default_factory=list)
    #: Runs earlier jobs left waiting, asked about again.
    rechecked: int = 0

    @property
    def found(self) -> int:
        return len(self.targets) + len(self.pending)


def sort_runs(runs: Iterable[JsonObject], selection: Selection) -> Discovery:
    """Deduplicate by id, apply the date window, classify; both lists end up ordered by id."""
    unique = {int(run["id"]): run for run in runs if isinstance(run.get("id"), int)}
    found = Discovery()
    for run_id in sorted(unique):
        run = unique[run_id]
        if not selection.in_window(parse_created(run)):
            found.outside_window += 1
            continue
        verdict = classify(run)
        if isinstance(verdict, RunTarget):
            found.targets.append(verdict)
        else:
            found.pending.append(verdict)
    return found


def with_explicit(found: Discovery, run_ids: Sequence[int]) -> list[RunTarget]:
    """Discovered targets plus explicit `--run` ids discovery did not see (harvested as
    given). An explicit id that discovery found still running stays pending."""
    seen = {t.run_id for t in found.targets} | {p.run_id for p in found.pending}
    extra = [RunTarget(run_id) for run_id in dict.fromkeys(run_ids) if run_id not in seen]
    return [*found.targets, *extra]


# --- paging -----------------------------------------------------------------------------


async def read_pages(fetch: PageFetch, page_size: int) -> list[JsonObject]:
    """Every item of a paged listing. Stops when the pages read hold `meta.count` items,
    or (no count) a page comes back short, or a page is empty or brings nothing new (a
    server ignoring `page` must not loop us forever)."""
    items: dict[Any, JsonObject] = {}
    page = 1
    while True:
        batch, count = await fetch(page, page_size)
        before = len(items)
        for item in batch:
            items[item.get("id", (page, len(items)))] = item
        if not batch or len(items) == before:
            break
        if count is not None and len(items) >= count:
            break
        if count is None and len(batch) < page_size:
            break
        page += 1
    return list(items.values())


async def _tests_of(
    api: CloudApi, project_id: int, page_size: int, not_found: list[str]
) -> list[JsonObject]:
    async def fetch(page: int, size: int) -> tuple[list[JsonObject], int | None]:
        return await api.list_tests(project_id, page, size)

    try:
        tests = await read_pages(fetch, page_size)
    except NotFound:
        not_found.append(f"project {project_id} does not exist (the API answered 404)")
        return []
    if not tests:  # the v2 API may answer an unknown project with an empty list
        not_found.append(f"project {project_id} has no tests: is the id right?")
    return tests


async def _runs_of(
    api: CloudApi, test_id: int, page_size: int, not_found: list[str], *, selected: bool
) -> list[JsonObject]:
    """The test's runs; a `selected` test (a --test) with none is checked to exist."""

    async def fetch(page: int, size: int) -> tuple[list[JsonObject], int | None]:
        return await api.list_runs(test_id, page, size)

    try:
        runs = await read_pages(fetch, page_size)
        if not runs and selected:  # no runs yet, or an unknown test answered with []?
            await api.get_test(test_id)
    except NotFound:
        not_found.append(f"test {test_id} does not exist (the API answered 404)")
        return []
    return runs


async def _test_ids(
    api: CloudApi, selection: Selection, names: dict[int, str], not_found: list[str]
) -> list[int]:
    """`--test`s first, then the tests of each `--project`, once each; the names of the
    tests listed go into `names`."""
    ids: dict[int, None] = dict.fromkeys(selection.tests)
    for project_id in dict.fromkeys(selection.projects):
        for test in await _tests_of(api, project_id, selection.page_size, not_found):
            if isinstance(test.get("id"), int):
                ids.setdefault(test["id"], None)
                if isinstance(test.get("name"), str):
                    names[test["id"]] = test["name"]
    return list(ids)


async def discover(
    api: CloudApi, selection: Selection, *, parallel: int = 4, state: HarvestState | None = None
) -> Discovery:
    """Runs of every selected test (the tests of the selected projects, and `--test`s),
    sorted into targets and pending runs. Tests are listed `parallel` at a time; the
    rate gate spaces the requests whatever `parallel` is. With `state`, pending runs are
    remembered and those earlier jobs left waiting are asked about again."""
    runs: list[JsonObject] = []
    not_found: list[str] = []
    before = api.transport.stats.request_count
    names: dict[int, str] = {}
    test_ids = await _test_ids(api, selection, names, not_found)
    slots = anyio.CapacityLimiter(parallel)

    async def one_test(test_id: int) -> None:
        async with slots:
            selected = test_id in selection.tests
            runs.extend(
                await _runs_of(api, test_id, selection.page_size, not_found, selected=selected)
            )

    await _each(one_test, test_ids)
    found = sort_runs(runs, selection)
    found.not_found = not_found
    if state is not None:
        state.remember_waiting(_waiting(p, selection) for p in found.pending)
        await _recheck(api, state, selection, found, slots)
    found.requests = api.transport.stats.request_count - before
    found.test_names = names
    return found


async def _each(func: Callable[[T], Coroutine[Any, Any, None]], items: Iterable[T]) -> None:
    """`func(item)` for every item at once; the first error (unwrapped) ends them all."""
    try:
        async with anyio.create_task_group() as tg:
            for item in items:
                tg.start_soon(func, item)
    except ExceptionGroup as group:
        raise unwrap(group) from None


# --- runs left waiting ------------------------------------------------------------------


def _waiting(pending: PendingRun, selection: Selection) -> WaitingRun:
    """What the state keeps of a pending run: which test and project, and the selector
    that found it (a later job with the same selectors asks about it again)."""
    test_id, project_id = _status(pending.run, "test_id"), _status(pending.run, "project_id")
    selector = f"test {test_id}" if test_id in selection.tests else f"project {project_id}"
    return WaitingRun(pending.run_id, pending.reason, test_id, project_id, selector)


async def _recheck(
    api: CloudApi,
    state: HarvestState,
    selection: Selection,
    found: Discovery,
    slots: anyio.CapacityLimiter,
) -> None:
    """Ask about each run an earlier job left waiting that this listing did not show (it
    may be outside --since/--until now): harvest it when final, else keep it waiting."""
    seen = {t.run_id for t in found.targets} | {p.run_id for p in found.pending}
    earlier = {w.run_id: w for w in state.waiting(selection.projects, selection.tests)}
    for run_id in seen:
        earlier.pop(run_id, None)
    still: list[WaitingRun] = []

    async def ask(waiting: WaitingRun) -> None:
        try:
            async with slots:
                verdict = classify(await api.get_run(waiting.run_id))
        except NotFound:  # deleted since: nothing left to wait for
            state.forget(waiting.run_id)
            return
        if isinstance(verdict, RunTarget):
            found.targets.append(verdict)
        else:
            found.pending.append(verdict)
            still.append(replace(waiting, reason=verdict.reason))

    await _each(ask, earlier.values())
    state.remember_waiting(still)
    found.rechecked = len(earlier)
    found.targets.sort(key=lambda t: t.run_id)
    found.pending.sort(key=lambda p: p.run_id)


async def discover_runs(
    settings: Settings,
    selection: Selection,
    *,
    gate: RateGate | None = None,
    stats: HarvestStats | None = None,
    state: HarvestState | None = None,
) -> Discovery:
    """`discover` over a transport of its own (sharing `gate` and `stats` when given, so
    discovery and harvest count against one rate limit); `state`: see `discover`."""
    gate = gate if gate is not None else RateGate.for_settings(settings)
    stats = stats if stats is not None else HarvestStats()
    async with Transport(settings, gate=gate, stats=stats) as transport:
        api = CloudApi(transport)
        return await discover(api, selection, parallel=settings.concurrency, state=state)


# --- listing (`harvester runs`) ---------------------------------------------------------


def archived_in(settings: Settings) -> Callable[[int], bool]:
    """Whether a run is archived in `--out DIR` (its final files exist; the files are the
    truth). The state file is not read: a running worker holds its lock."""
    if settings.to_stdout:
        return lambda _run_id: False
    out = Path(settings.out)
    return lambda run_id: run_archived(out, run_id, settings.export_csv)


def listing(
    found: Discovery, archived: Callable[[int], bool] = lambda _: False
) -> list[JsonObject]:
    """One row per discovered run, by id: what a harvest would do with it and why."""
    rows: list[JsonObject] = []
    for target in found.targets:
        assert target.run is not None
        if archived(target.run_id):
            action, reason = "skip", "already archived"
        else:
            action, reason = "harvest", target.incomplete_reason or ""
        rows.append(_row(target.run, action, reason, found.test_names))
    rows.extend(_row(p.run, "wait", p.reason, found.test_names) for p in found.pending)
    rows.sort(key=lambda row: int(row["test_run_id"]))
    return rows


def _row(run: JsonObject, action: str, reason: str, test_names: dict[int, str]) -> JsonObject:
    test_id = _status(run, "test_id")
    return {
        "test_run_id": run.get("id"),
        "test_id": test_id,
        "test_name": run.get("test_name") or (test_names.get(test_id) if test_id else None),
        "project_id": run.get("project_id"),
        "created": run.get("created"),
        "run_status": run.get("run_status"),
        "processing_status": run.get("processing_status"),
        "result_status": run.get("result_status"),
        "status": status_words(run),
        "result": result_word(run),
        "action": action,
        "reason": reason,
    }


def status_words(run: JsonObject) -> str:
    """ "finished", "running", "finished, processing": the run and, when not done yet or
    failed, its processing."""
    run_status, processing = _status(run, "run_status"), _status(run, "processing_status")
    words = RUN_STATUS_NAMES.get(run_status, "unknown") if run_status is not None else "unknown"
    if run_status in FINAL_RUN_STATUSES and processing != PROCESSED:
        more = PROCESSING_NAMES.get(processing, "unknown") if processing is not None else "unknown"
        words += f", {more}"
    return words


def result_word(run: JsonObject) -> str:
    """ "passed" or "failed" (its thresholds) for a run that is over; "" before."""
    if _status(run, "run_status") not in FINAL_RUN_STATUSES:
        return ""
    result = _status(run, "result_status")
    return {0: "passed", 1: "failed"}.get(result, "") if result is not None else ""
