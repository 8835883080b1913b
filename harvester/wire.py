"""An answer off the wire: read within its size cap, aiohttp's exceptions made ours, and a
request named for messages.

With `transport.py`, the only module that touches aiohttp's client or its exceptions.
The per-request deadline is aiohttp's own (`ClientTimeout.total`; for each redirect hop
the transport follows, what is left of it): it covers connecting, sending and reading the
whole body, so a server that trickles a byte every few seconds (never long enough apart
for `--read-timeout`) still ends. Its `TimeoutError` is told apart here from the
time-between-bytes one (`ServerTimeoutError`).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from typing import IO

import aiohttp
from yarl import URL

from .errors import (
    AnswerTooLarge,
    AnswerTooSlow,
    ApiError,
    ApiStatusError,
    ConnectionFailed,
    OutputError,
    RequestTimeout,
    TruncatedBody,
    UnusableAnswer,
)
from .tables import plural

MAX_REDIRECTS = 3
MB = 1 << 20


async def read_capped(
    resp: aiohttp.ClientResponse, cap: int, endpoint: str, where: Callable[[], str]
) -> bytes:
    """The whole body (decompressed), or `AnswerTooLarge` as soon as it passes `cap` bytes
    (`copy_capped`)."""
    chunks: list[bytes] = []
    await copy_capped(resp, chunks.append, cap, endpoint, where)
    return b"".join(chunks)


async def read_spilling(
    resp: aiohttp.ClientResponse, cap: int, endpoint: str, where: Callable[[], str], spill: int
) -> bytes | IO[bytes]:
    """The body as `read_capped`, held in memory only up to `spill` bytes: a longer one
    goes on in a temporary file (deleted once closed), handed back rewound, so that an
    answer of any size costs at most `spill` bytes of memory."""
    spool = tempfile.SpooledTemporaryFile(max_size=spill)

    def write(chunk: bytes) -> None:
        with spill_failed():
            spool.write(chunk)

    try:
        if resp.content_length is not None and resp.content_length > spill:
            with spill_failed():
                spool.rollover()  # to the file at once: no buffer grown to `spill` first
        size = await copy_capped(resp, write, cap, endpoint, where)
        spool.seek(0)
        if size > spill:
            return spool
        with spool:
            return spool.read()
    except BaseException:
        spool.close()
        raise


@contextlib.contextmanager
def spill_failed() -> Iterator[None]:
    """A temporary file that cannot be written (the disk of $TMPDIR full or read-only)
    ends the job as a full output does (`OutputError`): every long answer needs one. An
    aiohttp connection error is an OSError too, but never comes from these writes."""
    try:
        yield
    except OSError as exc:
        raise OutputError(
            f"cannot keep a long answer in a temporary file in {tempfile.gettempdir()}: "
            f"{exc.strerror or exc}; free space there or point TMPDIR elsewhere"
        ) from exc


async def copy_capped(
    resp: aiohttp.ClientResponse,
    write: Callable[[bytes], object],
    cap: int,
    endpoint: str,
    where: Callable[[], str],
) -> int:
    """Each chunk of the body to `write`, and their size; `AnswerTooLarge` as soon as it
    passes `cap` bytes: what is left is not read (the connection is closed, not drained).
    A Content-Length over the cap is refused before the first byte; it cannot be trusted
    to be all, since a compressed body grows when read, so the bytes are counted as they
    come. An API answer and a downloaded file (a CSV export) alike. `where()` names the
    request, made for an error only (a series URL's ids are parsed to be counted)."""
    declared = resp.content_length
    if declared is not None and declared > cap:
        raise too_large(cap, endpoint, where, f"it says {declared:,} bytes")
    size = 0
    while chunk := await resp.content.readany():
        size += len(chunk)
        if size > cap:
            raise too_large(cap, endpoint, where, "its first bytes only were read")
        write(chunk)
    return size


def too_large(cap: int, endpoint: str, where: Callable[[], str], detail: str) -> AnswerTooLarge:
    shown = where()
    return AnswerTooLarge(
        f"{endpoint} {shown}: answer larger than {cap // MB} MB ({detail}); raise "
        "--max-answer-size if the API's answers are really that big",
        url=shown,
    )


@contextlib.contextmanager
def errors_made_ours(
    endpoint: str, url: URL, where: Callable[[URL], str], *, deadline: float
) -> Iterator[None]:
    """aiohttp's exceptions as ours: timeouts, cut bodies and broken connections are
    retryable; too many redirects is not. Their words name the request (`endpoint` and
    `where(url)`, made only for an error: a series URL's ids are parsed to be counted), as
    an error answer's do; `deadline`: the seconds a whole request may take (the session's
    `ClientTimeout.total`)."""

    def ours(error: type[ApiError], words: str) -> ApiError:
        shown = where(url)
        return error(f"{endpoint} {shown}: {words}", url=shown)

    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:
        # Before the generic timeouts: a connect that times out (packets dropped) is a
        # connection failure, as a refused one is.
        raise ConnectionFailed(
            f"cannot connect to {url.host}:{url.port} (timed out)", url=where(url)
        ) from exc
    except aiohttp.ServerTimeoutError as exc:  # --read-timeout between bytes
        raise ours(RequestTimeout, "no answer in time") from exc
    except TimeoutError as exc:  # the whole request's deadline (ClientTimeout.total)
        raise ours(
            AnswerTooSlow, f"the answer was not whole within {deadline:g} s (--request-timeout)"
        ) from exc
    except aiohttp.ClientPayloadError as exc:
        raise ours(TruncatedBody, "the body was cut short") from exc
    except aiohttp.ClientConnectorError as exc:
        raise ConnectionFailed(
            f"cannot connect to {url.host}:{url.port} ({exc.strerror or exc})", url=where(url)
        ) from exc
    except aiohttp.InvalidURL as exc:
        # A redirect aiohttp followed itself (a download) to a URL that does not parse.
        raise ours(UnusableAnswer, f"redirected to a malformed URL ({exc})") from exc
    except aiohttp.TooManyRedirects as exc:
        raise ours(ApiStatusError, f"more than {MAX_REDIRECTS} redirects") from exc
    except aiohttp.ClientResponseError as exc:
        if "content-encoding" in str(exc.message).lower():
            # An encoding we did not ask for (br, zstd: aiohttp says so only in words):
            # the same answer would come again, so no retry, and no "cannot reach".
            raise ours(
                UnusableAnswer,
                f"the answer is in a content encoding harvester did not ask for "
                f"({exc.message}); a proxy in between?",
            ) from exc
        raise ours(ConnectionFailed, f"connection broke ({str(exc) or 'closed'})") from exc
    except aiohttp.ClientConnectionError as exc:
        raise ours(ConnectionFailed, f"connection broke ({str(exc) or 'closed'})") from exc


def file_where(url: URL) -> str:
    """A file URL for messages: host and path, never the query (a signed URL's query is
    its credential)."""
    return f"{url.host}{url.path}"


def short_url(url: URL) -> str:
    """The request for messages: path and query with the `ids[]` list counted, not listed
    (a series URL holds up to ~180 ids)."""
    ids = url.query.getall("ids[]", [])
    rest = [(k, v) for k, v in url.query.items() if k != "ids[]"]
    query = "&".join(f"{k}={v}" for k, v in rest)
    text = url.path + (f"?{query}" if query else "")
    return text + (f" ({plural(len(ids), 'id')})" if ids else "")
