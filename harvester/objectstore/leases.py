"""Which jobs on a prefix are alive, so that no job ever aborts a live job's upload.

Each job keeps a lease: the object `PREFIX.harvester-live/<job id>`, rewritten every
third of `--s3-lease` seconds (`s3_lease`) while the job runs and deleted when it ends.
It lists the runs whose multipart uploads the job has begun; a run is added (and the
lease rewritten) *before* its first upload is created. A lease is fresh while its
LastModified is within `s3_lease` of the store's clock (the Date of the same answer, so
the hosts' clocks do not matter).

A job about to write runs aborts their incomplete uploads except those of runs that a
fresh lease other than its own names (`stale_uploads`). It lists the uploads first and
the leases second: an upload listed was created after its job's lease named the run,
so that lease is listed too. A job killed with SIGKILL stops renewing its lease; once
the lease is stale its uploads are aborted by the next job. The objects' own create-only
writes keep two live jobs apart; the leases only say whose uploads are whose.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import anyio
import orjson

from .failures import StoreError
from .store import Store, server_time

LIVE_DIR = ".harvester-live/"


@dataclass
class Lease:
    """This job's lease (see the module's docstring)."""

    store: Store
    seconds: float
    job: str = field(default_factory=lambda: uuid.uuid4().hex)
    runs: set[int] = field(default_factory=set)

    @property
    def key(self) -> str:
        return self.store.loc.key(LIVE_DIR + self.job)

    async def renew(self) -> None:
        body = {"job": self.job, "host": socket.gethostname(), "pid": os.getpid(),
                "lease_seconds": self.seconds, "runs": sorted(self.runs)}  # fmt: skip
        await self.store.put(self.key, orjson.dumps(body), create_only=False)

    async def keep(self) -> None:
        """Renew the lease until cancelled. A renewal that fails is tried again at the next
        beat; should the lease go stale meanwhile, another job may abort this one's
        uploads: those runs then fail here and are harvested again (never lost)."""
        while True:
            await anyio.sleep(self.seconds / 3)
            try:
                await self.renew()
            except StoreError:
                pass

    async def claim(self, run_id: int) -> None:
        """Name `run_id` in the lease before creating one of its uploads."""
        if run_id not in self.runs:
            self.runs.add(run_id)
            await self.renew()

    def release(self, run_id: int) -> None:
        self.runs.discard(run_id)  # said at the next renewal

    async def end(self) -> None:
        try:
            await self.store.call("delete_object", Key=self.key)
        except StoreError:
            pass  # a stale lease names no live upload; the next job deletes it


async def live_runs(store: Store, seconds: float, mine: str) -> dict[str, set[int]]:
    """The runs named by each fresh lease but `mine` (job -> runs); stale leases are
    deleted on the way."""
    found: dict[str, set[int]] = {}
    prefix = store.loc.key(LIVE_DIR)
    async for page in store.pages("list_objects_v2", Prefix=prefix):
        now = server_time(page)
        for item in page.get("Contents", []):
            job = item["Key"][len(prefix) :]
            if job == mine:
                continue
            if now is not None and item["LastModified"] < now - timedelta(seconds=seconds):
                await _forget(store, item["Key"])
                continue
            runs = await _runs_of(store, item["Key"])
            if runs is not None:
                found[job] = runs
    return found


async def _runs_of(store: Store, key: str) -> set[int] | None:
    try:
        answer = await store.call("get_object", Key=key)
        async with answer["Body"] as body:
            lease: Any = orjson.loads(await body.read())
    except StoreError:
        return None  # ended meanwhile
    except orjson.JSONDecodeError:
        return set()
    return {int(run) for run in lease.get("runs", []) if isinstance(run, int)}


async def _forget(store: Store, key: str) -> None:
    try:
        await store.call("delete_object", Key=key)
    except StoreError:
        pass


async def is_live(store: Store, job: str, seconds: float) -> bool:
    """Whether `job`'s lease is fresh (by the store's clock)."""
    answer = await store.head(store.loc.key(LIVE_DIR + job))
    if answer is None:
        return False
    now = server_time(answer)
    modified: datetime = answer["LastModified"]
    return now is None or modified >= now - timedelta(seconds=seconds)


async def stale_uploads(
    store: Store, run_of: Any, run_ids: Iterable[int], lease: Lease
) -> list[tuple[str, str]]:
    """(key, upload id) of the incomplete uploads of `run_ids`' objects that no fresh lease
    of another job names; `run_of(key)` is the run id of a key (or None)."""
    wanted = set(run_ids)
    uploads: list[tuple[str, str, int]] = []
    async for page in store.pages("list_multipart_uploads"):
        for up in page.get("Uploads", []):
            run_id = run_of(up["Key"])
            if run_id in wanted:
                uploads.append((up["Key"], up["UploadId"], run_id))
    if not uploads:
        return []
    # Listed after the uploads: see the module's docstring.
    busy = set().union(*(await live_runs(store, lease.seconds, lease.job)).values())
    return [(key, upload_id) for key, upload_id, run_id in uploads if run_id not in busy]
