"""What an error answer means (any status but 2xx, a redirect followed apart): one of our
errors, in words naming its request, with its Retry-After (seconds or an HTTP date) and
the server's own words, the token hidden in them.

Plain functions over status, headers and body (no sockets), and `Refusals`, which counts
the job's 403s: whether a refusal is of one resource (its run fails) or of the token (the
job ends) depends on what the API answered before. Used by `transport.py`.
"""

from __future__ import annotations

import email.utils
import math
import time
from datetime import UTC
from typing import Any, NoReturn

import orjson
from yarl import URL

from .errors import (
    ApiError,
    ApiStatusError,
    AuthRejected,
    Forbidden,
    NotFound,
    RateLimited,
    RetryableError,
    ServerError,
    UrlTooLong,
)
from .stats import HarvestStats
from .wire import short_url

#: 403s, with not one request allowed before them, after which the token is to blame.
FORBIDDEN_IS_THE_TOKEN = 3


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None when
    absent or unreadable (a date past year 9999, `nan`): the caller's backoff applies."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    if when.tzinfo is None:  # `-0000`: UTC with its zone unsaid (RFC 5322), not local time
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def error_message(body: bytes) -> str:
    """The server's own words from an error body, if it has any we can find."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace").strip()
    for node in (doc, doc.get("error") if isinstance(doc, dict) else None):
        if isinstance(node, dict):
            for key in ("message", "detail", "error"):
                if isinstance(node.get(key), str):
                    return str(node[key])
    return ""


#: Tokens shorter than this are not hidden in bodies (`hiding`): no real one is (k6's are 40
#: hex digits, Grafana's 40+ characters), and a test's `t` would hide every t of a page.
HIDDEN_TOKEN = 8


def hiding(token: str, body: bytes) -> bytes:
    """An error body with the token shown as `***`: one that echoes the request's headers
    (a proxy's or a debug page) put the token in the job's messages and its state file."""
    return body.replace(token.encode(), b"***") if len(token) >= HIDDEN_TOKEN else body


def _looks_like_url_too_long(message: str) -> bool:
    text = message.lower()
    return "too long" in text and ("url" in text or "uri" in text or "request line" in text)


def classify(status: int, body: bytes, headers: Any, url: str, endpoint: str = "") -> ApiError:
    """The exception for a non-2xx answer; with `endpoint`, its words name the request
    (`endpoint url: HTTP 400: ...`), as every error about an API answer does."""
    said = error_message(body)
    detail = (f"{endpoint} {url}: " if endpoint else "") + f"HTTP {status}"
    detail += f": {said}" if said else ""
    if status == 401:
        return AuthRejected(f"the API rejected the token ({detail})", status=status, url=url)
    if status == 403:
        return Forbidden(f"{detail} (the token may not read it)", status=status, url=url)
    if status == 404:
        return NotFound(detail, status=status, url=url)
    if status == 414 or (status == 400 and _looks_like_url_too_long(said)):
        return UrlTooLong(detail, status=status, url=url)
    if status == 429:
        return RateLimited(
            detail, retry_after=parse_retry_after(headers.get("Retry-After")), url=url
        )
    if status == 408 or status >= 500:
        error = ServerError(detail, status=status, url=url)
        error.retry_after = parse_retry_after(headers.get("Retry-After"))
        return error
    return ApiStatusError(detail, status=status, url=url)


class Refusals:
    """Error answers to the API's requests as errors that say whose fault they are: the
    token's (`AuthRejected`, ends the job) or the request's (its run fails, or it is
    retried). v6 and v5 take a `Bearer` token and the stack id (`bearer`)."""

    def __init__(self, stats: HarvestStats, *, bearer: bool) -> None:
        self._stats = stats
        self._bearer = bearer
        self._forbidden = 0  # 403 answers so far

    def fail(
        self, status: int, body: bytes, headers: Any, url: URL, endpoint: str, stack_id: int | None
    ) -> NoReturn:
        """Raise the error of an answer of `status` to `url` (`body` with the token hidden)."""
        error = classify(status, body, headers, short_url(url), endpoint)
        if self._bearer and status in (401, 403):
            if status == 401 or url.path.startswith("/cloud/v6/"):
                # v6: 401/403 is about the token and the stack (v5's 403 is an unknown run).
                raise AuthRejected(
                    f"{endpoint} {error.url}: the API rejected the token for X-Stack-Id "
                    f"{stack_id} (HTTP {status}: {error_message(body)}); check the stack id "
                    "(--stack-id or K6_CLOUD_STACK_ID) and that the token belongs to that stack",
                    status=status,
                    url=error.url,
                )
        if isinstance(error, Forbidden):
            self._forbidden_answer(error)
        raise error

    def _forbidden_answer(self, error: Forbidden) -> None:
        """A 403 fails its run, unless 403s are all the API has answered: then the token
        may read nothing and the job ends (a few, since runs answer in any order)."""
        self._forbidden += 1
        if not self._stats.allowed and self._forbidden >= FORBIDDEN_IS_THE_TOKEN:
            raise AuthRejected(
                f"the API refused all of the first {self._forbidden} requests ({error}); "
                "check that the token belongs to the runs' organisation",
                status=403,
                url=error.url,
            ) from error


def download_error(status: int, body: bytes, headers: Any, shown: str) -> ApiError:
    """A file's error answer (`Transport.download`): transient ones are retried as for the
    API; any other is the file's own status (a 403 there is an expired signature, not a
    rejected token)."""
    error = classify(status, body, headers, shown)
    if isinstance(error, RetryableError):
        return error
    return ApiStatusError(
        f"the CSV export file {shown} answered HTTP {status}", status=status, url=shown
    )
