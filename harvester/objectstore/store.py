"""The S3 client of one job, on one bucket: aiobotocore (botocore's credential chain,
signing and standard retry mode, on aiohttp), every failure one `StoreError` line."""

from __future__ import annotations

import base64
import gc
import math
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import anyio

from ..config import Settings
from ..errors import ConfigError
from .body import PartBody
from .early import botocore
from .failures import StoreCut, StoreError, StoreRefused, failing_as_output_error
from .location import Location, endpoint_url, is_plain_http, parse_location

T = TypeVar("T")

#: The store's answer when a conditional write finds the object there (or changed).
PRECONDITION = ("PreconditionFailed", "412")
#: The code of a request cut by `Store.hurry` (no answer came in time).
CUT = "Cut"
#: Bodies from this size are checksummed by a worker thread (zlib lets go of the GIL), so
#: the event loop goes on fetching meanwhile.
THREADED_CHECKSUM = 256 << 10
#: Whether a store froze what botocore built (`Store.open`): once a process. The worker
#: opens a store each cycle, and each freeze kept the last cycle's closed client and
#: session (cyclic garbage, ~7 MB) from the collector for good: 1.5 GB in 200 cycles.
_frozen = False


async def checksum(body: bytes | bytearray) -> dict[str, str]:
    """The body's CRC32 as S3's checksum parameters. Given them, botocore sends them as
    they are, rather than reading the body through once more on the event loop (1 MB
    copies, then zlib: ~2 ms of the loop for 5 MB, 3x zlib's own time); the store still
    checks the bytes it receives against it."""
    with memoryview(body) as view:
        return crc32_params(await off_the_loop(zlib.crc32, view))


async def off_the_loop(digest: Callable[[memoryview], T], view: memoryview) -> T:
    """`digest(view)`, from a worker thread for a large `view` (zlib and hashlib let go of
    the GIL), so the event loop goes on fetching meanwhile."""
    if view.nbytes < THREADED_CHECKSUM:
        return digest(view)
    return await anyio.to_thread.run_sync(digest, view)


def crc32_params(crc: int) -> dict[str, str]:
    """A CRC32 as S3's checksum parameters."""
    value = base64.b64encode(crc.to_bytes(4, "big")).decode()
    return {"ChecksumAlgorithm": "CRC32", "ChecksumCRC32": value}


def sha256_params(digest: bytes) -> dict[str, str]:
    """A SHA-256 digest as S3's checksum parameters."""
    return {"ChecksumAlgorithm": "SHA256", "ChecksumSHA256": base64.b64encode(digest).decode()}


async def refused_if_failing(first: Awaitable[Any]) -> Any:
    """Await a job's first requests: what fails there is the store refusing the job
    (`StoreRefused`: a missing bucket, refused credentials, an unreachable endpoint)."""
    try:
        return await first
    except StoreCut:
        raise  # the job was stopped meanwhile: nothing was refused
    except StoreError as exc:
        raise StoreRefused(str(exc)) from None


def server_time(answer: dict[str, Any]) -> datetime | None:
    """The store's clock at `answer` (its Date header): leases are judged by it, not ours."""
    date = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    return parsedate_to_datetime(date) if date else None


class Answer(dict[str, Any]):
    """A store's answer to `op`, as botocore parsed it (the items of its lists too): a
    part it lacks is a `StoreError` naming it, not a `KeyError` (it was an internal
    error): what a store that is no S3 store, or a garbled answer, comes to (an empty 200
    to a CreateMultipartUpload parses as an answer without its `UploadId`)."""

    def __init__(self, doc: dict[str, Any], store: str, op: str) -> None:
        super().__init__(doc)
        self.store, self.op = store, op

    def __missing__(self, key: str) -> Any:
        raise StoreError(
            f"{self.store} answered {self.op} without its {key}: is it an S3 store? "
            "check --s3-endpoint-url",
            "",
        )


def answer_of(doc: Any, store: str, op: str) -> Any:
    """`doc`, botocore's answer to `op`, and the dicts of its lists, as `Answer`s."""
    if not isinstance(doc, dict):
        return doc
    items = {
        key: [Answer(i, store, op) if isinstance(i, dict) else i for i in value]
        if isinstance(value, list)
        else value
        for key, value in doc.items()
    }
    return Answer(items, store, op)


