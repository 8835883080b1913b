"""A whole run's objects stored in the order that makes its data object the last one
(`ObjectSink.commit` hands the run here once its parts are sent and its manifest built):

1. the manifest, create-only: it is the run's claim. When another job's manifest is there
   and its lease is fresh (`leases`), this job waits until its data object exists (then
   counts the run done and drops its copy) or its lease is stale (a job killed after the
   manifest: up to `s3_lease` seconds). A manifest left by a dead job is replaced
   (`If-Match` its ETag: of two jobs replacing it, one wins);
2. the CSV export (`--export-csv`, downloaded into a local spool beforehand);
3. the other data files (`points.ndjson`, `parquet`);
4. the file whose presence says the run is archived (`ndjson`, or `meta.ndjson` for
   points and parquet), create-only (`If-None-Match: *`).

So a run's data object exists only when everything else of the run is stored whole.
`--force` claims the run as being replaced first (`Lease.claim`), writes without conditions
and removes the run's objects of another format or compression (`_remove_others`). A run
that such a job left half replaced (`leases.torn_runs`), or that two `--force` jobs
replaced at once (`_still_ours`), is stored as `--force` stores it, but for its manifest,
which is taken as in step 1 from the job that left it. Its CSV
export, when this job does not fetch one (no `--export-csv`), is kept as an earlier job
stored it (`kept_export`): named by the new manifest, and copied along when the run moves
to another layout (it was deleted).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup

from .. import manifest
from ..compression import CODECS, suffix
from ..errors import OutputError
from ..layout import Places
from ..runfiles import KINDS, codec_for
from .failures import StoreError
from .leases import CLAIM_POLL, Lease, drop_claims, is_live
from .location import Location
from .parts import PartBuffer, Upload
from .store import Store, checksum

#: The metadata key of a manifest that names the job which stored it.
OWNER = "harvester-job"


def _owner(head: Mapping[str, Any]) -> str:
    """The job that stored a manifest (its HEAD's answer), or "" when it does not say."""
    return str(head.get("Metadata", {}).get(OWNER, ""))


@dataclass(frozen=True)
class Names:
    """A run's file names (as in `--out DIR`) and their keys under the prefix."""

    loc: Location
    places: Places  # --layout date: a run's keys are `<prefix>YYYY/MM/DD/<name>`
    codec: str

    def name(self, run_id: int, kind: str) -> str:
        return f"{run_id}{suffix(codec_for(kind, self.codec), kind)}"

    def key(self, run_id: int, name: str) -> str:
        """The key of the run's file `name`, in the run's directory (--layout)."""
        return self.loc.prefix + self.places.key(run_id, name)

    def kind_key(self, run_id: int, kind: str) -> str:
        return self.key(run_id, self.name(run_id, kind))

    def manifest_key(self, run_id: int) -> str:
        return self.key(run_id, f"{run_id}{manifest.SUFFIX}")


@dataclass
class RunObjects:
    """What a run has ready to store: each file's buffer, the uploads begun, and once the
    run is written each file's last part, sealed (`seal_rests`)."""

    buffers: dict[str, PartBuffer]
    uploads: dict[str, Upload] = field(default_factory=dict)
    rests: dict[str, tuple[bytearray, dict[str, str]]] = field(default_factory=dict)

    def held(self) -> int:
        """Bytes of the run in memory, not yet sent: its parts to come and its rests."""
        waiting = sum(buffer.held() for buffer in self.buffers.values())
        return waiting + sum(len(rest) for rest, _ in self.rests.values())

    async def seal_rests(self) -> None:
        """Each file's unsent rest sealed: its sha256 is then whole, for the manifest."""
        for kind, buffer in self.buffers.items():
            rest = buffer.rest()
            self.rests[kind] = (rest, await buffer.seal(rest, whole=kind not in self.uploads))


@dataclass(frozen=True)
class KeptExport:
    """A run's CSV export stored by an earlier job, kept (--force without --export-csv):
    its manifest's entry for it, and its key."""

    entry: dict[str, Any]
    key: str


@dataclass
class Publisher:
    """Stores a run's objects in the module's order."""

    store: Store
    lease: Lease
    names: Names
    output_format: str
    create_only: bool  # --force replaces archived runs on purpose
    part_size: int
    #: The sink's: parts go out from its tasks, at most its slots at once.
    tasks: TaskGroup
    slots: anyio.Semaphore
    #: Where (the directories below the prefix) each run has objects (the job's listing).
    found: Mapping[int, set[str]] = field(default_factory=dict)
    #: The runs a dead `--force` job left half replaced, with its claims on them (the
    #: sink's `survey`): each is replaced whole here, then the claims go.
    torn: dict[int, list[tuple[str, str]]] = field(default_factory=dict)

    def upload(self, run_id: int, key: str) -> Upload:
        """A multipart upload of `key`, the run claimed (`Lease.claim`) before it is made."""
        claim = functools.partial(self.lease.claim, run_id)
        return Upload(self.store, key, self.tasks, self.slots, claim)

    async def publish(
        self,
        run_id: int,
        run: RunObjects,
        body: bytes,
        csv: Path | None,
        kept: KeptExport | None = None,
    ) -> None:
        """The run's objects, `body` its manifest (`kept`: the export it names that an
        earlier job stored); nothing more when the run is another job's (step 1)."""
        replacing = not self.create_only or run_id in self.torn
        if not self.create_only:
            await self.lease.claim(run_id, forcing=True)
        if not await self._claim(run_id, body, torn=run_id in self.torn):
            return  # (another job's: this one never claims to replace it)
        # An earlier job's export under another layout's key: copied here, then removed.
        moved = kept if kept and kept.key != self.names.key(run_id, kept.entry["name"]) else None
        if csv is not None:
            await self._put_file(run_id, csv)
        elif moved is not None:
            source = {"Bucket": self.names.loc.bucket, "Key": moved.key}
            await self.store.call(
                "copy_object", Key=self.names.key(run_id, moved.entry["name"]), CopySource=source
            )
        kinds = list(run.buffers)
        for kind in kinds[:-1]:
            await self._store(run_id, run, kind, create_only=False)
        won = await self._store(run_id, run, kinds[-1], create_only=not replacing)
        if won and replacing:
            await self._remove_others(run_id, kinds, csv)
            if moved is not None:
                await self.store.call("delete_object", Key=moved.key)  # (copied: moved)
        if not self.create_only:
            await self._still_ours(run_id)
        await self.lease.release(run_id, forcing=True)
        await drop_claims(self.store, self.torn.pop(run_id, ()))

    async def _claim(self, run_id: int, body: bytes, *, torn: bool = False) -> bool:
        """Store the manifest, create-only: False when the run is another job's (see the
        module's docstring). `torn`: a dead job's half replaced run, whose data object is
        the old one, not the dead job's manifest's."""
        key = self.names.manifest_key(run_id)
        meta = {"Metadata": {OWNER: self.lease.job}}
        if await self.store.put(key, body, create_only=self.create_only, **meta):
            return True
        last = self.names.kind_key(run_id, KINDS[self.output_format][-1])
        while True:
            found = await self.store.head(key)
            if found is None:  # removed meanwhile: try once more, create-only
                return await self.store.put(key, body, create_only=True, **meta)
            owner = _owner(found)
            if not (owner and await is_live(self.store, owner, self.lease.seconds)):
                break
            if await self.store.head(last) is not None:
                return False  # stored whole by the live job
            # Live, or killed a moment ago (its lease fresh for up to `s3_lease`): taken
            # for a live job's, the run was counted done here and never stored. A live
            # job stores its data object in moments; a dead one's lease goes stale.
            await anyio.sleep(min(CLAIM_POLL, self.lease.seconds / 3))
        # (its lease checked first: a job that ended had stored its data object before)
        if not torn and await self.store.head(last) is not None:
            return False
        return await self.store.put(key, body, create_only=False, IfMatch=found["ETag"], **meta)

    async def _still_ours(self, run_id: int) -> None:
        """--force: the run's manifest still this job's once its data object is stored, else
        a `StoreError`, its claim kept (the run torn: the next job stores it again). Two
        jobs replacing one run at once each write both without conditions, and interleaved,
        one's data object can stand under the other's manifest: then the job whose data
        object came last finds the other's manifest here (its own came before its data)."""
        found = await self.store.head(self.names.manifest_key(run_id))
        if found is None or _owner(found) != self.lease.job:
            raise StoreError(
                f"run {run_id} was replaced by another job at the same time (--force): "
                "its manifest may not name its data; the next harvest stores it again",
                "",
            )

    async def _store(self, run_id: int, run: RunObjects, kind: str, *, create_only: bool) -> bool:
        """Make `kind`'s object of what was written; False when it exists (create_only)."""
        rest, checksums = run.rests[kind]
        upload = run.uploads.get(kind)
        if upload is None:
            key = self.names.kind_key(run_id, kind)
            return await self.store.put(key, rest, create_only=create_only, checksums=checksums)
        if rest:
            await upload.send(rest, checksums)
        return await upload.complete(create_only=create_only)

    async def _put_file(self, run_id: int, path: Path) -> None:
        """A local file (the CSV export) as the object of the same name, in parts."""
        key = self.names.key(run_id, path.name)
        try:
            with path.open("rb") as fh:
                first = await anyio.to_thread.run_sync(fh.read, self.part_size)
                nxt = await anyio.to_thread.run_sync(fh.read, self.part_size)
                if not nxt:
                    await self.store.put(key, first, create_only=False)
                    return
                upload = self.upload(run_id, key)
                try:
                    while first:
                        await upload.send(first, await checksum(first))
                        first, nxt = nxt, await anyio.to_thread.run_sync(fh.read, self.part_size)
                    await upload.complete(create_only=False)
                finally:
                    await upload.abort()
        except OSError as exc:
            raise OutputError(f"cannot read the export {path}: {exc.strerror or exc}") from exc

    async def kept_export(self, run_id: int) -> KeptExport | None:
        """--force without --export-csv: the run's CSV export as its manifest names it,
        where the run was archived (here first), when it is there with that size."""
        here = self.names.places.relative(run_id)
        for directory in sorted(self.found.get(run_id, ()), key=lambda where: where != here):
            at = self.names.loc.prefix + (f"{directory}/" if directory else "")
            try:
                found = manifest.parse(await self._read(f"{at}{run_id}{manifest.SUFFIX}"), run_id)
            except (StoreError, ValueError):
                continue  # no manifest there, or none to trust: nothing to keep by it
            for entry in manifest.named_files(found):
                if entry["name"] in (f"{run_id}.csv", f"{run_id}.csv.gz"):
                    stored = await self.store.head(at + entry["name"])
                    if stored is not None and stored.get("ContentLength") == entry.get("bytes"):
                        return KeptExport(entry, at + entry["name"])
        return None

    async def _read(self, key: str) -> bytes:
        """A small object (a manifest: past `MANIFEST_LIMIT`, a ValueError)."""
        answer = await self.store.call("get_object", Key=key)
        body = answer["Body"]
        try:
            if answer.get("ContentLength", 0) > manifest.MANIFEST_LIMIT:
                raise ValueError("not a harvester manifest")
            data: bytes = await body.read()
            return data
        finally:
            body.close()

    async def _remove_others(self, run_id: int, kinds: list[str], csv: Path | None) -> None:
        """--force with another format, compression or layout: one run is never archived
        twice (its objects where it was found go too). Its older CSV exports go only for
        the one stored now (`csv`): without --export-csv the export is not this job's."""
        names = {f"{run_id}{suffix(codec, kind)}" for kind in KINDS["raw"] + KINDS["points"]
                 + KINDS["parquet"] for codec in CODECS}  # fmt: skip
        names.add(f"{run_id}{manifest.SUFFIX}")
        here = self.names.places.relative(run_id)
        kept = {self.names.kind_key(run_id, kind) for kind in kinds}
        kept.add(self.names.manifest_key(run_id))
        if csv is not None:
            names |= {f"{run_id}.csv", f"{run_id}.csv.gz"}
            kept.add(self.names.key(run_id, csv.name))
        prefix = self.names.loc.prefix
        for directory in {here, *self.found.get(run_id, ())}:
            for name in sorted(names):
                key = prefix + (f"{directory}/{name}" if directory else name)
                if key not in kept:
                    await self.store.call("delete_object", Key=key)
