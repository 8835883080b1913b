"""`--layout flat|date`: which directory of the archive holds each run's files.

`flat` keeps every run in the archive's root, `date` under `YYYY/MM/DD/` of the run's
creation (UTC), so an archive that grows for years stays a tree of small directories.
`run_dir` is the one place that decides; everything that computes a run's path (the
sinks and their temporary files, manifests, the CSV export, the object keys) asks
`Places`, and everything that reads an archive back walks `run_dirs`.

A run without a known creation date (`--run ID` without its run object) is placed only
after its run object is fetched (the scheduler asks for it: one request, the run's
`run` record); a run object without a readable `created` goes to `undated/`.

Both layouts are recognised whichever is asked: a run archived flat is not harvested
again by a date job, nor the reverse (`Places.locate`), so switching layouts on an
archive neither refetches nor duplicates its runs; only new runs go the new way.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .compression import published_run, run_id_of
from .moments import utc_moment

LAYOUTS = ("flat", "date")
#: The date layout's directory for a run whose creation date is unknown.
UNDATED = "undated"
_YEAR, _MONTH_OR_DAY = re.compile(r"[0-9]{4}"), re.compile(r"[0-9]{2}")


def parse_created(run: Mapping[str, Any] | None) -> datetime | None:
    """The run's `created` moment (v2 and v6 both name it so), or None when it is missing
    or unreadable. A time without a zone is UTC."""
    return utc_moment(run.get("created") if run is not None else None)


def run_dir(layout: str, created: datetime | None) -> str:
    """A run's directory relative to the archive's root: '' (flat), 'YYYY/MM/DD' of
    `created` in UTC (date), 'undated' (date, no creation date)."""
    if layout == "flat":
        return ""
    if created is None:
        return UNDATED
    try:
        day = created.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:00-05:00 is past year 9999 in UTC: no date
        return UNDATED
    # Four digits a year, as `run_dirs` walks them: strftime wrote year 999 as '999'.
    return f"{day.year:04d}/{day.month:02d}/{day.day:02d}"


def run_dirs(root: Path, unlisted: list[tuple[Path, OSError]] | None = None) -> Iterator[Path]:
    """Every directory of an archive that may hold runs, in either layout: the root, each
    `YYYY/MM/DD` below it (in date order) and `undated`. Nothing else is walked. A year or
    month that cannot be listed is skipped, and added to `unlisted` with why when given
    (verify says so: it passed over such a year's runs in silence)."""
    yield root
    for year in _subdirs(root, _YEAR, unlisted):
        for month in _subdirs(year, _MONTH_OR_DAY, unlisted):
            yield from _subdirs(month, _MONTH_OR_DAY, unlisted)
    undated = root / UNDATED
    if undated.is_dir():
        yield undated


def _subdirs(
    parent: Path, name: re.Pattern[str], unlisted: list[tuple[Path, OSError]] | None = None
) -> list[Path]:
    try:
        entries = list(os.scandir(parent))
    except OSError as exc:
        if unlisted is not None:
            unlisted.append((parent, exc))
        return []
    found = [e for e in entries if name.fullmatch(e.name) and e.is_dir(follow_symlinks=False)]
    return [Path(e.path) for e in sorted(found, key=lambda e: e.name)]


def archived_dirs(root: Path) -> dict[int, Path]:
    """Each run with a data file anywhere in the tree, with its directory (one walk)."""
    found: dict[int, Path] = {}
    for directory in run_dirs(root):
        with os.scandir(directory) as entries:
            for entry in entries:
                run_id = run_id_of(Path(entry.name))
                if run_id is not None and run_id not in found and entry.is_file():
                    found[run_id] = directory
    return found


def make_dirs(root: Path, relative: str) -> Path:
    """`root/relative`, each level created if need be and made durable: a new directory's
    entry is fsynced in its parent, or a crash could lose the files published in it."""
    directory = root
    for part in Path(relative).parts:
        parent, directory = directory, directory / part
        try:
            directory.mkdir()
        except FileExistsError:
            continue
        fd = os.open(parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return directory


class Places:
    """Where each run of one job lives under the archive's `root` (for an object store,
    under its prefix): decided once per run (`decide`), then asked by every writer."""

    def __init__(self, layout: str = "flat", root: Path | None = None) -> None:
        self.layout = layout
        self.root = root if root is not None else Path()
        self._decided: dict[int, str] = {}
        #: Where runs were found archived before this job (`locate`), for --force.
        self.found: dict[int, Path] = {}
        self._index: dict[int, Path] | None = None

    def needs_run_object(self, run: Mapping[str, Any] | None) -> bool:
        """The date layout places a run by its run object: fetch it when it is not known."""
        return self.layout == "date" and run is None

    def decide(self, run_id: int, run: Mapping[str, Any] | None) -> str:
        """The run's directory, relative (see `run_dir`), remembered for its writers."""
        relative = run_dir(self.layout, parse_created(run))
        self._decided[run_id] = relative
        return relative

    def relative(self, run_id: int) -> str:
        """The decided directory ('' when none was: a run that failed before its date was
        known leaves nothing behind, and the root always exists)."""
        return self._decided.get(run_id, "")

    def directory(self, run_id: int) -> Path:
        return self.root / self.relative(run_id)

    def key(self, run_id: int, name: str) -> str:
        """A run's object key below a prefix: `YYYY/MM/DD/<name>` or `<name>`."""
        relative = self.relative(run_id)
        return f"{relative}/{name}" if relative else name

    def locate(
        self, run_id: int, run: Mapping[str, Any] | None, recorded: str | None = None
    ) -> Path | None:
        """The directory the run is archived in, in either layout, or None. Known dates
        cost a stat or two; a run without one is looked for where the state `recorded`
        its file, else in one walk of the tree (once per job)."""
        created = parse_created(run)
        candidates = [self.root]
        if created is not None:
            candidates.append(self.root / run_dir("date", created))
        elif recorded is not None and self._inside(Path(recorded).parent):
            candidates.append(Path(recorded).parent)
        for directory in candidates:
            if published_run(directory, run_id) is not None:
                self.found[run_id] = directory
                return directory
        if created is not None:
            return None  # a dated run is in one of those two places, or not archived
        if self._index is None:
            self._index = archived_dirs(self.root)
        where = self._index.get(run_id)
        if where is None or published_run(where, run_id) is None:
            return None
        self.found[run_id] = where
        return where

    def _inside(self, directory: Path) -> bool:
        """Whether `directory` is in this archive (a state may name a copy elsewhere)."""
        try:
            return directory.resolve().is_relative_to(self.root.resolve())
        except OSError:
            return False
