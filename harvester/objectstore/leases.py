"""Which jobs on a prefix are alive, so that no job ever aborts a live job's upload, with
nothing of it ever listed among the prefix's objects: a lease is an incomplete multipart
upload, which only ListMultipartUploads shows (and which is never completed).

Each job keeps one: an upload at `PREFIX.harvester-live/<job id>` whose part 1 it
uploads again every third of `--s3-lease` seconds (`s3_lease`) while it runs, and aborts
when it ends. The job is live while that part's LastModified (ListParts) is within
`s3_lease` of the store's clock (the Date of the same answer, so the hosts' clocks do not
matter). Before a run's first upload is created, the job names the run with a claim: an
upload without parts at `PREFIX.harvester-live/<job id>/<run id>`, aborted when the run
is done. A `--force` job claims a run again before it replaces the run's manifest, at
`.../<run id>.force`, and aborts that claim only once the run's data object is stored:
cut between the two (a kill, the store failing), the run's old data object stands under
its new manifest, and that claim, left behind, has the next job that wants the run
harvest it again (`torn_runs`); a job that finds such a claim of a live job (or of one
killed a moment ago) waits until it goes or is stale (`torn_once_settled`).

A job about to write runs aborts their incomplete uploads except those of runs that a
live job other than itself claims (`stale_uploads`). It lists the uploads first and the
claims second: an upload listed was created after its job's claim, so that claim is
listed too. A job killed with SIGKILL stops renewing its lease; once the lease is stale,
the next job aborts its uploads, its claims and its lease. The objects' own create-only
writes keep two live jobs apart; the leases only say whose uploads are whose.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta

import anyio

from .failures import StoreError
from .parts import PART_CHECKSUM
from .store import Store, checksum, server_time

LIVE_DIR = ".harvester-live/"
#: What ends a `--force` job's claim on a run it is replacing.
FORCED = ".force"
#: The lease's part.
LIVE = b"live\n"
#: Seconds between looks at another job's claim on a run, while its lease is fresh.
CLAIM_POLL = 1.0
#: The store's answers for an upload that is not there (aborted, or never was).
NO_UPLOAD = ("NoSuchUpload", "404")


@dataclass
class Lease:
    """This job's lease and claims (see the module's docstring)."""

    store: Store
    seconds: float
    job: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: The runs claimed: run id -> the claim's upload id.
    runs: dict[int, str] = field(default_factory=dict)
    #: The runs being replaced (`--force`): run id -> the claim's upload id.
    forcing: dict[int, str] = field(default_factory=dict)
    _upload_id: str | None = None

    @property
    def key(self) -> str:
        return self.store.loc.key(LIVE_DIR + self.job)

    async def make(self) -> str:
        """The lease's upload made, if it is not (its first beat is `renew`'s); its id."""
        if self._upload_id is None:
            self._upload_id = await _create(self.store, self.key)
        return self._upload_id

    async def renew(self) -> None:
        """Upload part 1 again (the lease's upload made first, or again if it was aborted:
        by a bucket's lifecycle rule, or by a job that found it stale)."""
        upload_id = await self.make()
        try:
            await self._beat()
        except StoreError:
            # Some stores answer a part of an aborted upload with a 500 (moto): asked
            # whether the upload is there, every store says NoSuchUpload.
            if await _exists(self.store, self.key, upload_id):
                raise
            self._upload_id = await _create(self.store, self.key)
            await self._beat()

    async def _beat(self) -> None:
        await self.store.call(
            "upload_part",
            Key=self.key,
            UploadId=self._upload_id,
            PartNumber=1,
            Body=LIVE,
            **await checksum(LIVE),
        )

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

    async def claim(self, run_id: int, *, forcing: bool = False) -> None:
        """Claim `run_id` before creating one of its uploads; `forcing`: as being replaced,
        before its manifest is (`--force`)."""
        claims, suffix = (self.forcing, FORCED) if forcing else (self.runs, "")
        if run_id not in claims:
            claims[run_id] = await _create(self.store, f"{self.key}/{run_id}{suffix}")

    async def release(self, run_id: int, *, forcing: bool = False) -> None:
        """The claim let go; `forcing`: the run is replaced whole (its data object stored)."""
        claims, suffix = (self.forcing, FORCED) if forcing else (self.runs, "")
        upload_id = claims.pop(run_id, None)
        if upload_id is not None:
            await _abort(self.store, f"{self.key}/{run_id}{suffix}", upload_id)

    async def end(self) -> None:
        """The claims and the lease aborted (best effort: a stale lease protects nothing,
        and the next job aborts what is left). A run being replaced and not replaced
        whole keeps its claim (`forcing`): the next job that wants it harvests it again."""
        for run_id in list(self.runs):
            await self.release(run_id)
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            await _abort(self.store, self.key, upload_id)


async def _create(store: Store, key: str) -> str:
    answer = await store.call("create_multipart_upload", Key=key, **PART_CHECKSUM)
    return str(answer["UploadId"])


async def _exists(store: Store, key: str, upload_id: str) -> bool:
    try:
        await store.call("list_parts", Key=key, UploadId=upload_id, MaxParts=1)
    except StoreError as exc:
        if exc.code in NO_UPLOAD:
            return False
        raise
    return True


async def _abort(store: Store, key: str, upload_id: str) -> None:
    try:
        await store.call("abort_multipart_upload", Key=key, UploadId=upload_id)
    except StoreError:
        pass  # gone already, or left to the next job and the lifecycle rule


@dataclass
class _Job:
    """Another job's lease and claims, as listed."""

    #: (key, upload id) of its lease: one, or more when a slow store had botocore send the
    #: create again (the first one's upload then never gets its part).
    leases: list[tuple[str, str]] = field(default_factory=list)
    claims: dict[int, tuple[str, str]] = field(default_factory=dict)
    #: The runs it claimed as being replaced (`--force`).
    forcing: dict[int, tuple[str, str]] = field(default_factory=dict)


async def _jobs(store: Store, under: str) -> dict[str, _Job]:
    """The leases and claims listed under `LIVE_DIR + under`, by job."""
    jobs: dict[str, _Job] = {}
    prefix = store.loc.key(LIVE_DIR)
    async for page in store.pages("list_multipart_uploads", Prefix=prefix + under):
        for up in page.get("Uploads", []):
            job, _, run = up["Key"][len(prefix) :].partition("/")
            found = jobs.setdefault(job, _Job())
            forced = run.endswith(FORCED)
            run_id = run.removesuffix(FORCED)
            if not run:
                found.leases.append((up["Key"], up["UploadId"]))
            elif run_id.isascii() and run_id.isdigit():  # ('²' is a digit to isdigit, not int)
                claims = found.forcing if forced else found.claims
                claims[int(run_id)] = (up["Key"], up["UploadId"])
    return jobs


async def _live(store: Store, found: _Job, seconds: float) -> bool:
    """Whether one of the job's leases is fresh (`_fresh`)."""
    for lease in found.leases:
        if await _fresh(store, lease, seconds):
            return True
    return False


async def _fresh(store: Store, lease: tuple[str, str], seconds: float) -> bool:
    """Whether the lease's part is recent by the store's clock. A lease without a part
    yet is stale: its job claims nothing before its first beat, and should its lease be
    aborted meanwhile, that beat makes another (`Lease.renew`)."""
    key, upload_id = lease
    try:
        answer = await store.call("list_parts", Key=key, UploadId=upload_id)
    except StoreError as exc:
        if exc.code in NO_UPLOAD:
            return False  # ended meanwhile
        raise
    parts = answer.get("Parts", [])
    if not parts:
        return False
    now = server_time(answer)
    modified = max(part["LastModified"] for part in parts)
    return now is None or modified >= now - timedelta(seconds=seconds)


async def live_runs(store: Store, seconds: float, mine: str) -> set[int]:
    """The runs claimed by the live jobs but `mine`; the stale jobs' claims and leases are
    aborted on the way."""
    busy: set[int] = set()
    for job, found in (await _jobs(store, "")).items():
        if job == mine:
            continue
        if await _live(store, found, seconds):
            busy.update(found.claims)
            continue
        for key, upload_id in [*found.claims.values(), *found.leases]:
            await _abort(store, key, upload_id)
    return busy


#: A claim as listed: (key, upload id).
Claim = tuple[str, str]


async def forcing_claims(
    store: Store, seconds: float, mine: str
) -> tuple[dict[int, list[Claim]], dict[int, Claim]]:
    """The other jobs' claims on runs they replace (`--force`, `Lease.claim`): those of
    jobs no longer live by run, the runs they did not replace whole (torn: abort the
    claims once the run is stored again, `drop_claims`, not before, so that a job cut
    meanwhile leaves them too); and those of live jobs by run, being replaced now."""
    torn: dict[int, list[Claim]] = {}
    live: dict[int, Claim] = {}
    for job, found in (await _jobs(store, "")).items():
        if job == mine or not found.forcing:
            continue
        if await _live(store, found, seconds):
            live.update(found.forcing)
            continue
        for run_id, claim in found.forcing.items():
            torn.setdefault(run_id, []).append(claim)
    return torn, live


async def torn_runs(store: Store, seconds: float, mine: str) -> dict[int, list[Claim]]:
    """The runs that a `--force` job no longer live left half replaced, with its claims on
    them (`forcing_claims`)."""
    return (await forcing_claims(store, seconds, mine))[0]


async def torn_once_settled(
    store: Store, lease: Lease, wanted: set[int], stop: anyio.Event | None = None
) -> dict[int, list[Claim]]:
    """Which of `wanted` dead `--force` jobs left half replaced (`torn_runs`), once the
    live ones' claims on them listed first are gone (the run replaced whole) or stale
    (torn). A job killed a moment ago looks live for up to `s3_lease`: taken for one
    replacing the runs now, its half replaced runs were counted archived, and the job
    ended 0 with their manifests naming other bytes. Only the claims listed first are
    awaited: a live job claiming run after run would hold this one back until it ended.
    `stop` set (a stop signal: the job starts no run) ends the wait at once."""
    awaited: dict[int, Claim] | None = None
    while True:
        torn, live = await forcing_claims(store, lease.seconds, lease.job)
        held = {run_id: claim for run_id, claim in live.items() if run_id in wanted}
        awaited = held if awaited is None else awaited
        awaited = {run_id: claim for run_id, claim in awaited.items() if held.get(run_id) == claim}
        if not awaited or (stop is not None and stop.is_set()):
            return {run_id: torn[run_id] for run_id in wanted & set(torn)}
        with anyio.move_on_after(min(CLAIM_POLL, lease.seconds / 3)):
            await (stop or anyio.Event()).wait()


async def drop_claims(store: Store, claims: Iterable[tuple[str, str]]) -> None:
    for key, upload_id in claims:
        await _abort(store, key, upload_id)


async def is_live(store: Store, job: str, seconds: float) -> bool:
    """Whether `job`'s lease is fresh (by the store's clock)."""
    return await _live(store, (await _jobs(store, job)).get(job, _Job()), seconds)


#: (key, upload id, run id) of an incomplete upload of a run's object.
RunUpload = tuple[str, str, int]


async def run_uploads(
    store: Store, run_of: Callable[[str], int | None], lease: Lease
) -> tuple[list[RunUpload], bool]:
    """The incomplete uploads of runs' objects under the prefix (`run_of(key)` is the run
    id of a key, or None), and whether another job's lease or claim was listed."""
    found: list[RunUpload] = []
    others = False
    live_dir = store.loc.key(LIVE_DIR)
    async for page in store.pages("list_multipart_uploads"):
        keys = [(up["Key"], up["UploadId"], run_of(up["Key"])) for up in page.get("Uploads", [])]
        found.extend((key, upload_id, run) for key, upload_id, run in keys if run is not None)
        jobs = {key[len(live_dir) :].partition("/")[0] for key, _, _ in keys
                if key.startswith(live_dir)}  # fmt: skip
        others = others or bool(jobs - {lease.job})
    return found, others


async def stale_uploads(
    store: Store, uploads: list[RunUpload], run_ids: Iterable[int], lease: Lease, others: bool
) -> list[tuple[str, str]]:
    """(key, upload id) of those of `uploads` (listed before this is called) that are of
    `run_ids`' objects and that no live job but this one claims. With `others` (another
    job's lease or claim was listed) the stale jobs' leases and claims are aborted even
    when none of `uploads` is wanted: a job killed before its first upload left its lease
    (and maybe claims) for ever otherwise."""
    wanted = set(run_ids)
    mine = [upload for upload in uploads if upload[2] in wanted]
    if not mine and not others:
        return []
    # Listed after the uploads: see the module's docstring.
    busy = await live_runs(store, lease.seconds, lease.job)
    return [(key, upload_id) for key, upload_id, run_id in mine if run_id not in busy]
