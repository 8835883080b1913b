"""What an object-store archive holds, read back from one listing of its prefix: the runs
whose data object is stored (in any format, compression and --layout), for a job's
resume, `harvester runs --out s3://` and `harvester status --out s3://` (which leave out,
as a harvest does, a run that a dead `--force` job left half replaced: `leases.torn_runs`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
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


async def stored_runs(
    store: Store, *, export_csv: bool = False, places: dict[int, set[str]] | None = None
) -> dict[int, StoredRun]:
    """The runs archived under the prefix (with `export_csv`: those with their CSV too);
    `places` is filled with the directories where each run has any object (a run archived
    in both layouts, or only partly, has several)."""
    data: dict[int, StoredRun] = {}
    csvs: set[int] = set()
    prefix = store.loc.prefix
    async for page in store.pages("list_objects_v2"):
        for item in page.get("Contents", []):
            name = item["Key"][len(prefix) :]
            if places is not None and (of_run := RUN_OF.match(name)):
                places.setdefault(int(of_run.group(2)), set()).add(of_run["dir"] or "")
            if (found := DATA_KEY.fullmatch(name)) and found.group(3) in ARCHIVED_BY:
                run_id = int(found.group(2))
                data[run_id] = StoredRun(
                    run_id, item["Key"], item["Size"], item["LastModified"], found["dir"] or ""
                )
            elif found_csv := CSV_KEY.fullmatch(name):
                csvs.add(int(found_csv.group(2)))
    return {r: run for r, run in data.items() if not export_csv or r in csvs}


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
