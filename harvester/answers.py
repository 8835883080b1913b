"""What a 2xx answer must be: whole JSON (else cut short, retried, or never JSON, failed at
once), of the shape its endpoint always answers, and the run asked for.

Plain functions over the body (no sockets), used by `transport.py` and the API clients.
Whatever a server sends, a malformed answer becomes an error of that request or run with
a reason, never an exception of Python's own (a `null` item, a list for an object). The
series answers are read by `series_answers.py`, error answers by `error_answers.py`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import IO, Any

import orjson

from .errors import MalformedAnswer, TruncatedBody, UnusableAnswer
from .jsontext import loads

BOM = b"\xef\xbb\xbf"


def parse_body(body: bytes, status: int, endpoint: str, where: Callable[[], str]) -> Any:
    """The JSON of a 2xx body. One that does not parse was cut short (`TruncatedBody`,
    retried), unless it is no JSON at all (`never_json`): that is what the server sends
    every time, so the request fails at once (`UnusableAnswer`) instead of spending the
    retry budget. A byte-order mark is skipped, as RFC 8259 allows. Checked only when
    parsing fails: every answer passes here."""
    try:
        return loads(body)
    except orjson.JSONDecodeError as exc:
        failed = exc
    except UnusableAnswer as exc:
        url = where()
        raise UnusableAnswer(f"{endpoint} {url}: HTTP {status} {exc}", url=url) from None
    if body.startswith(BOM):
        return parse_body(body[len(BOM) :], status, endpoint, where)
    problem = never_json(body)
    if problem is not None:
        url = where()
        raise UnusableAnswer(f"{endpoint} {url}: HTTP {status} {problem}", url=url) from failed
    raise TruncatedBody(
        f"HTTP {status} with a body that is not whole JSON", url=where()
    ) from failed


#: Reads a 2xx body: (body, status, endpoint, where) -> what the request returns.
Parser = Callable[[bytes, int, str, Callable[[], str]], Any]


@dataclass(frozen=True, slots=True)
class Spill:
    """How to take a 2xx body that may be large: past `at` bytes it goes on in a
    temporary file, and `read(file, where)` (the file rewound) returns what the request
    returns, its errors retried as a `Parser`'s are."""

    at: int
    read: Callable[[IO[bytes], Callable[[], str]], Awaitable[Any]]


def never_json(body: bytes) -> str | None:
    """Why `body`, which did not parse, is no JSON cut short, or None. Not UTF-8, as JSON
    must be (RFC 8259), unless cut inside its last character; or HTML (a proxy's or a
    login page answering for the API)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as bad:
        if bad.reason == "unexpected end of data":  # a character cut, not a wrong one
            return None
        return (
            f"answer is not UTF-8 (byte 0x{body[bad.start]:02x} at offset {bad.start} of "
            f"{len(body)}); JSON must be UTF-8, so asking again would bring the same"
        )
    if text.lstrip().startswith("<"):
        shown = " ".join(text.split())[:60]
        return f"answer is HTML, not JSON ({shown!r}): a proxy's or login page? check --base-url"
    return None


def check_shape(
    doc: Any,
    endpoint: str,
    where: Callable[[], str],
    lists: tuple[str, ...],
    objects: tuple[str, ...],
) -> None:
    """A 2xx body must be an object holding each of `lists` as a list of objects and each
    of `objects` as an object. A missing part is a glitch (`MalformedAnswer`, retried); a
    list item that is not an object is what the server holds (`UnusableAnswer`, the run
    fails: asking again would bring the same). `where()` names the request, for the error
    only (every answer passes here)."""
    for key, kind in [*((k, list) for k in lists), *((k, dict) for k in objects)]:
        value = doc.get(key) if isinstance(doc, dict) else None
        if not isinstance(value, kind):
            noun = "list" if kind is list else "object"
            url = where()
            raise MalformedAnswer(
                f"{endpoint} {url}: an answer without its {key!r} {noun}", url=url
            )
        if kind is list:
            objects_only(value, key, endpoint, where)


def objects_only(items: list[Any], key: str, endpoint: str, where: Callable[[], str]) -> None:
    """Each of `items` (an answer's list `key`) an object: one that is not is what the
    server holds (`UnusableAnswer`: the run fails, asking again would bring the same)."""
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            shown, url = orjson.dumps(item).decode()[:40], where()
            raise UnusableAnswer(
                f"{endpoint} {url}: item {index} of {key!r} is {shown}, not an object", url=url
            )


def the_run_asked(
    run: dict[str, Any], run_id: int, endpoint: str, where: Callable[[], str]
) -> None:
    """A run object answered for run `run_id` is that run's: another run's (an API or a
    proxy answering run 5 for run 7) is what the server holds (`UnusableAnswer`: the run
    fails, asking again would bring the same); archived, it was run 5's record filed as run
    7's. An object without an id is left to its endpoint's shape checks."""
    said = run.get("id")
    if said is not None and said != run_id:
        url = where()
        shown = orjson.dumps(said).decode()[:40]
        raise UnusableAnswer(
            f"{endpoint} {url}: the answer is the run object of run {shown}, not of run {run_id}",
            url=url,
        )
