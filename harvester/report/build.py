"""Which runs a report shows, and the page's data: one run, or trends of many runs."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..archive import ArchivedRun, open_archive, select
from ..errors import ConfigError, HarvesterError
from .lines import epoch
from .run import read_run
from .trends import RunPoint, regressions, trend_charts


@dataclass(frozen=True)
class ReportOptions:
    run_ids: tuple[int, ...] = ()
    tests: tuple[int, ...] = ()
    since: datetime | None = None
    #: A run regresses when worse than the median of the previous `baseline` runs by more.
    margin: float = 0.10
    baseline: int = 5


def choose_runs(
    directory: str | Path,
    options: ReportOptions,
    unlisted: list[tuple[Path, OSError]] | None = None,
) -> list[tuple[ArchivedRun, dict[str, Any] | None]]:
    """The runs to show with their run objects (None when not archived), oldest first;
    the directories that could not be listed are added to `unlisted`."""
    unlisted = unlisted if unlisted is not None else []
    runs = open_archive(directory, unlisted)
    if options.run_ids:
        runs = select(runs, options.run_ids)
    chosen = []
    for run in runs:
        record = run.first("run")
        data = record["data"] if record else None
        if record_matches(data, options):
            chosen.append((run, data))
    if not runs and unlisted:
        raise HarvesterError(f"no archived run could be read in {directory}: {unread(unlisted)}")
    if not runs:  # nothing asked for, nothing there: not an archive (or an empty one)
        raise ConfigError(f"no archived run in {directory}: give the --out DIR of a harvest")
    if not chosen:
        unrecorded = any(run.first("run") is None for run in runs)
        raise ConfigError(f"no archived run in {directory} matches: {asked(options, unrecorded)}")
    return sorted(chosen, key=lambda pair: (_created(pair[1]) or "", pair[0].run_id))


def record_matches(data: dict[str, Any] | None, options: ReportOptions) -> bool:
    """Whether a run with this run object (None: none archived) is one `--test` and
    `--since` ask for."""
    if options.tests and (data is None or data.get("test_id") not in options.tests):
        return False
    return not options.since or _since(data, options.since)


def unread(unlisted: list[tuple[Path, OSError]]) -> str:
    """The directories that could not be listed, and why, in a few words."""
    said = [f"{where} ({exc.strerror or exc})" for where, exc in unlisted[:3]]
    more = f" and {len(unlisted) - 3} more" if len(unlisted) > 3 else ""
    return f"cannot list {', '.join(said)}{more}: their runs are not in the report"


def build_page(
    directory: str | Path,
    options: ReportOptions,
    unlisted: list[tuple[Path, OSError]] | None = None,
) -> dict[str, Any]:
    """The page's data: every selected run's figures, trends per test when a test has more
    than one run, and the details of the newest run of each test (`unlisted`: as
    `choose_runs`)."""
    chosen = choose_runs(directory, options, unlisted)
    groups: dict[Any, list[tuple[RunPoint, dict[str, Any]]]] = defaultdict(list)
    for run, data in chosen:
        report = read_run(run)
        point = RunPoint(run.run_id, _created(data), report.figures.values,
                         report.figures.estimated)  # fmt: skip
        groups[(data or {}).get("test_id")].append((point, report.as_json()))
    trends, details, found = [], [], []
    for test, members in groups.items():
        details.append(members[-1][1])  # the newest run of the test
        if len(members) < 2:
            continue
        points = [point for point, _ in members]
        rows = regressions(points, options.margin, options.baseline)
        found.extend(rows)
        header = members[-1][1]["header"]
        trend = trend_charts(points, rows)
        trends.append({"test": test, "test_name": header.get("test_name"), **trend})
    return {
        "title": _title(chosen),
        "generated": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "margin": options.margin,
        "baseline": options.baseline,
        "regressions": found,
        "trends": trends,
        "runs": details,
    }


def _title(chosen: list[tuple[ArchivedRun, dict[str, Any] | None]]) -> str:
    if len(chosen) == 1:
        return f"k6 run {chosen[0][0].run_id}"
    return f"{len(chosen)} k6 runs, {chosen[0][0].run_id} to {chosen[-1][0].run_id}"


def _created(run: dict[str, Any] | None) -> str | None:
    created = (run or {}).get("created")
    return created if isinstance(created, str) else None


def _since(run: dict[str, Any] | None, since: datetime) -> bool:
    created = _created(run)
    return created is not None and epoch(created) >= since.timestamp()


def asked(options: ReportOptions, unrecorded: bool) -> str:
    """What was asked; with a hint when runs without a run record could not be chosen (an
    archive whose runs all have theirs simply holds no such run)."""
    asked = [f"--run {r}" for r in options.run_ids] + [f"--test {t}" for t in options.tests]
    if options.since:
        asked.append(f"--since {options.since:%Y-%m-%dT%H:%M:%SZ}")
    note = " (--test and --since need run records: harvest with --run-record)"
    hinted = unrecorded and (options.tests or options.since)
    return " ".join(asked) + (note if hinted else "")
