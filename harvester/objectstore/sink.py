"""`ObjectSink`: each run's files as objects under the prefix, named as in `--out DIR`, in
every `--format` and `--compress`, with the manifest; the run's data object last.

A run's lines go through the same write stack as a directory's (`runfiles`), into a
`PartBuffer` per file instead of a temporary file: a small file is one PUT, a larger one
a multipart upload whose parts go out from tasks of their own as they fill (`parts`).
When the run is whole, its manifest is built from what was hashed and counted on the way
out, and `publish` stores the run's objects in the order that makes its data object the
last one (the manifest first, as the run's claim). Nothing temporary is ever listed under
the prefix (incomplete multipart uploads are not objects).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import orjson
from anyio.abc import TaskGroup

from .. import manifest
from ..config import Settings
from ..layout import Places
from ..paging import each
from ..records import Chunk
from ..runfiles import KINDS, RunFiles
from .failures import StoreError
from .held import Room
from .leases import Lease, RunUpload, run_uploads, stale_uploads, torn_once_settled
from .listing import run_of_key, stored_runs
from .parts import PART_SIZE, PARTS_IN_FLIGHT, PartBuffer, PartHashing, Upload
from .publish import KeptExport, Names, Publisher, RunObjects
from .spool import Spool
from .store import Store, refused_if_failing

#: Seconds the job's last requests (aborts, the lease's removal) may take at its end.
CLEANUP_TIMEOUT = 30.0
#: Seconds left to every request once the job is cut (`hurry_on`): a store gone away then
#: holds the job no longer; its stale uploads and lease are the next job's to abort.
CUT_TIMEOUT = 2.0


@dataclass
class _Run:
    files: RunFiles
    objects: RunObjects


class ObjectSink:
    """The sink of `--out s3://BUCKET/PREFIX/`; see the module's docstring. An async
    context manager: connected and the bucket checked as it opens, the lease taken from
    then on (`leased`) and kept while open."""

    #: Finished runs always held beyond the `runs_in_flight` being fetched (`_room`), each
    #: of them committing at once (`commits_at_once`). Large, sampled under load: 2,
    #: 138-144 MB and 1.2x the directory's wall; 1, 128-133 MB but 1.26x, the writer
    #: waiting on commits more often; 4 (with 2 commits at once), ~160 MB.
    finished_held = 2
    #: ... and at most this many, while that many runs as large as the largest held yet
    #: fit in `held_bytes` (`held`): medium's 2.5 MB runs then wait less on commits;
    #: large's 5 MB ones are held as before.
    most_finished = 6
    held_bytes = 28 << 20
    #: Messages of lines queued for the writer at most: a write waits while the job's
    #: upload slots are busy, and each message queued meanwhile holds a batch of lines
    #: (4 MB for series of 20,000 points: 16 of them took 70 MB, which the directory's
    #: writer never queues). Four keep the writer fed between its waits.
    channel_size = 4

    def __init__(
        self, settings: Settings, *, part_size: int = PART_SIZE, places: Places | None = None
    ) -> None:
        self.store = Store(settings)
        self.loc = self.store.loc
        places = places if places is not None else Places(settings.layout)
        self.names = Names(self.loc, places, settings.compress)
        #: Where (the directories below the prefix) each run has objects.
        self._found: dict[int, set[str]] = {}
        #: Runs a dead `--force` job left half replaced (`survey`), the publisher's too.
        self._torn: dict[int, list[tuple[str, str]]] = {}
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
        #: while there are too many (`held`; large: 70 runs of 5 MB waited on slow
        #: commits). At most `runs_in_flight` of them are still being fetched: the others
        #: end without the writer, which therefore never waits for itself.
        fetched = settings.runs_in_flight
        self._room = Room(fetched + self.finished_held, fetched + self.most_finished,
                          self.held_bytes)  # fmt: skip
        #: Runs the scheduler commits at once: every run held. A commit waits on a few
        #: requests in turn (manifest, then data object), so several overlap at the store;
        #: 2 at a time, finished runs queued behind them (the writer waited to begin the
        #: next run) and the job's last runs waited for each other at its end.
        self.commits_at_once = self._room.most
        self._tasks: TaskGroup | None = None
        #: The lease's renewals, ended before its end (made as the sink opens: a cancel
        #: scope needs the event loop).
        self._keeping: anyio.CancelScope | None = None
        self._publisher: Publisher | None = None  # once open (it sends from `_tasks`)
        self._made: anyio.Event | None = None  # set once the lease's upload is made (or failed)
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
            self._made, self._leased = anyio.Event(), anyio.Event()
            self._keeping = anyio.CancelScope()
            tasks = anyio.create_task_group()
            await tasks.__aenter__()
            self._tasks = tasks
            self._publisher = Publisher(self.store, self.lease, self.names, self.format,
                                        self.create_only, self.part_size, tasks, self._slots,
                                        self._found, self._torn)  # fmt: skip
            tasks.start_soon(self._keep_lease)
        except BaseException:
            self._close_spool()
            await self.store.close()
            raise
        return self

    async def _keep_lease(self) -> None:
        """The lease made, then taken (its first beat), while the job lists the prefix,
        then renewed until the end."""
        assert self._made is not None and self._leased is not None
        assert self._keeping is not None
        with self._keeping:
            try:
                await self.lease.make()
                self._made.set()
                await self.lease.renew()
            except StoreError as exc:
                self._lease_failed = exc
                return
            finally:
                self._made.set()
                self._leased.set()
            await self.lease.keep()

    def hurry_on(self, cut: anyio.Event) -> None:
        """Once `cut` is set (a job's second stop signal), every request of the job ends
        within `CUT_TIMEOUT` seconds, answered or not: commits under way, the aborts of
        the unfinished runs, the lease's end."""
        assert self._tasks is not None, "ObjectSink used outside `async with`"
        self._tasks.start_soon(self._hurry_when, cut)

    async def _hurry_when(self, cut: anyio.Event) -> None:
        await cut.wait()
        self.store.hurry(CUT_TIMEOUT)

    async def leased(self) -> None:
        """Wait until the lease is taken (other jobs judge this one's manifests and uploads
        by it: no run begins before); raises why it could not be."""
        assert self._leased is not None, "ObjectSink used outside `async with`"
        await self._leased.wait()
        self._raise_if_lease_failed()

    async def lease_made(self) -> None:
        """Wait until the lease's upload is made, the request that a store refusing the
        job's leases refuses (its first beat, a round trip later, `leased` awaits before
        the first run is written, not before the first is fetched); raises why not."""
        assert self._made is not None, "ObjectSink used outside `async with`"
        await self._made.wait()
        self._raise_if_lease_failed()

    def _raise_if_lease_failed(self) -> None:
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
            if self._keeping is not None:
                self._keeping.cancel()  # no renewal after the lease's end
            with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_TIMEOUT):
                await self.lease.end()
            if self._tasks is not None:  # (`hurry_on` watched until here)
                tasks, self._tasks = self._tasks, None
                tasks.cancel_scope.cancel()
                await tasks.__aexit__(None, None, None)  # (outside other scopes: its own)
        finally:
            self._close_spool()
            with anyio.CancelScope(shield=True):
                await self.store.close()

    async def archived(self, run_ids: Iterable[int]) -> set[int]:
        """Which of `run_ids` are archived (one listing): their data object is there (in
        any format and compression) and, with --export-csv, their CSV."""
        self._found.clear()  # (the publisher's too)
        stored = await stored_runs(self.store, export_csv=self.export_csv, places=self._found)
        return set(run_ids) & set(stored)

    async def survey(self, run_ids: Iterable[int], stop: anyio.Event | None = None) -> set[int]:
        """Which of `run_ids` are archived (`archived`); the incomplete uploads of all their
        objects that no live job owns are aborted (a job killed mid-upload left
        them: invisible, but billed). The objects and the uploads are listed at once, and
        are the job's bucket check: what fails there is `StoreRefused` (one line, exit 2),
        before any run is fetched. `stop` set ends its wait for live jobs' claims
        (`leases.torn_once_settled`)."""
        wanted = set(run_ids)
        uploads: list[RunUpload] = []
        stored: set[int] = set()
        others = False  # another job's lease or claim listed

        async def list_uploads() -> None:
            nonlocal others
            found, others = await run_uploads(self.store, run_of_key(self.loc.prefix), self.lease)
            uploads.extend(found)

        async def list_objects() -> None:
            stored.update(await self.archived(wanted))

        listings = each(lambda listing: listing(), [list_uploads, list_objects])
        await refused_if_failing(listings)
        # The archived runs' too: a job killed mid-upload while a live job wrote the run
        # left an upload no later job would otherwise abort.
        stale = await stale_uploads(self.store, uploads, wanted, self.lease, others)
        for key, upload_id in stale:
            await self.store.call("abort_multipart_upload", Key=key, UploadId=upload_id)
        self._torn.clear()
        if others:  # (a dead job's claims are listed among the others')
            self._torn.update(await torn_once_settled(self.store, self.lease, wanted, stop))
        return stored - set(self._torn)  # their data object is not their manifest's

    # --- a run's lines ------------------------------------------------------------------

    async def begin(self, run_id: int) -> None:
        await self.leased()
        await self._room.take()
        buffers = {kind: PartBuffer(self.part_size) for kind in KINDS[self.format]}
        destinations: dict[str, Any] = buffers  # file objects for the stack
        files = RunFiles(
            run_id, self.format, self.codec, self.level, destinations, hashing=PartHashing
        )
        self._runs[run_id] = _Run(files, RunObjects(buffers))

    async def write(self, run_id: int, data: Chunk) -> None:
        run = self._runs[run_id]
        await self._encode(run.files.write, data)
        await self._send_parts(run_id, run)

    async def _encode(self, step: Any, *args: Any) -> None:
        if self._inline:
            step(*args)
        else:
            await anyio.to_thread.run_sync(step, *args)

    async def _send_parts(self, run_id: int, run: _Run) -> None:
        """The parts that filled up, each sealed and to its upload (the writer waits for
        a slot)."""
        for kind, buffer in run.objects.buffers.items():
            while buffer.ready:
                part = buffer.ready.popleft()
                checksums = await buffer.seal(part)
                await self._upload(run_id, run, kind).send(part, checksums)

    def _upload(self, run_id: int, run: _Run, kind: str) -> Upload:
        uploads = run.objects.uploads
        if kind not in uploads:
            assert self._publisher is not None, "ObjectSink used outside `async with`"
            uploads[kind] = self._publisher.upload(run_id, self.names.kind_key(run_id, kind))
        return uploads[kind]

    # --- publication --------------------------------------------------------------------

    async def commit(
        self,
        run_id: int,
        counts: Mapping[str, int] | None = None,
        summary: Mapping[str, Any] | None = None,
    ) -> str:
        """The URL of the run's first file: stored now (`publish`), or found stored whole
        by another job."""
        run = self._runs[run_id]
        first = next(iter(run.objects.buffers))
        csv = self._spooled(summary or {})
        try:
            await self._encode(run.files.finish)
            await self._send_parts(run_id, run)
            await run.objects.seal_rests()
            self._room.note(run.objects.held())
            for upload in run.objects.uploads.values():
                await upload.settle()
            assert self._publisher is not None
            kept = None  # --force without --export-csv: an earlier job's export stays
            if csv is None and not self.create_only:
                kept = await self._publisher.kept_export(run_id)
            body = await self._manifest(run_id, run, (counts, summary or {}), csv, kept)
            await self._publisher.publish(run_id, run.objects, body, csv, kept)
        finally:
            await self.abort(run_id)
            if csv is not None:
                csv.unlink(missing_ok=True)
        return f"s3://{self.loc.bucket}/{self.names.kind_key(run_id, first)}"

    def _spooled(self, summary: Mapping[str, Any]) -> Path | None:
        name = summary.get("export_file")
        if self.spool is None or not isinstance(name, str):
            return None
        return self.spool / name

    async def _manifest(
        self,
        run_id: int,
        run: _Run,
        written: tuple[Mapping[str, int] | None, Mapping[str, Any]],
        csv: Path | None,
        kept: KeptExport | None,
    ) -> bytes:
        """The run's manifest, from what was hashed and counted on the way out (`written`:
        the records of each type, the summary), naming its export (`csv`, or `kept`)."""
        counts, summary = written
        by_kind = run.files.counts(counts or {})
        entries = [
            manifest.file_entry(
                Path(self.names.name(run_id, kind)), manifest.Scan(*run.files.written(kind), found)
            )
            for kind, found in by_kind.items()
        ]
        if csv is not None:
            entries += await anyio.to_thread.run_sync(_csv_entry, csv)
        elif kept is not None:
            entries.append(kept.entry)
        built = manifest.build(run_id, entries, self.facts, summary)
        return orjson.dumps(built, option=orjson.OPT_INDENT_2) + b"\n"

    async def abort(self, run_id: int) -> None:
        run = self._runs.pop(run_id, None)
        if run is None:
            return
        self._room.give()
        run.files.discard()
        for upload in run.objects.uploads.values():
            await upload.abort()
        await self.lease.release(run_id)

    async def close(self) -> None:
        for run_id in list(self._runs):
            await self.abort(run_id)


def _csv_entry(csv: Path) -> list[dict[str, Any]]:
    """The spooled export's manifest entry (none when another job took it meanwhile)."""
    return [manifest.file_entry(csv)] if csv.exists() else []
