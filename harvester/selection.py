"""What discovery looks for and what it found, whichever API it asks: the selectors
(projects, tests, a created-date window) and the runs they lead to, sorted into targets
and runs left for later. The backends (`backends/`) do the asking."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeGuard

import orjson

from .api import JsonObject
from .config import Settings
from .errors import ConfigError
from .layout import parse_created
from .runstatus import PendingRun, classify
from .scheduler import RunTarget
from .tables import plural
from .values import INT64_MAX, parse_when

# --- parsing ----------------------------------------------------------------------------


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


def is_run_id(value: object) -> TypeGuard[int]:
    """A run id as the API may list one: an int (not a bool) from 1 to int64's largest."""
    return type(value) is int and 1 <= value <= INT64_MAX


def by_run_id(runs: Iterable[JsonObject], found: Discovery) -> dict[int, JsonObject]:
    """The listed runs by id, once each. One whose id is no run id is named in
    `found.not_found` (the rest is harvested, the job exits 1): an id past int64 fits no
    state row (SQLite's INTEGER) and ended the whole job as an internal error."""
    unique: dict[int, JsonObject] = {}
    odd: list[str] = []
    for run in runs:
        run_id = run.get("id")
        if is_run_id(run_id):
            unique[run_id] = run
        else:
            odd.append(_shown(run_id)[:40])
    if odd:
        found.not_found.append(
            f"the API listed {plural(len(odd), 'run')} whose id is not a run id (a whole "
            f"number from 1 to {INT64_MAX}): {', '.join(odd[:5])}; skipped"
        )
    return unique


def with_ids(items: Iterable[JsonObject], kind: str, not_found: list[str]) -> list[JsonObject]:
    """The listed `kind`s (tests, projects) whose `id` is an id (a whole number from 1 to
    int64's largest); the others are named in `not_found` and skipped (the job exits 1):
    a test listed with its id as text ("720001") was skipped in silence, exit 0, and one
    of id -1 or `true` was asked for by that id."""
    good: list[JsonObject] = []
    odd: list[str] = []
    for item in items:
        if is_run_id(item.get("id")):
            good.append(item)
        else:
            odd.append(_shown(item.get("id"))[:40])
    if odd:
        not_found.append(
            f"the API listed {plural(len(odd), kind)} whose id is not a {kind} id (a whole "
            f"number from 1 to {INT64_MAX}): {', '.join(odd[:5])}; skipped"
        )
    return good


def _shown(value: Any) -> str:
    """A listed value as a message shows it: a number kept as the API wrote it
    (`jsontext.as_sent`: 400 digits, `1e999`) as written, not as `<orjson.Fragment ...>`."""
    return orjson.dumps(value).decode() if isinstance(value, orjson.Fragment) else repr(value)


def sort_runs(runs: Iterable[JsonObject], selection: Selection) -> Discovery:
    """Deduplicate by id, apply the date window, classify; both lists end up ordered by id."""
    found = Discovery()
    unique = by_run_id(runs, found)
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
