"""`--format parquet` (the `[parquet]` extra, pyarrow): a run's points as `<id>.parquet`.

The columns of `--format points`, typed:

| column | type |
|---|---|
| test_run_id, test_id, project_id | int64 (test_id, project_id nullable) |
| metric, metric_type, method | string |
| tags | string: the serie's tags as a JSON object (`{}` when none) |
| time | timestamp[ms, tz=UTC] |
| value | float64 (null when not a finite number: `pointvalue`) |

Tags are JSON text rather than a Parquet map: a map is a nested column whose every key
and value is a row of its own (8 million strings for a medium harvest's 1.9 million
points), two thirds of the encoding's CPU; the JSON text is one dictionary entry per
serie and an index per row, and every engine reads it in one function (DuckDB
`tags->>'url'`). The string columns go to the writer dictionary-encoded and the file keeps
no Arrow schema, so readers see plain strings.

A row group is built without a Python object per point: each serie's shared columns are
kept once, as the dictionary of a dictionary-encoded column whose indices repeat a
serie's entry for its rows (no `pyarrow.compute`: 12 MB resident). A v2 answer's series
come packed by the harvester (`add_packed`, `packed`): its values as doubles, taken as
they are, and its times as the time grids its series share, each converted once. Lines
of v2 series (an answer the harvester did not pack, `--format parquet` fed lines) are
read whole by msgspec (`add_lines`) into each point's time text and value,
gathered as the time and value columns, a run's time grid converted once (the cheapest
way found: Arrow's JSON reader cost 1.4x the CPU, the CSV way below as much as it);
when one of them is of another shape, the answer goes the splitter's way: plain v2
series as `time,value` lines (`Serie.csv`) read by Arrow's CSV reader, converted series
(v6, odd shapes) and what the readers cannot take (rare) by Python: times by
`datetime.fromisoformat`, null when none; values null unless numbers. A group is handed
on once `ROW_GROUP` rows are held (whole series, unless one alone is longer), to a
thread that encodes and writes it (`_encoder`) while the next is built, so memory holds
two row groups a run at most, never a run. Groups are small (16,384 rows) since each run in
flight holds one and several are built at once: Arrow's peak was 12 MB (medium) and 22
MB (large) with groups of 100,000, 5 MB so, for 1.1x the bytes on disk and 1.1x the
writer's CPU.
Pages are zstd-compressed. The file is written into the sink's own temporary file and
published like every other (fsync, link, then the manifest). With `--out DIR` all of
this runs in the writer process (`writeproc`), beside the event loop, not under its GIL.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from array import array
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import orjson

from ..allocator import fix_mmap_threshold
from ..errors import ConfigError
from ..packed import PackedSeries
from .parquet_columns import Grid, converted, from_csv, packed_columns, read_series, time_type
from .points import PointsSplitter, Serie

ROW_GROUP = 16_384
INSTALL = "--format parquet needs pyarrow: pip install 'k6-harvester[parquet]'"


#: The range of Parquet's int64 columns.
INT64 = (-(2**63), 2**63 - 1)


def require_pyarrow() -> None:
    """A one-line ConfigError when the extra is not installed."""
    if importlib.util.find_spec("pyarrow") is None:
        raise ConfigError(INSTALL)


def schema() -> Any:
    """The file's columns as a reader sees them."""
    import pyarrow as pa

    return pa.schema(
        [
            ("test_run_id", pa.int64()),
            ("test_id", pa.int64()),
            ("project_id", pa.int64()),
            ("metric", pa.string()),
            ("metric_type", pa.string()),
            ("tags", pa.string()),
            ("method", pa.string()),
            ("time", time_type()),
            ("value", pa.float64()),
        ]
    )


def _written_schema() -> Any:
    """The columns as handed to the writer: a serie's shared columns dictionary-encoded
    (each distinct entry once, a row its index), which Parquet stores as its own
    dictionary pages; the file keeps no Arrow schema, so readers see `schema()`."""
    import pyarrow as pa

    return pa.schema(
        [
            (f.name, pa.dictionary(pa.int32(), f.type) if f.name in SHARED else f.type)
            for f in schema()
        ]
    )


#: The columns a serie's points share, as `Serie.head` names them.
SHARED = ("test_run_id", "test_id", "project_id", "metric", "metric_type", "tags", "method")
IDS = ("test_run_id", "test_id", "project_id")


