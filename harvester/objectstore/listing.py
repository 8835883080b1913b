"""What an object-store archive holds, read back from one listing of its prefix: each run's
data objects by directory (`list_runs`), and the runs whose data object is stored (in any
format, compression and --layout), for a job's resume, `harvester runs --out s3://` and
`harvester status --out s3://` (which leave out, as a harvest does, a run that a dead
`--force` job left half replaced: `leases.torn_runs`); `report s3://` copies the objects."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import anyio

from ..compression import ARCHIVED_BY, DATA_NAME, RUN_ID
from ..config import Settings
from .leases import torn_runs
from .store import Store

#: A run's directory below the prefix in --layout date (`YYYY/MM/DD/`, `undated/`).
DATED = r"(?:(?P<dir>[0-9]{4}/[0-9]{2}/[0-9]{2}|undated)/)?"
RUN_OF = re.compile(DATED + RUN_ID + r"\.")
DATA_KEY = re.compile(DATED + DATA_NAME.pattern)
CSV_KEY = re.compile(DATED + RUN_ID + r"\.csv(?:\.gz)?")


def run_of_key(prefix: str) -> Callable[[str], int | None]:
    """The run a key under `prefix` belongs to (any file of it, in either layout), or None."""

    def run_of(key: str) -> int | None:
        found = RUN_OF.match(key[len(prefix) :]) if key.startswith(prefix) else None
        return int(found.group(2)) if found else None

    return run_of


@dataclass(frozen=True)
class StoredRun:
    """An archived run: its data object (the one whose presence says the run is whole)."""

    run_id: int
    key: str
    bytes: int
    modified: datetime
    directory: str  # below the prefix ('' in the flat layout)

    def row(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "key": self.key, "bytes": self.bytes,
                "modified": self.modified.isoformat(timespec="seconds")}  # fmt: skip


@dataclass
class RunObjects:
    """A run's data objects in one directory below the prefix: (name below the prefix,
    size), the one that says the run is archived (`ARCHIVED_BY`, the last published) first,
    and that one as a `StoredRun` (None: the run is not archived there, only partly)."""

    run_id: int
    directory: str  # '' in the flat layout
    objects: list[tuple[str, int]] = field(default_factory=list)
    archived: StoredRun | None = None


@dataclass
class ArchiveListing:
    """One listing of the prefix: each run's data objects by (run id, directory), in the
    listing's order, and the runs that have their CSV export."""

    runs: dict[tuple[int, str], RunObjects] = field(default_factory=dict)
    csvs: set[int] = field(default_factory=set)


async def list_runs(store: Store, places: dict[int, set[str]] | None = None) -> ArchiveListing:
    """Every run's data objects under the prefix; `places` is filled with the directories
    where each run has any object (a run archived in both layouts, or only partly, has
    several)."""
    listing = ArchiveListing()
    prefix = store.loc.prefix
    async for page in store.pages("list_objects_v2"):
        for item in page.get("Contents", []):
            name = item["Key"][len(prefix) :]
            if places is not None and (of_run := RUN_OF.match(name)):
                places.setdefault(int(of_run.group(2)), set()).add(of_run["dir"] or "")
            if found := DATA_KEY.fullmatch(name):
                run_id, directory = int(found.group(2)), found["dir"] or ""
                run = listing.runs.setdefault((run_id, directory), RunObjects(run_id, directory))
                size = int(item["Size"])
                if found.group(3) in ARCHIVED_BY:  # first: the one whose first line is the run's
                    run.objects.insert(0, (name, size))
                    run.archived = StoredRun(
                        run_id, item["Key"], size, item["LastModified"], directory
                    )
                else:
                    run.objects.append((name, size))
            elif found_csv := CSV_KEY.fullmatch(name):
                listing.csvs.add(int(found_csv.group(2)))
    return listing


async def stored_runs(
    store: Store, *, export_csv: bool = False, places: dict[int, set[str]] | None = None
) -> dict[int, StoredRun]:
    """The runs archived under the prefix (with `export_csv`: those with their CSV too),
    each where it was listed last (`list_runs`: `places` as there)."""
    listing = await list_runs(store, places)
    data = {run_id: stored for (run_id, _), run in listing.runs.items() if (stored := run.archived)}
    return {r: run for r, run in data.items() if not export_csv or r in listing.csvs}


def list_archive(settings: Settings) -> dict[int, StoredRun]:
    """`stored_runs` for the commands that are not async: connect, list once, close."""

    async def listed() -> dict[int, StoredRun]:
        store = Store(settings)
        await store.open()
        try:
            stored = await stored_runs(store, export_csv=settings.export_csv)
            torn = await torn_runs(store, settings.s3_lease, mine="")
            return {run_id: run for run_id, run in stored.items() if run_id not in torn}
        finally:
            await store.close()

    return anyio.run(listed)