class Store:
    """Connects on `open()` and checks the bucket (a wrong bucket, endpoint or credential
    is one line before any run is fetched); `call`, `pages` and `put` on the bucket."""

    def __init__(self, settings: Settings) -> None:
        self.loc: Location = parse_location(settings.out)
        self.endpoint = endpoint_url(settings)
        self._max_attempts = settings.max_attempts
        self._timeouts = (settings.connect_timeout, settings.read_timeout)
        self._client: Any = None
        self._client_cm: Any = None
        #: Once the job is cut (`hurry`), when every request must have ended (the event
        #: loop's clock); the requests under way, each in its own cancel scope.
        self._deadline = math.inf
        self._calls: set[anyio.CancelScope] = set()

    async def open(self, *, check: bool = True) -> None:
        """Connect; `check`: the bucket checked here (`HeadBucket`), else by the caller's
        first listing (`ObjectSink.survey`: a request less before the first run)."""
        try:
            boto = botocore()  # made on a thread as the job started, if it was (`early`)
            from .http import NoRedirectSession, check_hook
        except ImportError:
            raise ConfigError(
                "--out s3:// needs the s3 extra: pip install 'k6-harvester[s3]'"
            ) from None
        check_hook()
        # total_max_attempts counts every try: --max-attempts as for the API. A body's
        # integrity is its checksum (ours: `checksum`, `PartBuffer.seal`), which botocore
        # sends and the store checks; a SHA-256 of it in the signature would be a second
        # pass over every byte (botocore leaves it out over https, not over http, loopback
        # included). A user agent of our own is sent as it is: botocore's own is built
        # again twice a request (each part sanitized character by character), a sixth of a
        # request's CPU.
        retries = {"mode": "standard", "total_max_attempts": self._max_attempts}
        s3 = {"payload_signing_enabled": False}
        # The API's timeouts, not botocore's (60 s to connect): a store that stops
        # answering fails the job as soon as an API that did would.
        config = boto.config(
            retries=retries,
            s3=s3,
            user_agent=boto.user_agent,
            connect_timeout=self._timeouts[0],
            read_timeout=self._timeouts[1],
            http_session_cls=NoRedirectSession,  # (a redirect could send our credentials elsewhere)
        )
        # Over http there is no TLS to verify: without `verify=False` aiobotocore still
        # loads the CA bundle into a context at the first request (~30 ms of CPU, awaited).
        plain = {"verify": False} if is_plain_http(self.endpoint) else {}
        self._client_cm = boto.session.create_client(
            "s3", endpoint_url=self.endpoint, config=config, **plain
        )
        self._client = await self._client_cm.__aenter__()
        # botocore asks for "Expect: 100-continue" on every body that is a file (each data
        # object and part): the body then waits for the store's go-ahead, a round trip more
        # in each commit, which spares only a body the store refuses (a create-only race
        # lost: a run below the part size, sent for nothing). Ours go at once.
        self._client.meta.events.unregister("before-call.s3", boto.expect_header)
        # botocore's modules and the S3 model (~55,000 objects) live as long as the
        # process: out of the collector's sight, as start-up's are (`cli.run_async`), and
        # left to the process's end rather than torn down one by one (~0.1 s at exit).
        global _frozen
        if not _frozen:
            gc.freeze()
            _frozen = True
        if check:
            try:
                await refused_if_failing(self.call("head_bucket"))
            except BaseException:
                await self.close()
                raise

    async def close(self) -> None:
        if self._client_cm is not None:
            cm, self._client_cm = self._client_cm, None
            await cm.__aexit__(None, None, None)

    async def call(self, op: str, **kwargs: Any) -> Any:
        """`op` on the bucket (`Bucket` is added); botocore's errors as `StoreError`, and
        so is a request that `hurry` cut. A body the store refused as damaged on the way
        (`BadDigest`: not what its checksum says) is sent again, up to --max-attempts
        tries: botocore's standard retries leave that code out (its legacy mode retried
        it for S3), and the body, held whole, is sent from its start again."""
        attempt = 1
        while True:
            try:
                request = getattr(self._client, op)(Bucket=self.loc.bucket, **kwargs)
                return answer_of(await self._bounded(request), self.name, op)
            except StoreError as exc:
                if exc.code != "BadDigest" or attempt >= self._max_attempts:
                    raise
            attempt += 1

    async def _bounded(self, request: Awaitable[Any]) -> Any:
        """`request` awaited until `hurry`'s deadline, if one comes: then it ends as
        `StoreCut`, and so does one that failed unanswered (a connection torn down) past
        the deadline. A store's answer that is an error stays a `StoreError`."""
        with anyio.CancelScope(deadline=self._deadline) as scope:
            self._calls.add(scope)
            try:
                with failing_as_output_error(self.loc, self.endpoint):
                    return await request
            except StoreError as exc:
                if exc.code or anyio.current_time() < self._deadline:
                    raise
            finally:
                self._calls.discard(scope)
        raise StoreCut(
            f"{self.name} did not answer before the job was "
            "stopped: what it did not store is harvested again by the next job",
            CUT,
        )

    @property
    def name(self) -> str:
        """The store as messages name it."""
        return f"the S3 store at {self.endpoint or 'AWS'}"

    def hurry(self, seconds: float) -> None:
        """Every request, under way or to come, ends within `seconds` (a job cut by a
        second stop signal: a store that went away must not hold it for botocore's
        timeouts and retries; what is left, the next job aborts)."""
        self._deadline = min(self._deadline, anyio.current_time() + seconds)
        for scope in self._calls:
            scope.deadline = min(scope.deadline, self._deadline)

    async def pages(self, op: str, **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
        """The pages of a listing under the prefix (`Prefix` defaults to the archive's)."""
        paginator = self._client.get_paginator(op)
        kwargs.setdefault("Prefix", self.loc.prefix)
        listing = aiter(paginator.paginate(Bucket=self.loc.bucket, **kwargs))
        while (page := await self._bounded(anext(listing, None))) is not None:
            yield answer_of(
                page, self.name, op
            )  # (each page's request bounded, not the caller's work between them)

    async def put(
        self,
        key: str,
        body: bytes | bytearray,
        *,
        create_only: bool,
        checksums: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> bool:
        """PUT `body` at `key`; False when `create_only` and the object exists already.
        `checksums`: the body's checksum parameters, when taken already (`PartBuffer.seal`),
        else its CRC32's."""
        condition = {"IfNoneMatch": "*"} if create_only else {}
        kwargs |= checksums or await checksum(body)
        try:
            await self.call("put_object", Key=key, Body=PartBody(body), **condition, **kwargs)
        except StoreError as exc:
            if exc.code in PRECONDITION:
                return False
            raise
        return True

    async def head(self, key: str) -> dict[str, Any] | None:
        """The object's metadata, None when there is none."""
        try:
            answer: dict[str, Any] = await self.call("head_object", Key=key)
        except StoreError as exc:
            if exc.code in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return answer
