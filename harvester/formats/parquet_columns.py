"""Parquet's time and value columns from a run's series (`parquet.ParquetPoints`): v2
series packed by the harvester (`packed_columns`) or read from their lines by msgspec
(`read_series`), a run's time grid converted once (`Grid`), the
splitter's `time,value` lines by Arrow's CSV reader (`from_csv`), and converted pairs
(`converted`); every time by `moments.utc_moment`'s rule, every value by `pointvalue`'s.
pyarrow is imported when first needed (`--format parquet` only).
"""

from __future__ import annotations

import itertools
from array import array
from typing import Any

import msgspec
import orjson

from ..moments import utc_moment
from ..packed import PackedSeries
from .points import SERIES
from .pointvalue import point_value


def time_type() -> Any:
    import pyarrow as pa

    return pa.timestamp("ms", tz="UTC")


class _Point(msgspec.Struct, gc=False):
    """A v2 point as `add_lines` reads it: its time kept as text (a serie's times are
    those of the run's grid, converted once: `Grid`), its value a double or null; any
    other value (`true`, `"1.5"`, `1e999`) fails the line, as any other key is skipped.
    Not tracked by the garbage collector: one is made a point, and none holds another."""

    timestamp: str | None = None
    value: float | None = None


class _V2Serie(msgspec.Struct, gc=False):
    values: list[_Point] = []
    metric_id: str | None = None
    method: str | None = None


class _SeriesLine(msgspec.Struct, gc=False):
    type: str
    data: _V2Serie
    query: msgspec.Raw | None = None  # a v6 line's: its series go the splitter's way


_SERIES_LINE = msgspec.json.Decoder(_SeriesLine)


class Grid:
    """The times of the last serie read and their column: a run's series share its time
    grid, so a serie's times are compared as text (a list's `==`) and converted only when
    they differ from the one before, by the rule every point's time follows
    (`moments.utc_moment`: ISO 8601 text, else null)."""

    def __init__(self) -> None:
        self._texts: list[str | None] = []
        self._times: Any = None

    def times(self, texts: list[str | None]) -> Any:
        if self._times is None or texts != self._texts:
            import pyarrow as pa

            self._times = pa.array([utc_moment(t) for t in texts], time_type())
            self._texts = texts
        return self._times


def read_series(
    data: bytes | bytearray, grid: Grid
) -> tuple[list[Any], list[Any], list[int], Any, Any] | None:
    """Each serie's metric id and method, its points' offsets (`offsets[i]:offsets[i+1]`)
    and the points' times and values, of lines that are all v2 series whose points are
    objects with a `timestamp` text and a number or null `value`; None otherwise.

    msgspec reads each line into small typed objects (its time text and value), which
    are gathered as columns; the times go by `grid`. A medium harvest's 1.9 million
    points cost ~0.40 s of CPU so, against ~0.57 s in Arrow's JSON reader (whose C++
    tokenizer builds a nested list of structs), and the splitter's way more still. Any
    other shape (a value `true` or `"1.5"`, a point that is not an object, an id that is
    a number, a v6 line) fails, and the lines go the splitter's way, point by point where
    needed (`pointvalue`'s rule)."""
    import pyarrow as pa

    if not data.startswith(SERIES):
        return None
    ids: list[Any] = []
    methods: list[Any] = []
    offsets = [0]
    times: list[Any] = []
    values = _Values()
    view = memoryview(data)
    pos, size = 0, len(data)
    try:
        while pos < size:
            end = data.find(b"\n", pos) + 1 or size
            line = _SERIES_LINE.decode(view[pos:end])
            pos = end
            if line.type != "series" or line.query is not None:
                return None
            serie = line.data
            ids.append(serie.metric_id)
            methods.append(serie.method)
            offsets.append(offsets[-1] + len(serie.values))
            if serie.values:
                values.add([p.value for p in serie.values])
                times.append(grid.times([p.timestamp for p in serie.values]))
        column = pa.concat_arrays(times) if times else pa.array([], time_type())
        return ids, methods, offsets, column, values.column()
    except (msgspec.DecodeError, pa.ArrowException):  # a time past what ms hold...
        return None


def packed_columns(
    packed: PackedSeries, grid: Grid
) -> tuple[list[Any], list[Any], list[int], Any, Any]:
    """`read_series`' columns of a batch the harvester packed (`packed`): its values'
    doubles taken as they are (no copy), each distinct time grid converted (`grid`)."""
    import pyarrow as pa

    offsets = list(itertools.accumulate(packed.counts, initial=0))
    grids = [grid.times(texts) if texts else None for texts in packed.grids]
    times = [grids[g] for g, count in zip(packed.grid_of, packed.counts, strict=True) if count]
    column = pa.concat_arrays(times) if times else pa.array([], time_type())
    doubles = pa.py_buffer(packed.values)
    if packed.nulls:  # rare: by Python, as `_Values` does
        numbers: list[Any] = memoryview(doubles).cast("d").tolist()
        for index in packed.nulls:
            numbers[index] = None
        values = pa.array(numbers, pa.float64())
    else:
        values = pa.Array.from_buffers(pa.float64(), offsets[-1], [None, doubles])
    return packed.metric_ids, packed.methods, offsets, column, values


class _Values:
    """A batch's values as doubles (`array`), a column without a Python float held a
    point nor Arrow's look at each (`pa.array` of a list cost 2x); as a list from the
    first null on (rare: an API's points are numbers)."""

    def __init__(self) -> None:
        self._doubles: array[float] | None = array("d")
        self._list: list[Any] = []

    def add(self, values: list[Any]) -> None:
        """A serie's values: floats, or None for null."""
        if self._doubles is not None:
            try:
                self._doubles.fromlist(values)  # whole or not at all
                return
            except TypeError:  # a null among them
                self._list = self._doubles.tolist()
                self._doubles = None
        self._list += values

    def column(self) -> Any:
        import pyarrow as pa

        if self._doubles is None:
            return pa.array(self._list, pa.float64())
        buffer = pa.py_buffer(self._doubles)
        return pa.Array.from_buffers(pa.float64(), len(self._doubles), [None, buffer])


def from_csv(lines: bytes) -> tuple[Any, Any]:
    """(times, values) arrays of `time,value` lines."""
    import pyarrow as pa
    import pyarrow.csv as pc

    try:
        table = pc.read_csv(
            pa.py_buffer(lines),
            read_options=pc.ReadOptions(
                use_threads=False, column_names=["time", "value"], block_size=len(lines) + 1
            ),
            convert_options=pc.ConvertOptions(
                column_types={"time": time_type(), "value": pa.float64()}, null_values=["null"]
            ),
        )
    except pa.ArrowInvalid:  # a time or value Arrow cannot take (true, a time zone name...)
        pairs = [line.rsplit(b",", 1) for line in lines.splitlines()]
        return converted([(time.decode(), orjson.loads(value)) for time, value in pairs])
    return table.column("time").combine_chunks(), table.column("value").combine_chunks()


def converted(pairs: list[tuple[Any, Any]]) -> tuple[Any, Any]:
    import pyarrow as pa

    times = pa.array([utc_moment(time) for time, _ in pairs], time_type())
    return times, pa.array([_float(value) for _, value in pairs], pa.float64())


def _float(value: Any) -> float | None:
    number = point_value(value)
    return None if number is None else float(number)
