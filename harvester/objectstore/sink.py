"""`ObjectSink`: each run's files as objects under the prefix, named as in `--out DIR`, in
every `--format` and `--compress`, with the manifest; the run's data object last.

A run's lines go through the same write stack as a directory's (`runfiles`), into a
`PartBuffer` per file instead of a temporary file: a small file is one PUT, a larger one
a multipart upload whose parts go out from tasks of their own as they fill (`parts`).
When the run is whole, in this order (each step only once the previous one is stored):

1. the manifest, create-only: it is the run's claim. When another job's manifest is there
   the run is that job's while its lease is fresh (`leases`), or once its data object
   exists; either way this job counts the run done and drops its copy. A manifest left
   by a dead job is replaced (`If-Match` its ETag: of two jobs replacing it, one wins);
2. the CSV export (`--export-csv`, downloaded into a local spool beforehand);
3. the other data files (`points.ndjson`, `parquet`);
4. the file whose presence says the run is archived (`ndjson`, or `meta.ndjson` for
   points and parquet), create-only (`If-None-Match: *`).

So a run's data object exists only when everything else of the run is stored whole;
nothing temporary is ever listed under the prefix (incomplete multipart uploads are not
objects). `--force` writes without conditions and removes the run's objects of another
format or compression.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import orjson
from anyio.abc import TaskGroup

from .. import manifest
from ..compression import CODECS, suffix
from ..config import Settings
from ..errors import OutputError
from ..layout import Places
from ..paging import each
from ..runfiles import KINDS, RunFiles, codec_for
from .failures import StoreError
from .leases import Lease, RunUpload, is_live, run_uploads, stale_uploads
from .listing import run_of_key, stored_runs
from .parts import PART_SIZE, PARTS_IN_FLIGHT, PartBuffer, Upload, size_of
from .spool import Spool
from .store import Store, refused_if_failing

#: Seconds the job's last requests (aborts, the lease's removal) may take at its end.
CLEANUP_TIMEOUT = 30.0


@dataclass
class _Run:
    files: RunFiles
    buffers: dict[str, PartBuffer]
    uploads: dict[str, Upload] = field(default_factory=dict)


class ObjectSink:
    """The sink of `--out s3://BUCKET/PREFIX/`; see the module's docstring. An async
    context manager: connected and the bucket checked as it opens, the lease taken from
    then on (`leased`) and kept while open."""

    #: Finished runs held beyond the `runs_in_flight` being fetched (`_held`), each of them
    #: committing at once (`commits_at_once`). Large, sampled under load: 2, 138-144 MB
    #: and 1.2x the directory's wall; 1, 128-133 MB but 1.26x, the writer waiting on
    #: commits more often; 4 (with 2 commits at once), ~160 MB.
    finished_held = 2
    #: Messages of lines queued for the writer at most: a write waits while the job's
    #: upload slots are busy, and each message queued meanwhile holds a batch of lines
    #: (4 MB for series of 20,000 points: 16 of them took 70 MB, which the directory's
    #: writer never queues). Four keep the writer fed between its waits.
    channel_size = 4

    def __init__(
        self, settings: Settings, *, part_size: int = PART_SIZE, places: Places | None = None
    ) -> None:
        self.store = Store(settings)
        #: --layout date: a run's keys are `<prefix>YYYY/MM/DD/<name>`.
        self.places = places if places is not None else Places(settings.layout)
        #: Where (the directories below the prefix) each run has objects.
        self._found: dict[int, set[str]] = {}
        self.loc = self.store.loc
        self.part_size = part_size
        self.create_only = not settings.force  # --force replaces archived runs on purpose
        self.format = settings.format
        self.codec = settings.compress
        self.level = settings.compress_level
        self.export_csv = settings.export_csv
        self.facts = manifest.job_facts(settings)
        self._out = settings.out
        #: This job's own directory for the CSV exports (`spool`), while open.
        self.spool: Path | None = None
        self._spool: Spool | None = None
        self.lease = Lease(self.store, settings.s3_lease)
        self._runs: dict[int, _Run] = {}
        self._slots = anyio.Semaphore(PARTS_IN_FLIGHT)
        #: Runs begun and not yet committed or aborted: each holds its files' unfinished
        #: parts (a run below the part size whole) until its commit, so `begin` waits
        #: while there are this many (large: 70 runs of 5 MB waited on slow commits). At
        #: most `runs_in_flight` of them are still being fetched: the others end without
        #: the writer, which therefore never waits for itself.
        self._held = anyio.Semaphore(settings.runs_in_flight + self.finished_held)
        #: Runs the scheduler commits at once: every run held. A commit waits on a few
        #: requests in turn (manifest, then data object), so several overlap at the store;
        #: 2 at a time, finished runs queued behind them (the writer waited to begin the
        #: next run) and the job's last runs waited for each other at its end.
        self.commits_at_once = settings.runs_in_flight + self.finished_held
        self._tasks: TaskGroup | None = None
        self._leased: anyio.Event | None = None  # set once the lease is taken (or failed)
        self._lease_failed: StoreError | None = None
        # Plain lines are copied as they are; compressing and Parquet take a thread.
        self._inline = self.format == "raw" and self.codec == "none"

    # --- the job's connection -----------------------------------------------------------

    async def __aenter__(self) -> ObjectSink:
        if self.export_csv:  # local, first: a state directory we cannot write is said early
            self._spool = Spool(self._out)
            self._spool.remove_abandoned()
            self.spool = self._spool.path
        try:
            await self.store.open(check=False)  # the bucket checked by `survey`'s listings
        except BaseException:
            self._close_spool()
            raise
        try:
            self._leased = anyio.Event()
            tasks = anyio.create_task_group()
            await tasks.__aenter__()
            self._tasks = tasks
            tasks.start_soon(self._keep_lease)
        except BaseException:
            self._close_spool()
            await self.store.close()
            raise
        return self

    async def _keep_lease(self) -> None:
        """The lease taken (while the job lists the prefix: a request less to wait for
        before the first run), then renewed until the end."""
        assert self._leased is not None
        try:
            await self.lease.renew()
        except StoreError as exc:
            self._lease_failed = exc
            return
        finally:
            self._leased.set()
        await self.lease.keep()

    async def leased(self) -> None:
        """Wait until the lease is taken (other jobs judge this one's manifests and uploads
        by it: no run begins before); raises why it could not be."""
        assert self._leased is not None, "ObjectSink used outside `async with`"
        await self._leased.wait()
        if self._lease_failed is not None:
            raise self._lease_failed

    def _close_spool(self) -> None:
        if self._spool is not None:
            spool, self._spool, self.spool = self._spool, None, None
            spool.close()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_TIMEOUT):
                await self.close()  # the uploads of unfinished runs aborted
            if self._tasks is not None:
                tasks, self._tasks = self._tasks, None
                tasks.cancel_scope.cancel()  # the lease's renewals
                await tasks.__aexit__(None, None, None)  # (outside other scopes: its own)
            with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_TIMEOUT):
                await self.lease.end()
        finally:
            self._close_spool()
            with anyio.CancelScope(shield=True):
                await self.store.close()

    async def archived(self, run_ids: Iterable[int]) -> set[int]:
        """Which of `run_ids` are archived (one listing): their data object is there (in
        any format and compression) and, with --export-csv, their CSV."""
        self._found = {}
        stored = await stored_runs(self.store, export_csv=self.export_csv, places=self._found)
        return set(run_ids) & set(stored)

    async def survey(self, run_ids: Iterable[int]) -> set[int]:
        """Which of `run_ids` are archived (`archived`); the incomplete uploads of the
        others' objects that no live job owns are aborted (a job killed mid-upload left
        them: invisible, but billed). The objects and the uploads are listed at once, and
        are the job's bucket check: what fails there is `StoreRefused` (one line, exit 2),
        before any run is fetched."""
        wanted = set(run_ids)
        uploads: list[RunUpload] = []
        stored: set[int] = set()

        async def list_uploads() -> None:
            uploads.extend(await run_uploads(self.store, run_of_key(self.loc.prefix)))

        async def list_objects() -> None:
            stored.update(await self.archived(wanted))

        listings = each(lambda listing: listing(), [list_uploads, list_objects])
        await refused_if_failing(listings)
        for key, upload_id in await stale_uploads(self.store, uploads, wanted - stored, self.lease):
            await self.store.call("abort_multipart_upload", Key=key, UploadId=upload_id)
        return stored

    # --- a run's lines ------------------------------------------------------------------

    def _name(self, run_id: int, kind: str) -> str:
        return f"{run_id}{suffix(codec_for(kind, self.codec), kind)}"

    def _key(self, run_id: int, name: str) -> str:
        """The key of the run's file `name`, in the run's directory (--layout)."""
        return self.loc.prefix + self.places.key(run_id, name)

    async def begin(self, run_id: int) -> None:
        await self.leased()
        await self._held.acquire()
        buffers = {kind: PartBuffer(self.part_size) for kind in KINDS[self.format]}
        destinations: dict[str, Any] = buffers  # file objects for the stack
        files = RunFiles(run_id, self.format, self.codec, self.level, destinations)
        self._runs[run_id] = _Run(files, buffers)

    async def write(self, run_id: int, data: bytes) -> None:
        run = self._runs[run_id]
        await self._encode(run.files.write, data)
        await self._send_parts(run_id, run)

    async def _encode(self, step: Any, *args: Any) -> None:
        if self._inline:
            step(*args)
        else:
            await anyio.to_thread.run_sync(step, *args)

    async def _send_parts(self, run_id: int, run: _Run) -> None:
        """The parts that filled up, each to its upload (the writer waits for a slot)."""
        for kind, buffer in run.buffers.items():
            while buffer.ready:
                await self._upload(run_id, run, kind).send(buffer.ready.popleft())

    def _upload(self, run_id: int, run: _Run, kind: str) -> Upload:
        if kind not in run.uploads:
            assert self._tasks is not None, "ObjectSink used outside `async with`"
            key = self._key(run_id, self._name(run_id, kind))
            claim = functools.partial(self.lease.claim, run_id)
            run.uploads[kind] = Upload(self.store, key, self._tasks, self._slots, claim)
        return run.uploads[kind]

    # --- publication --------------------------------------------------------------------

    async def commit(
        self,
        run_id: int,
        counts: Mapping[str, int] | None = None,
        summary: Mapping[str, Any] | None = None,
    ) -> str:
        """The URL of the run's first file: stored now (in the order of the module's
        docstring), or found stored whole by another job."""
        run = self._runs[run_id]
        kinds = list(run.buffers)
        csv = self._spooled(summary or {})
        try:
            await self._encode(run.files.finish)
            await self._send_parts(run_id, run)
            for upload in run.uploads.values():
                await upload.settle()
            body = await self._manifest(run_id, run, counts, summary or {}, csv)
            if await self._claim(run_id, body):
                if csv is not None:
                    await self._put_file(run_id, csv)
                for kind in kinds[:-1]:
                    await self._store(run_id, run, kind, create_only=False)
                won = await self._store(run_id, run, kinds[-1], create_only=self.create_only)
                if won and not self.create_only:
                    await self._remove_others(run_id, kinds, csv)
        finally:
            await self.abort(run_id)
            if csv is not None:
                csv.unlink(missing_ok=True)
        return f"s3://{self.loc.bucket}/{self._key(run_id, self._name(run_id, kinds[0]))}"

    def _spooled(self, summary: Mapping[str, Any]) -> Path | None:
        name = summary.get("export_file")
        if self.spool is None or not isinstance(name, str):
            return None
        return self.spool / name

    async def _manifest(
        self,
        run_id: int,
        run: _Run,
        counts: Mapping[str, int] | None,
        summary: Mapping[str, Any],
        csv: Path | None,
    ) -> bytes:
        """The run's manifest, from what was hashed and counted on the way out."""
        by_kind = run.files.counts(counts or {})
        entries = [
            manifest.file_entry(
                Path(self._name(run_id, kind)), manifest.Scan(*run.files.written(kind), found)
            )
            for kind, found in by_kind.items()
        ]
        if csv is not None:
            entries += await anyio.to_thread.run_sync(_csv_entry, csv)
        built = manifest.build(run_id, entries, self.facts, summary)
        return orjson.dumps(built, option=orjson.OPT_INDENT_2) + b"\n"

    async def _claim(self, run_id: int, body: bytes) -> bool:
        """Store the manifest, create-only: False when the run is another job's (see the
        module's docstring)."""
        key = self._key(run_id, f"{run_id}{manifest.SUFFIX}")
        meta = {"Metadata": {"harvester-job": self.lease.job}}
        if await self.store.put(key, body, create_only=self.create_only, **meta):
            return True
        found = await self.store.head(key)
        if found is None:  # removed meanwhile: try once more, create-only
            return await self.store.put(key, body, create_only=True, **meta)
        owner = found.get("Metadata", {}).get("harvester-job", "")
        if owner and await is_live(self.store, owner, self.lease.seconds):
            return False
        # (its lease checked first: a job that ended had stored its data object before)
        last = self._key(run_id, self._name(run_id, KINDS[self.format][-1]))
        if await self.store.head(last) is not None:
            return False
        return await self.store.put(key, body, create_only=False, IfMatch=found["ETag"], **meta)

    async def _store(self, run_id: int, run: _Run, kind: str, *, create_only: bool) -> bool:
        """Make `kind`'s object of what was written; False when it exists (create_only)."""
        rest = run.buffers[kind].rest()
        upload = run.uploads.get(kind)
        if upload is None:
            key = self._key(run_id, self._name(run_id, kind))
            return await self.store.put(key, rest, create_only=create_only)
        if size_of(rest):
            await upload.send(rest)
        return await upload.complete(create_only=create_only)

    async def _put_file(self, run_id: int, path: Path) -> None:
        """A local file (the CSV export) as the object of the same name, in parts."""
        key = self._key(run_id, path.name)
        try:
            with path.open("rb") as fh:
                first = await anyio.to_thread.run_sync(fh.read, self.part_size)
                nxt = await anyio.to_thread.run_sync(fh.read, self.part_size)
                if not nxt:
                    await self.store.put(key, first, create_only=False)
                    return
                assert self._tasks is not None
                claim = functools.partial(self.lease.claim, run_id)
                upload = Upload(self.store, key, self._tasks, self._slots, claim)
                try:
                    while first:
                        await upload.send(io.BytesIO(first))
                        first, nxt = nxt, await anyio.to_thread.run_sync(fh.read, self.part_size)
                    await upload.complete(create_only=False)
                finally:
                    await upload.abort()
        except OSError as exc:
            raise OutputError(f"cannot read the export {path}: {exc.strerror or exc}") from exc

    async def _remove_others(self, run_id: int, kinds: list[str], csv: Path | None) -> None:
        """--force with another format, compression or layout: one run is never archived
        twice (its objects where it was found go too)."""
        names = {f"{run_id}{suffix(codec, kind)}" for kind in KINDS["raw"] + KINDS["points"]
                 + KINDS["parquet"] for codec in CODECS}  # fmt: skip
        names |= {f"{run_id}.csv", f"{run_id}.csv.gz", f"{run_id}{manifest.SUFFIX}"}
        here = self.places.relative(run_id)
        kept = {self._key(run_id, self._name(run_id, kind)) for kind in kinds}
        kept.add(self._key(run_id, f"{run_id}{manifest.SUFFIX}"))
        if csv is not None:
            kept.add(self._key(run_id, csv.name))
        for directory in {here, *self._found.get(run_id, ())}:
            for name in sorted(names):
                key = self.loc.prefix + (f"{directory}/{name}" if directory else name)
                if key not in kept:
                    await self.store.call("delete_object", Key=key)

    async def abort(self, run_id: int) -> None:
        run = self._runs.pop(run_id, None)
        if run is None:
            return
        self._held.release()
        run.files.discard()
        for upload in run.uploads.values():
            await upload.abort()
        await self.lease.release(run_id)

    async def close(self) -> None:
        for run_id in list(self._runs):
            await self.abort(run_id)


def _csv_entry(csv: Path) -> list[dict[str, Any]]:
    """The spooled export's manifest entry (none when another job took it meanwhile)."""
    return [manifest.file_entry(csv)] if csv.exists() else []
