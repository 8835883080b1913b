"""A file's bytes on their way to the store, in parts: `PartBuffer` cuts what the encoder
writes into parts of exactly `PART_SIZE`, each hashed as it is sealed (`seal`); `Upload`
sends them as a multipart upload from tasks of their own, at most `PARTS_IN_FLIGHT`
parts at once for the whole job, so the writer goes on while a part travels and memory
holds a bounded number of parts."""

from __future__ import annotations

import hashlib
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, BinaryIO, cast

import anyio
from anyio.abc import TaskGroup

from ..compression import HashingWriter
from .body import PartBody
from .failures import StoreError
from .store import PRECONDITION, Store, crc32_params, off_the_loop, sha256_params

#: A multipart upload's parts each carry their CRC32 (`PartBuffer.seal`, `checksum`): S3
#: wants the algorithm named as the upload is created ("Checksum Type mismatch ...
#: expected checksum Type: null" otherwise), and each part's checksum in the completion.
PART_CHECKSUM = {"ChecksumAlgorithm": "CRC32"}
PART_SIZE = 8 << 20  # S3's minimum part is 5 MiB; 8 MiB is what the AWS CLI uses
#: Parts uploading at once, for the whole job: the writer waits for a slot, so memory
#: holds at most this many parts in flight, one waiting, and each file's unfinished part.
PARTS_IN_FLIGHT = 2


class PartBuffer:
    """A byte destination (a file for the encoder stack) that cuts what is written into
    parts of exactly `part_size` bytes (the last one shorter).

    A part is a `bytearray` of its own, sent as it is (`PartBody`): its bytes are held
    once, and never written again once cut.

    The file's sha256 (the manifest's) is taken a part at a time as each is sealed, in one
    pass with the part's checksum and from a worker thread (`seal`), not a write at a time
    on the event loop (a plain raw run's writes are made there: ~0.25 s of its CPU on the
    large bench's 411 MB)."""

    def __init__(self, part_size: int = PART_SIZE) -> None:
        self.part_size = part_size
        self.sha = hashlib.sha256()
        self.ready: deque[bytearray] = deque()
        self._part = bytearray()

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        written = view.nbytes
        while view:
            room = self.part_size - len(self._part)
            self._part += view[:room]
            view = view[room:]
            if len(self._part) == self.part_size:
                self.ready.append(self.rest())
        return written

    def held(self) -> int:
        """Bytes written and not yet taken to be sent."""
        return len(self._part) + sum(len(part) for part in self.ready)

    def flush(self) -> None:
        """Nothing to flush: parts go out when `Upload.send` takes them."""

    def rest(self) -> bytearray:
        """What is not yet a part (the last part, at the end)."""
        rest, self._part = self._part, bytearray()
        return rest

    async def seal(self, part: bytes | bytearray, *, whole: bool = False) -> dict[str, str]:
        """`part`'s bytes into the file's sha256 (parts are sealed in the order they were
        cut, each awaited before the next), and its checksum as S3's parameters, which the
        store checks the bytes it receives against: the part's CRC32, or for a file `whole`
        in this one part (one PUT) the file's sha256 itself, the manifest's (one pass over
        the bytes, not two)."""
        with memoryview(part) as view:
            if whole:
                await off_the_loop(self.sha.update, view)
                return sha256_params(self.sha.digest())
            return crc32_params(await off_the_loop(self._digest, view))

    def _digest(self, view: memoryview) -> int:
        self.sha.update(view)
        return zlib.crc32(view)


class PartHashing(HashingWriter):
    """The write stack's `HashingWriter` over a `PartBuffer`: it counts the bytes, whose
    sha256 is the buffer's, taken as each part is sealed."""

    def __init__(self, raw: BinaryIO) -> None:
        buffer = cast(PartBuffer, raw)
        self.raw = raw
        self.sha = buffer.sha
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        return self.raw.write(data)


class Upload:
    """One object's multipart upload; created by the first part, completed last."""

    def __init__(
        self,
        store: Store,
        key: str,
        tasks: TaskGroup,
        slots: anyio.Semaphore,
        before_create: Callable[[], Awaitable[None]],
    ) -> None:
        self.store = store
        self.key = key
        self.upload_id: str | None = None
        self._tasks = tasks
        self._slots = slots
        self._before_create = before_create  # the job's lease claims the run first
        self._parts: list[dict[str, Any]] = []
        self._sent: list[anyio.Event] = []
        self._error: StoreError | None = None

    async def send(self, part: bytes | bytearray, checksums: dict[str, str]) -> None:
        """Start uploading `part` (`checksums`: its checksum parameters) once a slot is
        free (the writer waits for it)."""
        self._raise_if_failed()
        if self.upload_id is None:
            await self._before_create()
            answer = await self.store.call("create_multipart_upload", Key=self.key, **PART_CHECKSUM)
            self.upload_id = answer["UploadId"]
        await self._slots.acquire()
        done = anyio.Event()
        self._sent.append(done)
        self._tasks.start_soon(self._upload_part, len(self._sent), part, checksums, done)

    async def _upload_part(
        self,
        number: int,
        part: bytes | bytearray,
        checksums: dict[str, str],
        done: anyio.Event,
    ) -> None:
        try:
            answer = await self.store.call(
                "upload_part",
                Key=self.key,
                UploadId=self.upload_id,
                PartNumber=number,
                Body=PartBody(part),
                **checksums,
            )
            crc32 = {"ChecksumCRC32": checksums["ChecksumCRC32"]}
            self._parts.append({"ETag": answer["ETag"], "PartNumber": number, **crc32})
        except StoreError as exc:  # said by the writer's next send, or by complete
            self._error = exc
        finally:
            self._slots.release()
            done.set()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    async def settle(self) -> None:
        """Wait for every part sent; a part that failed for good fails the run here."""
        for done in self._sent:
            await done.wait()
        self._raise_if_failed()

    async def complete(self, *, create_only: bool) -> bool:
        """Make the object of the parts sent; False when `create_only` and it exists."""
        await self.settle()
        condition = {"IfNoneMatch": "*"} if create_only else {}
        parts = sorted(self._parts, key=lambda part: int(part["PartNumber"]))
        try:
            await self.store.call(
                "complete_multipart_upload",
                Key=self.key,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": parts},
                **condition,
            )
        except StoreError as exc:
            if exc.code not in PRECONDITION:
                raise
            return False  # the upload stays, for `abort`
        self.upload_id = None
        return True

    async def abort(self) -> None:
        """Best effort, once its parts are settled: what fails here the lifecycle rule
        removes (README)."""
        for done in self._sent:
            await done.wait()
        if self.upload_id is not None:
            upload_id, self.upload_id = self.upload_id, None
            try:
                await self.store.call("abort_multipart_upload", Key=self.key, UploadId=upload_id)
            except StoreError:
                pass
