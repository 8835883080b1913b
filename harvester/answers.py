"""What an HTTP answer means: its status as one of our errors, its Retry-After, its shape.

Plain functions over status, headers and body (no sockets), used by `transport.py`.
Whatever a server sends, a malformed answer becomes an error of that request or run with
a reason, never an exception of Python's own (an unparsable date, a `null` item).
"""

from __future__ import annotations

import codecs
import email.utils
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC
from typing import IO, Any

import msgspec
import orjson

from .errors import (
    ApiError,
    ApiStatusError,
    AuthRejected,
    Forbidden,
    MalformedAnswer,
    NotFound,
    RateLimited,
    ServerError,
    TruncatedBody,
    UnusableAnswer,
    UrlTooLong,
)
from .jsontext import loads
from .packed import PackedSeries, pack_series


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


class _Result(msgspec.Struct):
    result: list[msgspec.Raw]


class _Query(msgspec.Struct):
    data: _Result


_QUERY = msgspec.json.Decoder(_Query)


def raw_result(
    body: bytes, status: int, endpoint: str, where: Callable[[], str]
) -> list[msgspec.Raw] | None:
    """The `data.result` list of a v5 query answer, each entry as its JSON text (a view
    into `body`, not parsed), or None when the answer has no such list. The whole body is
    checked to be JSON before anything is returned, so that a cut body is retried before
    one of its entries is delivered. One answer can hold every series of a metric: parsed
    whole, its Python objects cost several times its bytes. Any other body goes the way
    of `parse_body` (the same errors; a BOM skipped)."""
    try:
        return _QUERY.decode(body).data.result
    except msgspec.DecodeError:  # not JSON, or not this shape: as any other answer
        pass
    result = result_list(parse_body(body, status, endpoint, where))
    return None if result is None else [msgspec.Raw(orjson.dumps(entry)) for entry in result]


class _SeriesDoc(msgspec.Struct):
    series: list[msgspec.Raw] = msgspec.field(name="k6-serie")


class _Point(msgspec.Struct, gc=False):
    """A point's value, read only to be proved a number a double holds (or null): text
    kept as sent is copied as it is into the points and Parquet files, whose values are
    finite numbers (`formats.pointvalue`). `1e999`, a string, `true` fail here, and the
    answer is then read as any answer is (orjson refuses `1e999`, as before). Not tracked
    by the garbage collector (a number holds no cycle): each point decoded and freed
    costs ~20% less (a large harvest has 7.7 million)."""

    value: float | None = None


class _Serie(msgspec.Struct):
    """What the harvester reads of a serie; the rest is skipped (still checked to be JSON)."""

    metric_id: Any = None
    values: list[_Point] | None = None


_SERIES_DOC = msgspec.json.Decoder(_SeriesDoc)
_SERIE = msgspec.json.Decoder(_Serie)


@dataclass(frozen=True, slots=True)
class SeriesAnswer:
    """A v2 series answer as the harvester writes it: each serie's JSON text (its record's
    `data`), the `metric_id` each names (as text), and the points of the longest (None
    when no serie has a `values` list); for the Parquet writer, the series packed
    instead of their texts (`packed_series_answer`)."""

    texts: list[bytes] | list[msgspec.Raw]
    metric_ids: list[str]
    points: int | None
    packed: PackedSeries | None = None

    @property
    def count(self) -> int:
        """The series in the answer."""
        return len(self.texts) if self.packed is None else len(self.packed.counts)


def series_answer(
    body: bytes, status: int, endpoint: str, where: Callable[[], str]
) -> SeriesAnswer:
    """A `k6-serie` answer (a `Parser`). Each serie is kept as the text the API sent, a
    view into `body`: parsed into Python objects and encoded again, an answer cost ~3x
    the CPU of reading it, and ~5x its bytes in objects while it was held. The whole body
    is checked first (`_as_sent`); one that is not plainly whole UTF-8 JSON of that shape
    on one line is read as any answer instead (`parse_body`, `check_shape`: the same
    errors, the same retries), its series then encoded from their parsed form."""
    fast = _as_sent(body)
    if fast is not None:
        return fast
    doc = parse_body(body, status, endpoint, where)
    check_shape(doc, endpoint, where, ("k6-serie",), ())
    series: list[dict[str, Any]] = doc["k6-serie"]
    points = [len(s["values"]) for s in series if isinstance(s.get("values"), list)]
    return SeriesAnswer(
        [orjson.dumps(_past_double_first(s)) for s in series],
        [str(s.get("metric_id")) for s in series],
        max(points, default=None),
    )


def _past_double_first(serie: dict[str, Any]) -> dict[str, Any]:
    """`serie`, each point whose value no double holds (`1e999`, kept as sent by `as_sent`)
    written value first: the points and Parquet writers copy the values of points written
    `{"timestamp":...,"value":...}` as they are (their rule: a finite number or null), and
    take any other point from its parsed form, where such a value is null."""
    values = serie.get("values")
    if not isinstance(values, list) or not any(map(_past_double, values)):
        return serie
    return {**serie, "values": [{"value": p["value"], **p} if _past_double(p) else p
                                for p in values]}  # fmt: skip


def _past_double(point: Any) -> bool:
    return isinstance(point, dict) and isinstance(point.get("value"), orjson.Fragment)


def _as_sent(body: bytes) -> SeriesAnswer | None:
    """`series_answer` without parsing the series into objects, or None when the body is
    not plainly right. msgspec checks the JSON it skips but not its UTF-8 (checked here,
    as `scan` does), and a serie's text becomes a line, so it must hold no line break
    (JSON allows them between tokens: such an answer is encoded again). One thing orjson
    refuses passes: a number past a double's range (`1e999`) in a field not read here,
    kept as the API wrote it (a point's value is read: `_Point`)."""
    if not _plain(body):
        return None
    try:
        texts = _SERIES_DOC.decode(body).series
        series = [_SERIE.decode(text) for text in texts]
    except msgspec.DecodeError:
        return None
    points = [len(s.values) for s in series if s.values is not None]
    return SeriesAnswer(texts, [str(s.metric_id) for s in series], max(points, default=None))


def packed_series_answer(
    body: bytes, status: int, endpoint: str, where: Callable[[], str]
) -> SeriesAnswer:
    """`series_answer` for the Parquet writer (a `Parser`): the series packed
    (`packed.pack_series`) when the body is plainly right (`_plain`) and every serie of
    the shape the writer reads; as `series_answer` otherwise."""
    packed = pack_series(body) if _plain(body) else None
    if packed is None:
        return series_answer(body, status, endpoint, where)
    return SeriesAnswer([], [str(m) for m in packed.metric_ids], packed.longest, packed)


def _plain(body: bytes) -> bool:
    """No line break (a serie's text becomes a line) and whole UTF-8 (msgspec checks the
    JSON it skips, not its UTF-8: checked here, as `scan` does)."""
    if b"\n" in body or b"\r" in body:
        return False
    try:
        if not body.isascii():
            codecs.utf_8_decode(body, "strict", True)
    except UnicodeDecodeError:
        return False
    return True


def result_list(doc: Any) -> list[Any] | None:
    """A parsed v5 query answer's `data.result` list, or None when it has none."""
    data = doc.get("data") if isinstance(doc, dict) else None
    result = data.get("result") if isinstance(data, dict) else None
    return result if isinstance(result, list) else None


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
