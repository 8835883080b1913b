"""Which runs to harvest: selectors (projects, tests, a created-date window) -> run targets.

Discovery pages through `/loadtests/v2/tests` and `/loadtests/v2/runs` with the same
`CloudApi` (so the same rate gate and retries) as the harvest, and sorts what it finds:
runs that are final and processed become `RunTarget`s carrying their `k6-run` object;
runs k6 Cloud could not fully process are harvested but marked incomplete; runs still
running or processing are reported and left for the next time (`runstatus.py`), and with
a state file remembered and asked about again by later jobs (`waiting.py`). A project or
test the API does not know is named in `Discovery.not_found`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import anyio

from .api import CloudApi, JsonObject
from .config import Settings
from .errors import ConfigError, NotFound
from .export import run_archived
from .layout import Places, parse_created
from .paging import each, read_pages
from .projects import selected_projects
from .ratelimit import RateGate
from .runstatus import (
    FINAL_RUN_STATUSES,
    PROCESSED,
    PROCESSING_NAMES,
    RUN_STATUS_NAMES,
    PendingRun,
    classify,
    int_field,
)
from .scheduler import RunTarget
from .state import HarvestState
from .stats import HarvestStats
from .transport import Transport
from .values import parse_duration as parse_duration  # for the worker and the tests
from .values import parse_when as parse_when
from .waiting import recheck, waiting_run

# --- parsing ----------------------------------------------------------------------------


#: v6 has stacks, not organizations: its projects are named with --project.
V6_NO_ORGANIZATIONS = (
    "--organization and `harvester projects` list organizations through the v2/v3 API; "
    "with --api v6 name the projects with --project, or take the stack's with --all-projects"
)


@dataclass(frozen=True)
class Selection:
    """What discovery looks for: runs of these projects and tests, created in [since, until).
    The projects are those named, those of the organizations named, and with
    `all_projects` every project the token sees (v2: of every organization; v6: of the
    stack)."""

    projects: tuple[int, ...] = ()
    tests: tuple[int, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    page_size: int = 50
    all_projects: bool = False
    organizations: tuple[int, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings, *, now: datetime | None = None) -> Selection:
        """Parse the selectors of `settings`; bad dates are `ConfigError`s."""
        now = now or datetime.now(UTC)
        since = parse_when(settings.since, "--since", now=now) if settings.since else None
        until = parse_when(settings.until, "--until", now=now) if settings.until else None
        if settings.api == "v6" and settings.organizations:
            raise ConfigError(V6_NO_ORGANIZATIONS)
        if since is not None and until is not None and since >= until:
            raise ConfigError(
                f"--since ({since:%Y-%m-%d %H:%M}) must be before --until ({until:%Y-%m-%d %H:%M})"
            )
        return cls(
            settings.projects,
            settings.tests,
            since,
            until,
            settings.page_size,
            organizations=settings.organizations,
            all_projects=settings.all_projects,
        )

    @property
    def active(self) -> bool:
        """True when there is anything to discover (projects, tests or organizations)."""
        return bool(self.projects or self.tests or self.organizations or self.all_projects)

    def in_window(self, created: datetime | None) -> bool:
        if self.since is None and self.until is None:
            return True
        if created is None:
            return False  # cannot tell: a window was asked for, so leave it out
        return (self.since is None or created >= self.since) and (
            self.until is None or created < self.until
        )


def has_selectors(settings: Settings) -> bool:
    return bool(
        settings.projects or settings.tests or settings.organizations or settings.all_projects
    )


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


# --- listing tests and runs ----------------------------------------------------------


async def _tests_of(
    api: CloudApi, project_id: int, page_size: int, not_found: list[str], *, named: bool
) -> list[JsonObject]:
    """The project's tests; a `named` project (a --project) without any is reported."""

    async def fetch(page: int, size: int) -> tuple[list[JsonObject], int | None]:
        return await api.list_tests(project_id, page, size)

    try:
        tests = await read_pages(fetch, page_size)
    except NotFound:
        not_found.append(f"project {project_id} does not exist (the API answered 404)")
        return []
    if not tests and named:  # the v2 API may answer an unknown project with an empty list
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
    api: CloudApi,
    selection: Selection,
    projects: list[int],
    names: dict[int, str],
    not_found: list[str],
) -> list[int]:
    """`--test`s first, then the tests of each selected project, once each; the names of
    the tests listed go into `names`. (An organization's project may have no tests yet.)"""
    ids: dict[int, None] = dict.fromkeys(selection.tests)
    for project_id in projects:
        named = project_id in selection.projects
        for test in await _tests_of(api, project_id, selection.page_size, not_found, named=named):
            if isinstance(test.get("id"), int):
                ids.setdefault(test["id"], None)
                if isinstance(test.get("name"), str):
                    names[test["id"]] = test["name"]
    return list(ids)


