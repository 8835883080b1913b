"""A points harvest sends its v2 series to the writer as texts (`packed.SeriesTexts`): each
serie's `values` as the API sent it, read by no one before the writer. The writer's byte
check (`point_bytes.finite_points`) must then prove each value a number a double holds, or
the serie is parsed point by point: the points are those of the parsed answer either way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from harvester.formats.points import PointsSplitter, Serie, read_line
from harvester.formats.pointvalue import point_value
from harvester.packed import (
    _DIGITS_AS_NINES,
    _SAMPLED_RUN,
    SAMPLE_STRIDE,
    SeriesTexts,
    has_past_double,
    series_texts,
)
from harvester.records import encode
from harvester.series_answers import texts_series_answer
from tests.harvest_helpers import parse_lines
from tests.test_points import METRIC, expected_points
from tests.test_series_as_sent import series_api
from tests.test_transport import harvest_one

LONG = b"1" * 400
T1, T2 = b'"2026-11-28T22:00:00Z"', b'"2026-11-28T22:00:01Z"'


def points_text(*values: bytes) -> bytes:
    """A `values` text of plain points, each value as given."""
    points = [b'{"timestamp":%s,"value":%s}' % (time, value)
              for time, value in zip((T1, T2) * len(values), values, strict=False)]  # fmt: skip
    return b"[" + b",".join(points) + b"]"


def split_texts(values: bytes, *, lines: bool = True) -> tuple[list[dict[str, Any]], Serie] | None:
    """The points lines a points writer makes of one serie of `values` text, and its Serie;
    None when its answer goes as lines instead."""
    body = b'{"k6-serie":[{"metric_id":"m1","method":"mean","values":%s}]}' % values
    batch = series_texts(body)
    if batch is None:
        return None
    header, pieces = batch.wire()  # as the pipe carries them: end to end
    received = SeriesTexts.from_wire(header, b"".join(pieces))
    splitter = PointsSplitter(5, lines=lines)
    list(splitter.split(encode("metric", 5, [METRIC])))
    [serie] = splitter.texts(received)
    assert splitter.points == serie.count
    # What the points file gets (`RunFiles`): the same lines, with no `Serie` made.
    writer = PointsSplitter(5, lines=lines)
    list(writer.split(encode("metric", 5, [METRIC])))
    assert b"".join(writer.text_chunks(received)) == serie.ndjson()
    assert writer.points == serie.count
    return parse_lines(serie.ndjson()), serie


def parsed_points(values: bytes) -> list[tuple[Any, Any]]:
    """The points as the parsed answer holds them (numbers no double holds are null)."""
    parsed = read_line(values)
    if not isinstance(parsed, list):
        return []
    return [(p.get("timestamp"), point_value(p.get("value"))) for p in parsed
            if isinstance(p, dict)]  # fmt: skip


@pytest.mark.parametrize(
    ("values", "fast"),
    [
        (points_text(b"1.5", b"-2", b"null", b"0", b"-0.25"), True),
        (points_text(b"1" * 25, b"-" + b"9" * 308), True),  # past 2**64, but doubles
        (points_text(b"1e999", b"2"), False),  # no double holds these
        (points_text(b"-2.5E+400"), False),
        (points_text(b"1.5e-7", b"2.5E+3"), False),  # doubles, read the slower way
        (points_text(b"true", b"1"), False),
        (points_text(b'"1.5"'), False),
        (b'[ {"timestamp" : "t1" , "value" : 1 } ]', False),
        (b'[{"timestamp":"t1","value" :1},{"timestamp" :"t2","value":2}]', True),
        (b'[{"value":1,"timestamp":"t1"}]', False),
        (b'[{"timestamp":"t1","value":1,"extra":2}]', False),
        (b'[{"timestamp":"e1","value":1}]', False),  # an `e` in a time: parsed
        (b'[{"timestamp":"t{","value":1},{"timestamp":"q,","value":2}]', False),
        (b'[{"timestamp":"x\\"y","value":1}]', False),
        (b"[3,{}]", False),
        (b"[]", True),
        (b"null", False),
        (b"5", False),  # no array: no points, and the run is not failed for it
        (b'{"a":1}', False),
        (b'"abc"', False),
    ],
)
def test_a_serie_sent_as_text_has_the_points_of_the_parsed_answer(
    values: bytes, fast: bool
) -> None:
    split = split_texts(values)
    assert split is not None
    got, serie = split
    assert got == expected_points({"method": "mean"}, parsed_points(values))
    assert (serie.pairs is None) == fast  # the bytes used as they are, or parsed


@pytest.mark.parametrize("lines", [True, False])
def test_a_text_s_first_keys_are_proven_whatever_the_splitter_builds(lines: bool) -> None:
    """`timestamp2` has the byte shape of `timestamp` (digits are not kept): only the
    replace that builds the lines tells them apart, so a text's lines are built even by
    a splitter that leaves lines to `Serie.chunks` (which would take the body on trust)."""
    values = b'[{"timestamp":%s,"value":1},{"timestamp2":%s,"value":2}]' % (T1, T2)
    split = split_texts(values, lines=lines)
    assert split is not None
    points, serie = split
    assert serie.pairs is not None  # parsed: the same points as the parsed answer
    assert [(p["time"], p["value"]) for p in points] == [(T1.strip(b'"').decode(), 1), (None, 2)]


@pytest.mark.parametrize(
    "values",
    [
        points_text(b"2", LONG),
        points_text(b"-" + LONG),
        points_text(b"0." + b"0" * 400 + b"1"),
        points_text(b"1" * 309 + b".5"),
        b'[{"timestamp":"%s","value":1}]' % (b"1" * 309),
    ],
)
def test_an_answer_with_309_digits_in_a_row_goes_as_lines(values: bytes) -> None:
    """A number that long may be past a double's range: the writer would copy it as it is."""
    assert split_texts(values) is None
    body = b'{"k6-serie":[{"metric_id":"m1","method":"mean","values":%s}]}' % values
    answer = texts_series_answer(body, 200, "series", lambda: "")
    assert answer.packed is None and answer.count == 1


