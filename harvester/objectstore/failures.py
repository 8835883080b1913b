"""botocore's errors as one line each, with no credential in it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ..errors import HarvesterError, OutputError
from .location import Location


class StoreRefused(HarvesterError):
    """The store refused or could not be reached before any run began: a missing bucket,
    rejected credentials, a wrong endpoint. Bad input: exit 2."""

    exit_code = 2


def error_code(exc: BaseException) -> str:
    """The S3 error code of a botocore `ClientError` (`NoSuchKey`, `PreconditionFailed`)."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def describe_failure(exc: BaseException, loc: Location, endpoint: str | None) -> str:
    """One line for an S3 failure, with no credential in it."""
    code = error_code(exc)
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
    if name == "ParamValidationError":  # refused by botocore itself, before any request
        report = str(getattr(exc, "kwargs", {}).get("report", "")).split("\n", 1)[0]
        if report.startswith("Invalid bucket name"):
            return (
                f"bucket name {loc.bucket!r} is not one S3 takes (letters, digits, '.', '-' "
                "and '_'): check the s3:// URL"
            )
        return f"S3 request on {where} refused before it was sent: {report[:200]}"
    if name == "ReadTimeoutError":
        return (
            f"the S3 store at {endpoint or 'AWS'} did not answer a request on {where} "
            "within --read-timeout, on any try (--max-attempts): is it overloaded or stuck?"
        )
    return f"S3 request on {where} failed: {code or name}"


class StoreError(OutputError):
    """An S3 request failed; `code` is the store's error code, if it gave one."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class StoreCut(StoreError):
    """A request that the job's cut ended unanswered (`Store.hurry`, after a second stop
    signal): a consequence of the stop, not a failure of the store, so the job ends as
    stopped (128 + the signal), not as failed."""


@contextlib.contextmanager
def failing_as_output_error(loc: Location, endpoint: str | None) -> Iterator[None]:
    """botocore's errors as one `StoreError` line (they never carry the secret key)."""
    try:
        yield
    except Exception as exc:
        if not type(exc).__module__.startswith(("botocore", "aiobotocore")):
            raise
        raise StoreError(describe_failure(exc, loc, endpoint), error_code(exc)) from None
