"""`--out s3://BUCKET/PREFIX/`: each run as one object, visible only whole, never replaced.

A run's lines are buffered up to `PART_SIZE`; a small run is one PUT, a larger one a
multipart upload whose parts go out as they fill (memory stays at about one part per
run in flight) and which is completed last. Both are create-only (`If-None-Match: *`):
when the object exists already another job published the run whole, and this one counts
it as done. The client is aiobotocore (botocore's credential chain and signing on
aiohttp, our HTTP stack); its standard retry mode retries 5xx and SlowDown.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .config import Settings, is_loopback
from .errors import ConfigError, HarvesterError, OutputError
from .layout import Places

PART_SIZE = 8 << 20  # S3's minimum part is 5 MiB; 8 MiB is what the AWS CLI uses
#: A run's key below the prefix, in either --layout (`5.ndjson`, `2026/01/31/5.ndjson`).
RUN_KEY = re.compile(r"(?:[0-9]{4}/[0-9]{2}/[0-9]{2}/|undated/)?([0-9]+)\.ndjson")


class StoreRefused(HarvesterError):
    """The store refused or could not be reached before any run began: a missing bucket,
    rejected credentials, a wrong endpoint. Bad input: exit 2."""

    exit_code = 2


@dataclass(frozen=True)
class Location:
    bucket: str
    prefix: str  # "" or ends with "/"


def is_s3(out: str) -> bool:
    return out.lower().startswith("s3://")


def parse_location(out: str) -> Location:
    parts = urlsplit(out)
    if not parts.netloc:
        raise ConfigError(f"--out {out!r} names no bucket; use s3://BUCKET/PREFIX/")
    prefix = parts.path.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return Location(parts.netloc, prefix)


def default_state_path(out: str) -> Path:
    """$XDG_STATE_HOME/harvester/<bucket>-<prefix>.sqlite (its directory created): the
    state stays local, the objects are the truth."""
    loc = parse_location(out)
    base = Path(os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"))
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{loc.bucket}-{loc.prefix}".rstrip("/-"))
    path = base / "harvester" / f"{name}.sqlite"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {path.parent} for the state: {exc.strerror}") from None
    return path


def endpoint_url(settings: Settings) -> str | None:
    """--s3-endpoint-url, else AWS_ENDPOINT_URL (botocore reads it too, but we check it)."""
    url = settings.s3_endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"S3 endpoint {url!r} is not an http(s) URL")
    if parts.scheme == "http" and not settings.allow_insecure and not is_loopback(parts.hostname):
        raise ConfigError(
            f"refusing to send S3 credentials in clear text to {parts.hostname}: use https, "
            "or pass --allow-insecure if you really mean it"
        )
    return url


def _client_error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def describe_failure(exc: BaseException, loc: Location, endpoint: str | None) -> str:
    """One line for an S3 failure, with no credential in it."""
    code = _client_error_code(exc)
    where = f"s3://{loc.bucket}"
    if code in ("NoSuchBucket", "404"):
        return f"bucket {loc.bucket} does not exist (at {endpoint or 'AWS'}); create it first"
    if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return (
            f"access to {where} denied ({code}): check the AWS credentials "
            "(AWS_ACCESS_KEY_ID/AWS_PROFILE) and the bucket policy"
        )
    name = type(exc).__name__
    if name == "NoCredentialsError":
        return "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, " + (
            "or AWS_PROFILE"
        )
    if name in ("EndpointConnectionError", "ConnectTimeoutError"):
        return f"cannot reach the S3 endpoint {endpoint or 'of AWS'}: check --s3-endpoint-url"
    return f"S3 request on {where} failed: {code or name}"


@contextlib.contextmanager
def failing_as_output_error(loc: Location, endpoint: str | None) -> Iterator[None]:
    """botocore's errors as one `OutputError` line (they never carry the secret key)."""
    try:
        yield
    except Exception as exc:
        if not type(exc).__module__.startswith(("botocore", "aiobotocore")):
            raise
        raise OutputError(describe_failure(exc, loc, endpoint)) from None


@dataclass
class _Upload:
    buffer: bytearray = field(default_factory=bytearray)
    upload_id: str | None = None
    parts: list[dict[str, Any]] = field(default_factory=list)


