"""A v2 series answer packed for the Parquet writer (`--format parquet`): each serie's
metric id, method and points counted, their values as doubles and their times as the
few time grids they share, instead of the series' JSON text.

Why: the writer (`formats.parquet`, in the writer process) had to read that text again,
point by point (msgspec, ~160 ns a point: half its main thread's CPU), to get what this
process had already read to check the answer. Reading the answer here into typed
objects (msgspec, times as text, a serie at a time: `pack_series`) and packing them
costs about what checking it and encoding its lines cost (~145 ns a point against
~140), and the pipe carries 8 bytes a point instead of ~50. The series of a run share
one time grid (the run's), so a batch's times go as its distinct grids, each converted
once in the writer (`parquet_columns.Grid`).

The rules are those of the writer's own reading of the lines (`parquet_columns
.read_series`): a point is an object whose `timestamp` is text or null and whose `value`
a number a double holds or null, a serie's `metric_id` and `method` text or null; any
other shape is not packed, and the answer goes as lines (`series_answers.series_answer`), read
by the writer as before.

The points writer (`--format points`) gets its own batch (`SeriesTexts`): each serie's
metric id and method, and its `values` array as the text the API sent, which the writer
turns into lines by bytes (`formats.points`). This process then reads an answer once
(msgspec, its points skipped, not decoded: ~2.4 ms a 2 MB answer, and ~0.1 ms to look
for a number of 309 digits, `has_past_double`), where reading each serie again, each
point into an object to prove its value a double, and encoding the series' record lines
cost ~9 ms, most of this process's work in a points harvest. The writer proves each
point's shape itself, and that no value has an exponent, as it must to copy them as
bytes.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import msgspec

#: `{"k6-serie":[...]}` around the series' texts in a compact answer (`text_bytes`).
WRAPPER = len(b'{"k6-serie":[]}')
#: Every digit as a `9` (no other byte is one): a run of 309 digits, `_PAST_DOUBLE`, is
#: then a plain substring (`series_texts`).
_DIGITS_AS_NINES = bytes.maketrans(b"012345678", b"9" * 9)
_PAST_DOUBLE = b"9" * 309
#: Every 15th byte of a body: 309 digits in a row hold at least 20 of them one after the
#: other (`has_past_double`), which a body with no such run seldom does.
SAMPLE_STRIDE = 15
_SAMPLED_RUN = b"9" * (len(_PAST_DOUBLE) // SAMPLE_STRIDE)


class _Point(msgspec.Struct, gc=False):
    """Not tracked by the garbage collector: one is made a point, and none holds another."""

    timestamp: str | None = None
    value: float | None = None


class _Serie(msgspec.Struct, gc=False):
    #: Its points' JSON text (a view of the body), read one serie at a time (`_POINTS`).
    values: msgspec.Raw = msgspec.Raw(b"null")
    metric_id: str | None = None
    method: str | None = None


class _Doc(msgspec.Struct, gc=False):
    series: list[_Serie] = msgspec.field(name="k6-serie")


_DOC = msgspec.json.Decoder(_Doc)
_POINTS = msgspec.json.Decoder(list[_Point] | None)


@dataclass(frozen=True, slots=True)
class PackedSeries:
    """A batch of v2 series as the Parquet writer takes them (`ParquetPoints.add_packed`)."""

    metric_ids: list[str | None]
    methods: list[str | None]
    counts: list[int]  # each serie's points (0 for a `values` null or missing)
    #: The batch's distinct time grids (each a serie's times as text, in order), and the
    #: one each serie has (its index in `grids`).
    grids: list[list[str | None]]
    grid_of: list[int]
    #: Every point's value in order, a double each; a null is 0.0 here and its place is
    #: in `nulls` (rare: the API's points are numbers).
    values: array[float] | bytes
    nulls: list[int]
    #: Points of the longest serie with a `values` list (None when none has one).
    longest: int | None
    #: The bytes of the series' JSON texts: exact for a compact answer (as the API sends
    #: it), about so otherwise (the summary's bytes of lines: `records.Lines.size`).
    text_bytes: int

    #: What the writer process is told the request holds (`writechild.serve`).
    WIRE_OP = "packed"

    @property
    def nbytes(self) -> int:
        """The bytes of its values, most of what it holds."""
        return memoryview(self.values).nbytes

    def wire(self) -> tuple[tuple[Any, ...], memoryview]:
        """What the writer process is sent: the header (pickled) and the values' bytes."""
        header = (self.metric_ids, self.methods, self.counts, self.grids, self.grid_of,
                  self.nulls, self.longest, self.text_bytes)  # fmt: skip
        return header, memoryview(self.values).cast("B")

    @classmethod
    def from_wire(cls, header: tuple[Any, ...], data: bytes) -> PackedSeries:
        """The batch `wire` gave, its values the bytes read (a buffer Arrow takes as is)."""
        ids, methods, counts, grids, grid_of, nulls, longest, text_bytes = header
        return cls(ids, methods, counts, grids, grid_of, data, nulls, longest, text_bytes)


