"""The series answers, read without parsing each serie into Python objects: v2's `k6-serie`
list and v5's `data.result`, each serie kept as the JSON text the API sent (msgspec finds
where each begins and ends, and checks the whole body is JSON first).

One answer can hold every series of a metric: parsed and encoded again, it cost several
times its bytes in objects and ~3x the CPU of reading it. A body that is not plainly whole
UTF-8 JSON of the expected shape is read as any answer is (`answers.parse_body`,
`answers.check_shape`: the same errors, the same retries).
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson

from .answers import check_shape, parse_body
from .packed import PackedSeries, SeriesTexts, pack_series, series_texts


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
    when no serie has a `values` list); for the Parquet and points writers, the series
    packed instead of their texts (`packed_series_answer`, `texts_series_answer`)."""

    texts: list[bytes] | list[msgspec.Raw]
    metric_ids: list[str]
    points: int | None
    packed: PackedSeries | SeriesTexts | None = None

    @property
    def count(self) -> int:
        """The series in the answer."""
        return len(self.texts) if self.packed is None else len(self.packed.metric_ids)


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


def texts_series_answer(
    body: bytes, status: int, endpoint: str, where: Callable[[], str]
) -> SeriesAnswer:
    """`series_answer` for the points writer (a `Parser`): each serie's `values` left as
    the text the API sent (`packed.series_texts`) when the body is plainly right
    (`_plain`) and each serie's `metric_id` and `method` text or null; as `series_answer`
    otherwise."""
    texts = series_texts(body) if _plain(body) else None
    if texts is None:
        return series_answer(body, status, endpoint, where)
    return SeriesAnswer([], [str(m) for m in texts.metric_ids], texts.longest, texts)


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
