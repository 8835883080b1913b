"""The harvester's one exception tree: every failure a caller can meet, named for what happened.

aiohttp's exceptions become these in `transport.py` and `wire.py` only; the CLI catches
`HarvesterError` once and turns it into a one-line message and an exit status.
"""

from __future__ import annotations


class HarvesterError(Exception):
    """Root of everything the harvester raises on purpose."""

    #: Exit status the CLI uses when this error ends the command.
    exit_code = 1


class ConfigError(HarvesterError):
    """Bad settings, flags or input files: nothing was harvested."""

    exit_code = 2


class StateError(HarvesterError):
    """The state file cannot be used (locked by another process, other version, corrupt)."""

    exit_code = 2


class StateCorrupt(StateError):
    """The state file is damaged or not a database: move it aside (the files stay valid)."""


class StateUnavailable(StateError):
    """The state file cannot be written for now: a full disk, a read-only filesystem, an
    I/O error, a lock held by another program. An outage: the worker backs off."""

    exit_code = 1


class OutputError(HarvesterError):
    """The output cannot be written (disk full, permissions, a closed pipe). Ends the job:
    every run writes to the same place. Runs already published stay published."""


class OutputBusy(HarvesterError):
    """Another harvester holds the output directory's lock. Waiting fixes it, so the
    worker backs off instead of ending; a one-shot job stops with exit 2."""

    exit_code = 2


class ApiError(HarvesterError):
    """The API answered, but not with what we asked for."""

    def __init__(self, message: str, *, status: int | None = None, url: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.url = url


class AuthRejected(ApiError):
    """401, or a 403 for everything asked: the token is missing, wrong or lacks access.
    Never retried; ends the job."""

    exit_code = 2


class Forbidden(ApiError):
    """403 for one resource (a run of another organisation): fails that run only. The
    transport makes it an `AuthRejected` when 403s are all the API has answered."""


class UnusableAnswer(ApiError):
    """A 2xx or redirect that no retry will fix and that is no metric id's fault: a list
    item that is not an object, a redirect to a broken URL or another host. Fails the run."""


class NotFound(ApiError):
    """404: the run (or other resource) does not exist."""


class UrlTooLong(ApiError):
    """414 (or a 400 that says so): the request line was too long; the batch must split."""


class ApiStatusError(ApiError):
    """Any other non-2xx answer that retrying will not fix (most 4xx)."""


class RetryableError(ApiError):
    """A transient failure worth another try: 5xx, 408, 429, resets, truncated bodies."""

    #: Seconds the server asked us to wait (Retry-After), if it said.
    retry_after: float | None = None


class ServerError(RetryableError):
    """5xx or 408."""


class RateLimited(RetryableError):
    """429 Too Many Requests."""

    def __init__(self, message: str, *, retry_after: float | None, url: str = "") -> None:
        super().__init__(message, status=429, url=url)
        self.retry_after = retry_after


class ConnectionFailed(RetryableError):
    """The connection could not be made or broke before the answer was whole."""


class TruncatedBody(RetryableError):
    """A 2xx whose body was cut short or is not valid JSON."""


class MalformedAnswer(RetryableError):
    """A 2xx whose JSON lacks what the endpoint always answers (a series answer without its
    `k6-serie` list): a glitch of the server, asked again, never blamed on a metric id."""


class RequestTimeout(RetryableError, TimeoutError):
    """No complete answer within the connect or read timeout."""


class AnswerTooSlow(RetryableError):
    """A request not whole within `--request-timeout`, its body included (a server that
    trickles its bytes): retried; an API that only does this is slow, not unreachable."""


class AnswerTooLarge(UnusableAnswer):
    """An answer larger than `--max-answer-size`: the rest is not read, and asking again
    would bring as much. Fails the run."""


class ApiUnreachable(ApiError):
    """Not one connection to the API could be made: a wrong --base-url or no network.
    Ends the whole job (every run would fail the same way)."""

    exit_code = 2


class RequestRefused(ApiStatusError):
    """Both halves of a refused series batch were refused the same way: the fault is the
    request (its method, its run), not one of its ids. Fails the run."""


class MethodRefused(RequestRefused):
    """A `--method` that the API refused for a whole request before answering any series
    asked with it: every run would fail the same way. Ends the job."""

    exit_code = 2


class RetriesExhausted(ApiError):
    """A request kept failing transiently until its attempts or time budget ran out."""


class RetryAfterTooLong(ApiError):
    """The server asked us to wait longer than we are willing to (--max-retry-after)."""


def unwrap(exc: BaseException) -> BaseException:
    """The most telling error inside (nested) exception groups from task groups.

    A rejected token wins over everything, then the other job-ending errors, then any
    `HarvesterError`; otherwise the first error inside (a bug, to be shown as itself,
    not as "unhandled errors in a TaskGroup").
    """
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves = [unwrap(inner) for inner in exc.exceptions]
    for kind in (AuthRejected, ApiUnreachable, OutputError, HarvesterError):
        for leaf in leaves:
            if isinstance(leaf, kind):
                return leaf
    return leaves[0]


def describe(exc: HarvesterError) -> str:
    """One line for a failed run: what kind of failure, then the details."""
    names = {
        NotFound: "not found",
        Forbidden: "forbidden",
        UnusableAnswer: "unusable answer",
        RetriesExhausted: "retries exhausted",
        RetryAfterTooLong: "rate limited too long",
        ApiStatusError: "API error",
    }
    for kind, label in names.items():
        if isinstance(exc, kind):
            return f"{label}: {exc}"
    return str(exc)


#: Errors that end the whole job, not just one run: no other run can do better.
JOB_FATAL = (AuthRejected, ApiUnreachable, OutputError, MethodRefused)