def pack_series(body: bytes) -> PackedSeries | None:
    """The batch of a `k6-serie` answer's body, or None when any of it is of another shape
    (or not JSON): then it goes as lines.

    The body is read in two steps: its series with their points' text left as it is
    (a view of the body), then each serie's points. Read whole at once, an answer's
    points were all objects at the same time, on top of its body (a time text and a
    point a point, ~140 bytes: 13 MB for a 5 MB answer of 96,000 points), and this
    process's peak with `--format parquet` held them (large bench: 54-59 -> 49-50 MB
    anonymous); a serie's at a time they are 0.9 MB, for the same CPU (~21 ms)."""
    try:
        series = _DOC.decode(body).series
    except msgspec.DecodeError:
        return None
    grids: list[list[str | None]] = []
    grid_of: list[int] = []
    counts: list[int] = []
    values: array[float] = array("d")
    nulls: list[int] = []
    longest: int | None = None
    for serie in series:
        try:
            points = _POINTS.decode(serie.values)
        except msgspec.DecodeError:
            return None
        if points is None:
            points = []
        else:
            longest = max(longest or 0, len(points))
        counts.append(len(points))
        texts = [p.timestamp for p in points]
        grid_of.append(_grid(grids, texts))
        numbers = [p.value for p in points]
        try:
            values.fromlist(cast(list[float], numbers))  # whole or not at all
        except TypeError:  # a null among them
            start = len(values)
            nulls += [start + i for i, number in enumerate(numbers) if number is None]
            values.fromlist([0.0 if number is None else number for number in numbers])
    return PackedSeries(
        [s.metric_id for s in series],
        [s.method for s in series],
        counts,
        grids,
        grid_of,
        values,
        nulls,
        longest,
        len(body) - WRAPPER - max(len(series) - 1, 0),
    )


def _grid(grids: list[list[str | None]], texts: list[str | None]) -> int:
    """The index of `texts` in `grids` (added when new): most often the last one."""
    if grids and grids[-1] == texts:
        return len(grids) - 1
    try:
        return grids.index(texts)
    except ValueError:
        grids.append(texts)
        return len(grids) - 1


#: A serie's `values` text as `SeriesTexts` holds it: a view of an answer's body (msgspec's
#: `Raw`, in the harvester) or of the buffer the writer process read a batch into.
Text = bytes | memoryview | msgspec.Raw


@dataclass(frozen=True, slots=True)
class SeriesTexts:
    """A batch of v2 series as the points writer takes them (`PointsSplitter.text_chunks`):
    each serie's metric id and method, and its `values` text (the API's, unread: `null`
    when it had none).

    The texts are views, never copies: of the answer's body here (sent down the pipe as
    they are, `WriterProcess`'s one `writev`), of the one buffer the writer process read
    them into there (`from_wire`). Joined here first, they were a copy of every answer
    (~410 MB at large: ~6% of the harvester's main thread, py-spy)."""

    metric_ids: list[str | None]
    methods: list[str | None]
    values: list[Text]
    #: Points of the longest serie with a `values` array (None when none has one): its
    #: `{` counted, the serie longest in bytes (only the batches' sizes depend on it).
    longest: int | None
    #: The bytes of the series' JSON texts (`PackedSeries.text_bytes`).
    text_bytes: int

    #: What the writer process is told the request holds (`writechild.serve`).
    WIRE_OP = "texts"

    @property
    def nbytes(self) -> int:
        return sum(len(text) for text in self.values)

    def texts(self) -> Iterator[tuple[str | None, str | None, memoryview]]:
        """Each serie's metric id, method and `values` text."""
        for metric_id, method, text in zip(self.metric_ids, self.methods, self.values,
                                           strict=True):  # fmt: skip
            yield metric_id, method, memoryview(text)

    def wire(self) -> tuple[tuple[Any, ...], list[Text]]:
        """What the writer process is sent: the header (pickled) and the texts, end to end."""
        lengths = [len(text) for text in self.values]
        header = (self.metric_ids, self.methods, lengths, self.longest, self.text_bytes)
        return header, self.values

    @classmethod
    def from_wire(cls, header: tuple[Any, ...], data: bytes | bytearray) -> SeriesTexts:
        """The batch `wire` gave, its texts views of `data` (the texts read, end to end)."""
        metric_ids, methods, lengths, longest, text_bytes = header
        values: list[Text] = []
        start = 0
        with memoryview(data) as view:
            for length in lengths:
                values.append(view[start : start + length])
                start += length
        return cls(metric_ids, methods, values, longest, text_bytes)


def has_past_double(body: bytes) -> bool:
    """Whether `body` holds 309 digits in a row.

    Every 15th byte first (`SAMPLE_STRIDE`): a run of 309 digits spans 20 or 21 multiples
    of 15, so without 20 digits in a row among them `body` has no such run (~0.1 ms a 1.6
    MB answer). Only when they have is the whole body looked at (~0.75 ms, the translate
    that was this process's largest cost after the answers' reading: py-spy, large)."""
    if _SAMPLED_RUN not in body[::SAMPLE_STRIDE].translate(_DIGITS_AS_NINES):
        return False
    return _PAST_DOUBLE in body.translate(_DIGITS_AS_NINES)


def series_texts(body: bytes) -> SeriesTexts | None:
    """The batch of a `k6-serie` answer's body, or None when it is not JSON, a serie's
    `metric_id` or `method` is not text or null, or it holds 309 digits in a row (then it
    goes as lines).

    Such digits may be a number past a double's range (~1.8e308), which the points writer
    must not copy as it is: an answer that holds one is read point by point, as any answer
    was, its value null. Looked for here (`has_past_double`), not by the writer a serie
    at a time: the writers do most of a points harvest's work, and one pass more there
    made the harvest ~6% longer (large, 8 interleaved runs)."""
    if has_past_double(body):
        return None
    try:
        series = _DOC.decode(body).series
    except msgspec.DecodeError:
        return None
    values: list[Text] = [serie.values for serie in series]
    arrays = [text for text in values if bytes(memoryview(text)[:1]) == b"["]
    longest = bytes(max(arrays, key=len)).count(b"{") if arrays else None
    return SeriesTexts(
        [serie.metric_id for serie in series],
        [serie.method for serie in series],
        values,
        longest,
        len(body) - WRAPPER - max(len(series) - 1, 0),
    )
