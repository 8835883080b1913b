"""`harvester report s3://BUCKET/PREFIX/`: the runs a report reads, copied from the store
into a local directory under the same names (either layout), where the report reads them
as it reads the `--out DIR` of a harvest.

One listing of the prefix finds each archived run's data objects (the points, Parquet and
sidecar objects of a run are read together); a run that a dead `--force` job left half
replaced is left out, as `status` and a harvest leave it out. Only the runs the report
can show are copied: those asked for with `--run`, with `--since` none of a day
directory (`--layout date`: the day a run was created, UTC) before that day, and with
`--test` or `--since` only those whose run record says so, read from each run's first
bytes (`peek`) rather than from a copy of every run. Objects are streamed to
their files in chunks, a few at a time: memory holds chunks, never an object. A copy cut
short (its size is the listing's) is asked for again, up to `--max-attempts` tries.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio

from ..config import Settings
from ..errors import OutputError
from ..layout import run_dir
from .failures import StoreError
from .leases import torn_runs
from .listing import list_runs
from .peek import NO_RECORD, UNKNOWN, run_record
from .store import Store

T = TypeVar("T")

#: Objects copied at once, and the size of each read of one; runs' first bytes read at once.
COPIES = 4
CHUNK = 1 << 20
PEEKS = 8


@dataclass(frozen=True)
class Wanted:
    """Which runs the report can show: these ids (all when empty), created since then,
    and whose run object `record` takes (None: any run; else a run without one is not
    shown, `report.build.choose_runs`'s rule)."""

    run_ids: frozenset[int] = frozenset()
    since: datetime | None = None
    record: Callable[[dict[str, Any]], bool] | None = None

    def run(self, run_id: int) -> bool:
        return not self.run_ids or run_id in self.run_ids

    def directory(self, name: str) -> bool:
        """Whether a directory below the prefix ('', 'undated', 'YYYY/MM/DD') may hold one."""
        if self.since is None or name in ("", "undated"):
            return True
        return name >= run_dir("date", self.since)  # since's own day directory


@dataclass(frozen=True)
class Copied:
    """What was copied, of how many runs archived under the prefix."""

    runs: int
    bytes: int
    archived: int
    #: Runs left out as their object starts with no run record (`record` could not judge).
    unrecorded: int = 0


async def copy_archive(settings: Settings, into: Path, wanted: Wanted) -> Copied:
    """Copy the wanted runs' data objects under `settings.out` into `into`."""
    store = Store(settings)
    await store.open()  # a missing bucket, denied access: one line, before any copy
    try:
        runs, archived = await _wanted_runs(store, wanted, settings.s3_lease)
        unrecorded = 0
        if wanted.record is not None:
            runs, unrecorded = await _recorded(store, runs, wanted.record)
        copy = functools.partial(_copy, store, into, settings.max_attempts)
        await _each(COPIES, copy, (found for objects in runs for found in objects))
    finally:
        await store.close()
    copied = sum(size for objects in runs for _, size in objects)
    return Copied(len(runs), copied, archived, unrecorded)


async def _wanted_runs(
    store: Store, wanted: Wanted, lease: float
) -> tuple[list[list[tuple[str, int]]], int]:
    """The data objects (name below the prefix, size) of each wanted archived run (a run
    is archived where its last published object, `ARCHIVED_BY`, is: listed first), and
    how many runs are archived."""
    listed = await list_runs(store)
    torn = await torn_runs(store, lease, mine="")
    whole = [run for _, run in sorted(listed.runs.items())
             if run.archived is not None and run.run_id not in torn]  # fmt: skip
    chosen = [run for run in whole if wanted.run(run.run_id) and wanted.directory(run.directory)]
    return [run.objects for run in chosen], len({run.run_id for run in whole})


async def _recorded(
    store: Store, runs: list[list[tuple[str, int]]], keep: Callable[[dict[str, Any]], bool]
) -> tuple[list[list[tuple[str, int]]], int]:
    """Those of `runs` whose run object (`peek.run_record` of each first object, a few
    at a time) `keep` takes, or that cannot be told without reading them whole; and how
    many have no run object."""
    records: list[Any] = [UNKNOWN] * len(runs)

    async def peek(item: tuple[int, list[tuple[str, int]]]) -> None:
        index, objects = item
        records[index] = await run_record(store, store.loc.prefix + objects[0][0])

    await _each(PEEKS, peek, enumerate(runs))
    kept = [objects for objects, record in zip(runs, records, strict=True)
            if record is UNKNOWN or (record is not NO_RECORD and keep(record))]  # fmt: skip
    return kept, records.count(NO_RECORD)


async def _each(workers: int, work: Callable[[T], Awaitable[None]], items: Iterable[T]) -> None:
    """`work` on each of `items`, `workers` at a time: that many tasks take the next item
    as each is done (a task an item would be 100,000 tasks for a big archive's objects)."""
    pending = iter(items)

    async def worker() -> None:
        for item in pending:  # (one event loop: no two workers take the same item)
            await work(item)

    async with anyio.create_task_group() as tasks:
        for _ in range(workers):
            tasks.start_soon(worker)


async def _copy(store: Store, into: Path, attempts: int, found: tuple[str, int]) -> None:
    name, size = found
    path = into / name
    for attempt in range(1, attempts + 1):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            got = await _copy_once(store, store.loc.prefix + name, path)
        except OSError as exc:  # a full disk: where the copy goes is the user's to change
            raise OutputError(
                f"cannot copy the archive into {into}: {exc.strerror or exc}; "
                "set TMPDIR to a directory with room for the runs asked for"
            ) from None
        if got == size:
            return
        if attempt == attempts:
            url = f"s3://{store.loc.bucket}/{store.loc.prefix}{name}"
            raise StoreError(
                f"{url} was cut short on each of {attempts} tries (--max-attempts; "
                f"{got} of its {size} bytes the last time): is {store.name} overloaded?",
                "",
            )


async def _copy_once(store: Store, key: str, path: Path) -> int:
    """The object at `key` written to `path`; the bytes that came (fewer when cut)."""
    answer = await store.call("get_object", Key=key)
    body = answer["Body"]
    got = 0
    try:
        with path.open("wb") as fh:
            while chunk := await _read(store, body):
                fh.write(chunk)
                got += len(chunk)
    except StoreError:
        return got  # cut on the way: asked again
    finally:
        body.close()
    return got


async def _read(store: Store, body: Any) -> bytes:
    try:
        chunk: bytes = await body.read(CHUNK)
    except Exception as exc:  # aiohttp's or botocore's: the stream was cut
        raise StoreError(f"{store.name}: a body was cut ({type(exc).__name__})", "") from exc
    return chunk