@pytest.mark.parametrize("offset", range(2 * SAMPLE_STRIDE))
def test_309_digits_in_a_row_are_found_wherever_they_start(offset: int) -> None:
    """The sampled look (every 15th byte) finds a run of 309 at every place modulo its
    stride, and never takes a run of 308 (digits all around, every sample one)."""
    for run, found in ((b"7" * 309, True), (b"7" * 308, False)):
        body = b"x" * offset + run + b"x" * 40
        assert has_past_double(body) is found, (offset, len(run))
    dense = (b"1" * 308 + b",") * 4  # every sample a digit but every 309th byte
    assert not has_past_double(b"x" * offset + dense)


def test_a_body_of_digits_with_no_run_of_309_still_goes_as_texts() -> None:
    """Its samples are digits in a row, so the whole body is looked at, and passes."""
    values = points_text(*[b"1" * 300] * 40)
    body = b'{"k6-serie":[{"metric_id":"m1","method":"mean","values":%s}]}' % values
    assert _SAMPLED_RUN in body[::SAMPLE_STRIDE].translate(_DIGITS_AS_NINES)
    batch = series_texts(body)
    assert batch is not None and [bytes(text) for text in batch.values] == [values]


def test_a_points_harvest_reads_each_answer_once_its_points_left_as_text() -> None:
    values = points_text(b"1", b"2", b"3")
    body = (b'{"k6-serie":[{"metric_id":"a","method":"p95","values":%s},'
            b'{"metric_id":"b","values":null},{"metric_id":"c","method":null,'
            b'"values":[{"timestamp":"{{{","value":1}]}]}') % values  # fmt: skip
    answer = texts_series_answer(body, 200, "series", lambda: "")
    assert isinstance(answer.packed, SeriesTexts)
    assert answer.metric_ids == ["a", "b", "c"] and answer.count == 3
    assert answer.points == 3  # the longest serie's, in bytes: its batches are sized by it
    texts = [(m, method, bytes(text)) for m, method, text in answer.packed.texts()]
    assert texts == [("a", "p95", values), ("b", None, b"null"),
                     ("c", None, b'[{"timestamp":"{{{","value":1}]')]  # fmt: skip
    # What the lines path writes (the summary's bytes) is what these stand for.
    assert answer.packed.text_bytes == len(body) - len(b'{"k6-serie":[]}') - 2


@pytest.mark.parametrize(
    "body",
    [
        b'{"k6-serie":[{"metric_id":5,"values":[]}]}',  # an id that is no text
        b'{"k6-serie":[{"metric_id":"a","method":["p95"],"values":[]}]}',
        b'{"k6-serie":[{"metric_id":"a","values":[]}],"more":\n1}',  # a line break
        b'{"k6-serie":{"metric_id":"a"}}',
    ],
)
def test_an_answer_of_another_shape_goes_as_lines_as_before(body: bytes) -> None:
    try:
        answer = texts_series_answer(body, 200, "series", lambda: "")
    except Exception as exc:  # (the last: refused as any answer of the wrong shape)
        assert "k6-serie" in str(exc)
        return
    assert answer.packed is None and answer.texts


@pytest.mark.parametrize(
    ("number", "value"),
    [
        (b"1e999", None),
        (LONG, None),
        (b"-" + LONG, None),
        (b"0." + b"0" * 400 + b"1", 0.0),
        (b"1.5e-7", 1.5e-7),
        (b"1" * 25, float(b"1" * 25)),
        (b"null", None),
    ],
)
async def test_a_point_value_in_points_is_the_double_the_api_wrote_or_null(
    tmp_path: Path, number: bytes, value: float | None
) -> None:
    serie = b'{"metric_id":"a","method":"default","values":%s}' % points_text(number, b"2")
    async with series_api(b'{"k6-serie":[' + serie + b"]}") as base_url:
        assert await harvest_one(base_url, tmp_path, output_format="points") is None
    lines = (tmp_path / "1.points.ndjson").read_bytes().splitlines()
    assert [orjson.loads(line)["value"] for line in lines] == [value, 2] * 2


def test_a_serie_line_whose_values_is_no_array_has_no_points() -> None:
    """As lines too (an answer the harvester read whole): it failed the run with 'cannot
    write' (a TypeError iterating the number)."""
    splitter = PointsSplitter(5, lines=True)
    data = encode("series", 5, [{"metric_id": "m1", "values": 5}])
    [serie] = [item for item in splitter.split(data) if isinstance(item, Serie)]
    assert serie.count == 0 and serie.ndjson() == b""


@pytest.mark.parametrize("output_format", ["points", "parquet"])
async def test_a_run_whose_serie_has_a_number_for_values_is_harvested(
    tmp_path: Path, output_format: str
) -> None:
    if output_format == "parquet":
        pytest.importorskip("pyarrow")
    serie = b'{"metric_id":"a","method":"default","values":%s}' % points_text(b"1", b"2")
    odd = b'{"metric_id":"b","method":"default","values":5}'
    async with series_api(b'{"k6-serie":[' + serie + b"," + odd + b"]}") as base_url:
        assert await harvest_one(base_url, tmp_path, output_format=output_format) is None
