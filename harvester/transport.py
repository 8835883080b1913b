"""How bytes move: one aiohttp session, the rate gate, retries, and errors made ours.

This module and `wire.py` (an answer read within its size cap, aiohttp's exceptions made
ours) are the only ones that touch aiohttp's client: every failure leaves here as a
`harvester.errors` exception (`raise ... from exc`). Every request, first try or retry,
passes the shared `RateGate` and a bound on requests in flight, and ends within
`--request-timeout` seconds, its whole body included. What an answer says is read
elsewhere: a 2xx body by `answers.py` (or the request's own parser), an error answer, and
whether the token is to blame for it, by `error_answers.py`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import IO, Any, BinaryIO, TypeVar

import aiohttp
import anyio
import orjson
from yarl import URL

from .answers import Parser, Spill, check_shape, parse_body
from .config import Secret, Settings
from .error_answers import Refusals, download_error, hiding
from .errors import (
    ApiError,
    ApiUnreachable,
    ConnectionFailed,
    RequestTimeout,
    RetriesExhausted,
    RetryableError,
    RetryAfterTooLong,
    UnusableAnswer,
)
from .proxies import ProxyChoice, user_agent
from .ratelimit import RateGate
from .retry import RetryPolicy, current_budget, pauses_everyone
from .stats import HarvestStats
from .tables import plural
from .wire import (
    MAX_REDIRECTS,
    MB,
    copy_capped,
    errors_made_ours,
    file_where,
    read_capped,
    read_spilling,
    short_url,
)

T = TypeVar("T")


class Transport:
    """Sends GETs through the gate with retries; use as an async context manager."""

    def __init__(
        self,
        settings: Settings,
        *,
        gate: RateGate,
        stats: HarvestStats,
        policy: RetryPolicy | None = None,
    ) -> None:
        self._base = URL(settings.base_url)
        self._token: Secret = settings.token
        self._deadline = settings.request_timeout
        self._proxy = ProxyChoice()
        self._timeout = aiohttp.ClientTimeout(
            total=self._deadline,
            sock_connect=settings.connect_timeout,
            sock_read=settings.read_timeout,
        )
        self._max_answer = settings.max_answer_size * MB
        self._concurrency = settings.concurrency
        self._slots = anyio.CapacityLimiter(settings.concurrency)
        self.gate = gate
        self.stats = stats
        self.policy = policy or RetryPolicy(
            max_attempts=settings.max_attempts,
            base=settings.backoff_base,
            cap=settings.backoff_cap,
            budget=settings.retry_budget,
            max_retry_after=settings.max_retry_after,
        )
        self._session: aiohttp.ClientSession | None = None
        # v6/v5 take `Bearer` and the stack id on every request; v2 takes `Token`.
        self._scheme = "Bearer" if settings.api == "v6" else "Token"
        self._refusals = Refusals(stats, bearer=self._scheme == "Bearer")
        self.stack_id: int | None = settings.stack_id

    def __repr__(self) -> str:
        return f"Transport(base={str(self._base)!r})"

    async def __aenter__(self) -> Transport:
        connector = aiohttp.TCPConnector(limit=self._concurrency, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            headers={"User-Agent": user_agent(), "Accept": "application/json"},
            json_serialize=lambda obj: orjson.dumps(obj).decode(),
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            with anyio.CancelScope(shield=True):
                await self._session.close()
            self._session = None

    def url(self, path: str, query: str = "") -> URL:
        """The exact URL that will be sent, already encoded (so its length is the real one)."""
        text = str(self._base).rstrip("/") + path + (f"?{query}" if query else "")
        return URL(text, encoded=True)

    async def get(
        self,
        endpoint: str,
        url: URL,
        lists: tuple[str, ...] = (),
        objects: tuple[str, ...] = (),
        headers: dict[str, str] | None = None,
        parse: Parser = parse_body,
        spill: Spill | None = None,
    ) -> Any:
        """GET `url` with retries and return the parsed JSON; `endpoint` names it in stats
        and errors. An answer must be an object holding each of `lists` as a list of
        objects and each of `objects` as an object (`answers.check_shape`): one without
        them is a transient fault, tried again; a list item that is not an object fails.
        `headers` are sent besides the token's. `parse` reads a 2xx body instead of
        `answers.parse_body` (its errors are retried alike); `spill`: a 2xx body past
        `spill.at` bytes goes to a temporary file, read by `spill.read` instead."""
        shape = (lists, objects)
        return await self._retrying(
            endpoint,
            lambda: self._attempt(
                endpoint, url, shape=shape, extra=headers, parse=parse, spill=spill
            ),
        )

    def _auth_headers(self) -> dict[str, str]:
        headers = {"Authorization": f"{self._scheme} {self._token.reveal()}"}
        if self._scheme == "Bearer" and self.stack_id is not None:
            headers["X-Stack-Id"] = str(self.stack_id)
        return headers

    async def post(self, endpoint: str, url: URL) -> Any:
        """POST (no body) to `url` with the same retries, token and gate as `get`."""
        return await self._retrying(endpoint, lambda: self._attempt(endpoint, url, "POST"))

    async def _retrying(self, endpoint: str, attempt_once: Callable[[], Awaitable[T]]) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                return await attempt_once()
            except RetryableError as exc:
                self.stats.errors[(endpoint, type(exc).__name__)] += 1
                await self._wait_before_retry(endpoint, exc, attempt)
                self.stats.retries += 1

    async def _wait_before_retry(self, endpoint: str, exc: RetryableError, attempt: int) -> None:
        what = f"{endpoint} {exc.url or ''}".strip()
        # A storage host's answer about a file does not speak for the API.
        shared = pauses_everyone(exc, from_api=endpoint != FILE_ENDPOINT)
        if shared:
            # First, whatever happens to this request: the gate pauses everyone.
            self._throttled(exc, attempt)
        if attempt >= self.policy.max_attempts:
            if isinstance(exc, ConnectionFailed | RequestTimeout) and not self.stats.answered:
                # Refused, timed out connecting, or connected and never answered: the API
                # is not there for this job, and every run would fail the same way.
                raise ApiUnreachable(
                    f"cannot reach the API at {self._base}: {exc}, and no request has had an "
                    "answer; check --base-url and the network",
                ) from exc
            last = str(exc).removeprefix(f"{what}: ")  # (an answer's words name it too)
            raise RetriesExhausted(
                f"{what}: gave up after {plural(attempt, 'try', 'tries')} (last: {last})",
                status=exc.status,
            ) from exc
        wait = exc.retry_after
        if wait is not None and wait > self.policy.max_retry_after:
            raise RetryAfterTooLong(
                f"{what}: the server asked to wait {wait:.0f}s, more than --max-retry-after "
                f"{self.policy.max_retry_after:.0f}s",
                status=exc.status,
            ) from exc
        if shared:
            # The gate's pause is the wait. It throttles the whole client, not this run,
            # so no run's retry budget pays for it.
            return
        if wait is None:
            wait = self.policy.backoff(attempt)
        budget = current_budget.get()
        if budget is not None:
            budget.spend(wait, what)
        await anyio.sleep(wait)

    def _throttled(self, exc: RetryableError, attempt: int) -> None:
        """Tell the gate of a 429 (or a 503 with Retry-After): a pause of Retry-After (at
        most --max-retry-after, the longest we wait), or of the backoff but at least a
        second when it did not say."""
        self.stats.throttled += 1
        if exc.retry_after is not None:
            pause = min(exc.retry_after, self.policy.max_retry_after)
        else:
            pause = max(self.policy.backoff(attempt), 1.0)
        self.gate.throttled(pause)

    async def _attempt(
        self,
        endpoint: str,
        url: URL,
        method: str = "GET",
        shape: tuple[tuple[str, ...], tuple[str, ...]] = ((), ()),
        extra: dict[str, str] | None = None,
        parse: Parser = parse_body,
        spill: Spill | None = None,
    ) -> Any:
        assert self._session is not None, "use Transport as an async context manager"
        async with self._slots:
            await self.gate.acquire()
            status, body, headers = await self._send(
                endpoint, url, method, extra, None if spill is None else spill.at
            )
        self.stats.answered = True
        self.stats.requests[(endpoint, status)] += 1
        if not isinstance(body, bytes):  # a 2xx body past spill.at, in a temporary file
            assert spill is not None
            body.seek(0, 2)
            self.stats.bytes_received += body.tell()
            self.gate.succeeded()
            self.stats.allowed = True
            with body:
                body.seek(0)
                return await spill.read(body, lambda: short_url(url))
        self.stats.bytes_received += len(body)
        if 200 <= status < 300:
            self.gate.succeeded()
            self.stats.allowed = True
            if method == "POST" and not body:
                return None  # a POST that started something may answer 202/204 with nothing
            try:
                doc = parse(body, status, endpoint, lambda: short_url(url))
            except ApiError:  # a web page answered 200 is quoted: one echoing the token...
                if (hidden := hiding(self._token.reveal(), body)) != body:
                    parse(hidden, status, endpoint, lambda: short_url(url))
                raise  # (...says so with it hidden, above)
            check_shape(doc, endpoint, lambda: short_url(url), *shape)
            return doc
        body = hiding(self._token.reveal(), body)
        self._refusals.fail(status, body, headers, url, endpoint, self.stack_id)

    async def _send(
        self,
        endpoint: str,
        url: URL,
        method: str = "GET",
        extra: dict[str, str] | None = None,
        spill_at: int | None = None,
    ) -> tuple[int, bytes | IO[bytes], Any]:
        assert self._session is not None
        target = url
        # One deadline for the request, its redirects included: each hop is its own
        # aiohttp request, whose `total` would start afresh (four deadlines in all).
        ends = time.monotonic() + self._deadline
        for _ in range(MAX_REDIRECTS + 1):
            headers = {**self._auth_headers(), **(extra or {})}
            with errors_made_ours(endpoint, url, short_url, deadline=self._deadline):
                async with self._session.request(
                    method,
                    target,
                    headers=headers,
                    allow_redirects=False,
                    proxy=self._proxy(target),
                    timeout=self._timeout_until(ends),
                ) as resp:
                    where = partial(short_url, url)  # made for an error only
                    if spill_at is not None and 200 <= resp.status < 300:
                        return (
                            resp.status,
                            await read_spilling(resp, self._max_answer, endpoint, where, spill_at),
                            resp.headers,
                        )
                    body = await read_capped(resp, self._max_answer, endpoint, where)
                    if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                        target = self._follow(endpoint, target, resp.headers["Location"])
                        continue
                    return resp.status, body, resp.headers
        shown = short_url(url)
        raise UnusableAnswer(f"{endpoint} {shown}: more than {MAX_REDIRECTS} redirects", url=shown)

    def _timeout_until(self, ends: float) -> aiohttp.ClientTimeout:
        """The session's timeouts with what is left of the request's deadline as `total`
        (a hop begun past it times out at once: aiohttp takes 0 as no limit)."""
        left = max(ends - time.monotonic(), 1e-6)
        return aiohttp.ClientTimeout(
            total=left, sock_connect=self._timeout.sock_connect, sock_read=self._timeout.sock_read
        )

    def _follow(self, endpoint: str, current: URL, location: str) -> URL:
        try:
            nxt = current.join(URL(location))
        except ValueError as exc:
            raise UnusableAnswer(
                f"{endpoint} {short_url(current)}: the API redirected to a malformed URL "
                f"{location[:80]!r} ({exc})",
                url=short_url(current),
            ) from exc
        if (nxt.scheme, nxt.host, nxt.port) != (current.scheme, current.host, current.port):
            # The token is only ever sent to the configured origin.
            raise UnusableAnswer(
                f"{endpoint} {short_url(current)}: the API redirected to another host "
                f"({nxt.host}); not following with the token",
                url=short_url(current),
            )
        return nxt

    # --- files on other origins (the CSV export) ---------------------------------------

    async def download(self, url: URL, into: BinaryIO) -> int:
        """Stream the body at `url` into `into`, bytes exactly as served (no decoding), and
        return their count. For a file k6 Cloud hands out, typically a signed URL on a
        storage host: it goes to any origin, redirects included, so it NEVER carries the
        token. Same gate, slots and retries as API requests; a retry starts the file over."""
        return await self._retrying(FILE_ENDPOINT, lambda: self._download_once(url, into))

    async def _download_once(self, url: URL, into: BinaryIO) -> int:
        assert self._session is not None, "use Transport as an async context manager"
        into.seek(0)
        into.truncate()
        shown = file_where(url)
        where = partial(file_where, url)
        async with self._slots:
            await self.gate.acquire()
            with errors_made_ours(FILE_ENDPOINT, url, file_where, deadline=self._deadline):
                async with self._session.get(
                    url,
                    headers={"Accept": "*/*"},
                    max_redirects=MAX_REDIRECTS,
                    auto_decompress=False,
                    proxy=self._proxy(url),
                ) as resp:
                    self.stats.requests[(FILE_ENDPOINT, resp.status)] += 1
                    if not 200 <= resp.status < 300:
                        body = await read_capped(resp, self._max_answer, FILE_ENDPOINT, where)
                        raise download_error(resp.status, body, resp.headers, shown)
                    # Capped as an API answer is: a file without end fills no disk.
                    size = await copy_capped(
                        resp, into.write, self._max_answer, FILE_ENDPOINT, where
                    )
        self.stats.bytes_received += size
        return size


FILE_ENDPOINT = "export_file"