async def discover(
    api: CloudApi, selection: Selection, *, parallel: int = 4, state: HarvestState | None = None
) -> Discovery:
    """Runs of every selected test (the tests of the selected projects, the organizations'
    included, and `--test`s), sorted into targets and pending runs. Tests are listed
    `parallel` at a time; the rate gate spaces the requests whatever `parallel` is. With
    `state`, pending runs are remembered and those earlier jobs left waiting are asked
    about again."""
    runs: list[JsonObject] = []
    not_found: list[str] = []
    before = api.transport.stats.request_count
    projects = await selected_projects(api, selection, not_found)
    names: dict[int, str] = {}
    test_ids = await _test_ids(api, selection, projects, names, not_found)
    slots = anyio.CapacityLimiter(parallel)

    async def one_test(test_id: int) -> None:
        async with slots:
            selected = test_id in selection.tests
            runs.extend(
                await _runs_of(api, test_id, selection.page_size, not_found, selected=selected)
            )

    await each(one_test, test_ids)
    found = sort_runs(runs, selection)
    found.not_found = not_found
    if state is not None:  # the organizations' projects are watched like --projects
        await _follow_waiting(api, state, replace(selection, projects=tuple(projects)), found)
    found.requests = api.transport.stats.request_count - before
    found.test_names = names
    return found


async def _follow_waiting(
    api: CloudApi, state: HarvestState, selection: Selection, found: Discovery
) -> None:
    """Remember the runs left for later; add those earlier jobs left that are final now."""
    state.remember_waiting(waiting_run(p, selection.tests) for p in found.pending)
    seen = [t.run_id for t in found.targets] + [p.run_id for p in found.pending]
    ready, pending, found.rechecked = await recheck(
        api, state, selection.projects, selection.tests, seen
    )
    found.targets = sorted([*found.targets, *ready], key=lambda t: t.run_id)
    found.pending = sorted([*found.pending, *pending], key=lambda p: p.run_id)


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
        if settings.api == "v6":
            from .backends import v6, v6_discovery  # v6 discovery imports this module

            await v6.resolve_stack(transport, settings)
            return await v6_discovery.discover_v6(v6.V6Api(transport), selection)
        api = CloudApi(transport)
        return await discover(api, selection, parallel=settings.concurrency, state=state)


# --- listing (`harvester runs`) ---------------------------------------------------------


def archived_in(settings: Settings) -> Callable[[int], bool]:
    """Whether a run is archived in `--out DIR` (its final files exist; the files are the
    truth). The state file is not read: a running worker holds its lock."""
    if settings.to_stdout:
        return lambda _run_id: False
    places = Places(settings.layout, Path(settings.out))

    def archived(run_id: int) -> bool:  # in either --layout
        where = places.locate(run_id, None)
        return where is not None and run_archived(where, run_id, settings.export_csv)

    return archived


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
    test_id = int_field(run, "test_id")
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
    failed, its processing. A v6 run says it in words already (`status`)."""
    if "run_status" not in run and isinstance(run.get("status"), str):
        return str(run["status"])
    run_status, processing = int_field(run, "run_status"), int_field(run, "processing_status")
    words = RUN_STATUS_NAMES.get(run_status, "unknown") if run_status is not None else "unknown"
    if run_status in FINAL_RUN_STATUSES and processing != PROCESSED:
        more = PROCESSING_NAMES.get(processing, "unknown") if processing is not None else "unknown"
        words += f", {more}"
    return words


def result_word(run: JsonObject) -> str:
    """ "passed" or "failed" (its thresholds) for a run that is over; "" before."""
    if "run_status" not in run and isinstance(run.get("status"), str):
        return str(run.get("result") or "")  # v6: passed, failed, error or null
    if int_field(run, "run_status") not in FINAL_RUN_STATUSES:
        return ""
    result = int_field(run, "result_status")
    return {0: "passed", 1: "failed"}.get(result, "") if result is not None else ""