class ObjectSink:
    """One object `<prefix><run_id>.ndjson` per run; see the module's docstring."""

    def __init__(
        self, settings: Settings, *, part_size: int = PART_SIZE, places: Places | None = None
    ) -> None:
        self.loc = parse_location(settings.out)
        #: --layout date: a run's key is `<prefix>YYYY/MM/DD/<id>.ndjson`.
        self.places = places if places is not None else Places(settings.layout)
        self.endpoint = endpoint_url(settings)
        self.part_size = part_size
        self._max_attempts = settings.max_attempts
        # Create-only, unless --force replaces archived runs on purpose.
        self._condition = {} if settings.force else {"IfNoneMatch": "*"}
        self._client: Any = None
        self._client_cm: Any = None
        self._uploads: dict[int, _Upload] = {}
        self.opened_at: datetime | None = None

    async def open(self) -> None:
        """Connect and check the bucket now: a wrong bucket, endpoint or credential is one
        line before any run is fetched."""
        try:
            from aiobotocore.config import AioConfig
            from aiobotocore.session import get_session
        except ImportError:
            raise ConfigError(
                "--out s3:// needs the s3 extra: pip install 'k6-harvester[s3]'"
            ) from None
        config = AioConfig(retries={"mode": "standard", "total_max_attempts": self._max_attempts})
        session = get_session()
        self._client_cm = session.create_client("s3", endpoint_url=self.endpoint, config=config)
        self._client = await self._client_cm.__aenter__()
        try:
            answer = await self._call("head_bucket", Bucket=self.loc.bucket)
        except OutputError as exc:
            raise StoreRefused(str(exc)) from None
        # The store's clock, not ours: uploads initiated before it are from earlier jobs.
        # (Whole seconds: an upload begun in the same second is left to the lifecycle rule.)
        date = answer["ResponseMetadata"]["HTTPHeaders"].get("date")
        self.opened_at = parsedate_to_datetime(date) if date else None

    async def abort_stale(self, run_ids: Iterable[int]) -> int:
        """Abort the multipart uploads of `run_ids`' objects initiated before this job
        opened the store: a job killed mid-upload left them (invisible, but billed).
        Returns how many."""
        if self.opened_at is None:
            return 0
        wanted = set(run_ids)  # by id: a run's date is not decided yet
        stale: list[tuple[str, str]] = []
        paginator = self._client.get_paginator("list_multipart_uploads")
        with failing_as_output_error(self.loc, self.endpoint):
            async for page in paginator.paginate(Bucket=self.loc.bucket, Prefix=self.loc.prefix):
                stale += [
                    (up["Key"], up["UploadId"])
                    for up in page.get("Uploads", [])
                    if self._run_of(up["Key"]) in wanted and up["Initiated"] < self.opened_at
                ]
        for key, upload_id in stale:
            await self._call(
                "abort_multipart_upload", Bucket=self.loc.bucket, Key=key, UploadId=upload_id
            )
        return len(stale)

    async def _call(self, op: str, **kwargs: Any) -> Any:
        with failing_as_output_error(self.loc, self.endpoint):
            return await getattr(self._client, op)(**kwargs)

    async def archived(self, run_ids: Iterable[int]) -> set[int]:
        """Which of `run_ids` have their object under the prefix (one listing)."""
        wanted = set(run_ids)
        found: set[int] = set()
        paginator = self._client.get_paginator("list_objects_v2")
        with failing_as_output_error(self.loc, self.endpoint):
            async for page in paginator.paginate(Bucket=self.loc.bucket, Prefix=self.loc.prefix):
                for item in page.get("Contents", []):
                    run_id = self._run_of(item["Key"])
                    if run_id in wanted:
                        found.add(run_id)
        return found

    def _key(self, run_id: int) -> str:
        return self.loc.prefix + self.places.key(run_id, f"{run_id}.ndjson")

    def _run_of(self, key: str) -> int | None:
        """The run a key under the prefix holds, in either layout; None for other keys."""
        match = RUN_KEY.fullmatch(key[len(self.loc.prefix) :])
        return int(match.group(1)) if match else None

    async def begin(self, run_id: int) -> None:
        self._uploads[run_id] = _Upload()

    async def write(self, run_id: int, data: bytes) -> None:
        upload = self._uploads[run_id]
        upload.buffer += data
        if len(upload.buffer) >= self.part_size:
            await self._send_part(run_id, upload)

    async def _send_part(self, run_id: int, upload: _Upload) -> None:
        """The buffer as the next part (a part size and at most one write more): memory
        stays at about one part per run in flight."""
        if upload.upload_id is None:
            answer = await self._call(
                "create_multipart_upload", Bucket=self.loc.bucket, Key=self._key(run_id)
            )
            upload.upload_id = answer["UploadId"]
        body, upload.buffer = bytes(upload.buffer), bytearray()  # aiobotocore wants bytes
        number = len(upload.parts) + 1
        answer = await self._call(
            "upload_part",
            Bucket=self.loc.bucket,
            Key=self._key(run_id),
            UploadId=upload.upload_id,
            PartNumber=number,
            Body=body,
        )
        upload.parts.append({"ETag": answer["ETag"], "PartNumber": number})

    async def commit(
        self,
        run_id: int,
        counts: Mapping[str, int] | None = None,
        summary: Mapping[str, Any] | None = None,
    ) -> str:
        """The run's object URL: published now, or found published whole by another job.
        (`counts`, `summary`: for a directory's manifest; objects have none yet.)"""
        upload = self._uploads[run_id]
        key = self._key(run_id)
        try:
            if upload.upload_id is None:
                await self._call(
                    "put_object",
                    Bucket=self.loc.bucket,
                    Key=key,
                    Body=bytes(upload.buffer),
                    **self._condition,
                )
            else:
                if upload.buffer:
                    await self._send_part(run_id, upload)
                await self._call(
                    "complete_multipart_upload",
                    Bucket=self.loc.bucket,
                    Key=key,
                    UploadId=upload.upload_id,
                    MultipartUpload={"Parts": upload.parts},
                    **self._condition,
                )
                upload.upload_id = None
        except OutputError as exc:
            if "PreconditionFailed" not in str(exc):
                raise
            # Another job published this run whole first: it is done; ours is dropped.
        finally:
            await self.abort(run_id)
        return f"s3://{self.loc.bucket}/{key}"

    async def abort(self, run_id: int) -> None:
        upload = self._uploads.pop(run_id, None)
        if upload is not None and upload.upload_id is not None:
            # Best effort: what fails here a bucket lifecycle rule removes (README).
            with contextlib.suppress(Exception):
                await self._client.abort_multipart_upload(
                    Bucket=self.loc.bucket, Key=self._key(run_id), UploadId=upload.upload_id
                )

    async def close(self) -> None:
        for run_id in list(self._uploads):
            await self.abort(run_id)
        if self._client_cm is not None:
            cm, self._client_cm = self._client_cm, None
            await cm.__aexit__(None, None, None)