class ParquetPoints:
    """Points into one Parquet file on `sink` (a writable binary file object), by row group."""

    def __init__(self, sink: Any) -> None:
        # Arrow's buffers from the C library's malloc rather than pyarrow's default
        # mimalloc, chosen by Arrow when first used (so before the import): row groups are
        # built in whichever worker thread writes, mimalloc keeps what a thread freed for
        # that thread (`release_unused` frees only the caller's), glibc's `malloc_trim`
        # hands back every arena (medium harvest: 240 MB peak with mimalloc, 221 MB with
        # jemalloc, 190 MB so). A user's own choice stands.
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
        fix_mmap_threshold()  # and big buffers handed back when freed (`allocator`)
        # The class behind `pyarrow.parquet.ParquetWriter` (the same bytes, see the
        # tests): `pyarrow.parquet` imports `pyarrow.fs` (S3, TLS...), 13 MB resident.
        from pyarrow._parquet import ParquetWriter

        self._schema = _written_schema()
        #: A v2 serie's shared columns, converted, by (metric id, method); valid while
        #: the splitter knows the same metrics and run (`_v2_row`).
        self._v2_rows: dict[tuple[Any, Any], tuple[Any, ...]] = {}
        self._v2_known: tuple[int, Any, Any] = (0, None, None)
        self._grid = Grid()  # the times of the last serie read (`add_lines`)
        self._pending: Future[None] | None = None  # the row group at the encoder
        self._writer = ParquetWriter(
            sink,
            self._schema,
            compression="zstd",
            writer_engine_version="V2",
            store_schema=False,
            # Dictionary pages for the shared columns (given as dictionaries); times and
            # values plain: their dictionaries cost CPU and made the file 12% larger.
            use_dictionary=list(SHARED),
        )
        self._start()

    def _start(self) -> None:
        self._rows = 0
        self._heads: list[tuple[Any, ...]] = []  # one per serie of the group (`_row`)
        self._counts: list[int] = []  # each serie's rows
        self._serie_of_row = array("i")  # the index in `_heads` of each row's serie (int32)
        self._csv = bytearray()  # `time,value` lines of the plain series not yet parsed
        self._chunks: list[tuple[Any, Any]] = []  # (times, values) arrays, in row order

    def add(self, serie: Serie) -> None:
        if self._rows and self._rows + serie.count > ROW_GROUP:
            self.flush()  # groups of whole series, unless one alone is longer
        if not serie.count:
            return
        self._hold(_row(serie.head), serie.count)
        if serie.pairs is None:
            self._csv += serie.csv()
        else:
            self._parse_csv()
            self._chunks.append(converted(serie.pairs))
        if self._rows >= ROW_GROUP:
            self.flush()

    def add_lines(self, data: bytes | bytearray, splitter: PointsSplitter) -> bool:
        """A batch of v2 `series` lines (as `records` writes an answer's), read whole
        (`read_series`); False, with nothing taken, when a line is of another shape (v6,
        a value that is not a number, an id that is not text...): `add` then takes its
        series one by one, as `splitter` makes them."""
        parsed = read_series(data, self._grid)
        if parsed is None:
            return False
        self._add_batch(splitter, *parsed)
        return True

    def add_packed(self, packed: PackedSeries, splitter: PointsSplitter) -> None:
        """A batch of v2 series packed by the harvester (`packed`), as `add_lines` takes
        their lines."""
        self._add_batch(splitter, *packed_columns(packed, self._grid))

    def _add_batch(
        self,
        splitter: PointsSplitter,
        ids: Sequence[Any],
        methods: Sequence[Any],
        offsets: Sequence[int],
        times: Any,
        values: Any,
    ) -> None:
        """A batch's series: each one's metric id and method, its points' offsets
        (`offsets[i]:offsets[i+1]`) in the batch's time and value columns."""
        self._parse_csv()  # rows in order
        taken = 0  # the batch's rows already in `_chunks`

        def hand_on(end: int) -> None:
            nonlocal taken
            if end > taken:
                self._chunks.append(
                    (times.slice(taken, end - taken), values.slice(taken, end - taken))
                )
                taken = end

        for metric_id, method, start, end in zip(ids, methods, offsets, offsets[1:], strict=False):
            if self._rows and self._rows + end - start > ROW_GROUP:
                hand_on(start)
                self.flush()  # as `add`: groups of whole series
            if end > start:
                self._hold(self._v2_row(splitter, metric_id, method), end - start)
                splitter.points += end - start
            if self._rows >= ROW_GROUP:
                hand_on(end)
                self.flush()
        hand_on(offsets[-1])

    def _v2_row(self, splitter: PointsSplitter, metric_id: Any, method: Any) -> tuple[Any, ...]:
        """`_row` of a v2 serie's head, made once per metric and method of the run (a
        serie's conversions, once per row group, were a tenth of the writer's CPU); made
        again once the splitter has learnt of more metrics or of the run."""
        known = (len(splitter.metrics), splitter.test_id, splitter.project_id)
        if known != self._v2_known:
            self._v2_rows.clear()
            self._v2_known = known
        row = self._v2_rows.get((metric_id, method))
        if row is None:
            row = self._v2_rows[metric_id, method] = _row(splitter.v2_head(metric_id, method))
        return row

    def _hold(self, row: tuple[Any, ...], count: int) -> None:
        """A serie's rows joining the group (its times and values go to `_chunks`)."""
        self._serie_of_row += array("i", [len(self._heads)]) * count
        self._heads.append(row)
        self._counts.append(count)
        self._rows += count

    def _parse_csv(self) -> None:
        if self._csv:
            self._chunks.append(from_csv(bytes(self._csv)))
            self._csv = bytearray()

    def flush(self) -> None:
        """Hand the rows held on as a row group, to be encoded and written (`_encoder`)."""
        import pyarrow as pa

        self._parse_csv()
        if not self._rows:
            return
        shared = [f for f in self._schema if f.name in SHARED]
        columns = [self._shared(SHARED.index(f.name), f.type) for f in shared]
        columns.append(pa.chunked_array([times for times, _ in self._chunks], time_type()))
        columns.append(pa.chunked_array([values for _, values in self._chunks], pa.float64()))
        table = pa.Table.from_arrays(columns, schema=self._schema)
        self._wait()  # one group of a file at the encoder: memory holds two, never more
        self._pending = _encoder().submit(self._writer.write_table, table, ROW_GROUP)
        self._start()

    def _wait(self) -> None:
        """The group handed on last, written; its error (a full disk...) raised here."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def discard(self) -> None:
        """The run is aborted: wait for its group at the encoder (its error is moot), so
        that nothing writes into the sink once its owner has closed it."""
        with contextlib.suppress(Exception):
            self._wait()

    def _shared(self, index: int, kind: Any) -> Any:
        """A shared column of the group (the `index`th), dictionary-encoded: each distinct
        entry of its series once, each row the index of its serie's (null for none). Built
        without Arrow's compute functions (`take`...): `pyarrow.compute` costs 12 MB
        resident."""
        import pyarrow as pa

        known: dict[Any, int] = {}
        entries = [row[index] for row in self._heads]
        codes = [-1 if e is None else known.setdefault(e, len(known)) for e in entries]
        if not known:  # none for all, as a run's test_id without its run record
            return pa.nulls(self._rows, kind)
        dictionary = pa.array(list(known), kind.value_type)
        if len(known) == len(codes) and -1 not in codes:  # a serie each: its own index
            indices = self._serie_of_row
        elif codes.count(0) == len(codes):  # one for all, as a run's ids
            indices = array("i", [0]) * self._rows
        else:
            indices = array("i")
            for code, count in zip(codes, self._counts, strict=True):
                indices += array("i", [code]) * count
            if -1 in codes:  # rare (a serie without its metric among others): by Python
                nulls = pa.array([None if i < 0 else i for i in indices], pa.int32())
                return pa.DictionaryArray.from_arrays(nulls, dictionary)
        rows = pa.Array.from_buffers(pa.int32(), self._rows, [None, pa.py_buffer(indices)])
        return pa.DictionaryArray.from_arrays(rows, dictionary)

    def close(self) -> None:
        import pyarrow as pa

        self.flush()
        self._wait()
        self._writer.close()
        # malloc_trim (see __init__) once a run, not after each row group: what a group
        # freed the next one takes again, and each trim had it faulted in afresh (large
        # harvest: the writer process's CPU 4.93-5.02 -> 4.54 s, ~2 MB more resident).
        pa.default_memory_pool().release_unused()


@functools.cache
def _encoder() -> ThreadPoolExecutor:
    """The thread that encodes and writes row groups, every file's in turn (each file's
    in order). Arrow encodes, compresses and writes a group without the GIL (~40% of the
    writer's CPU), so it runs beside the thread that reads the next answers' series
    (msgspec, under the GIL) instead of after it: a second core's worth of work where
    the writer process is what a harvest waits for."""
    return ThreadPoolExecutor(1, thread_name_prefix="parquet-encode")


def _row(head: dict[str, Any]) -> tuple[Any, ...]:
    """A serie's shared columns (`SHARED`, in order) as the file holds them."""
    return tuple(
        _int(head[name])
        if name in IDS
        else _tags(head[name])
        if name == "tags"
        else _text(head[name])
        for name in SHARED
    )


def _int(value: Any) -> int | None:
    """An id as int64, or null: a digit string is a number, one past int64 is not. ASCII
    digits only: str.isdigit() takes '²' (then int() failed the writer, and the job) and
    '٣' (which int() read as 3)."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and INT64[0] <= value <= INT64[1]:
        return value
    return None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _tags(tags: Any) -> str:
    """A serie's tags as the JSON object the points lines hold (`{}` when not an object)."""
    return orjson.dumps(tags if isinstance(tags, dict) else {}).decode()
