"""A run's series from its `<id>.parquet` (`--format parquet`), read one record batch at a
time with pyarrow (the `[parquet]` extra); its tags JSON text, or a map in the first
writer's files.

Arrow does the per-row work over whole columns: where a serie ends (a key changes or time
stops increasing), the times in seconds, the points with a finite value; Python touches
each stretch of one serie once, and takes its times and values as arrays of doubles
copied from Arrow's buffers, never a Python float a point.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from ..archive import ArchiveError
from ..errors import ConfigError
from .series import Serie, SerieJoiner, Wanted, method_name, tags_key

#: Rows per record batch read from a Parquet file.
BATCH = 20_000
COLUMNS = ["metric", "tags", "method", "time", "value"]
KEYS = ["metric", "tags", "method"]
INSTALL = "pip install 'k6-harvester[parquet]'"


def parquet_series(path: Path, wanted: Wanted | None = None) -> Iterator[Serie]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(f"reading {path.name} needs pyarrow: {INSTALL}") from None
    joiner = SerieJoiner(wanted)
    try:
        # The keys' text columns read as dictionaries (a serie's rows repeat one text: a
        # batch held 2 MB of tags text), pre_buffer and threads off: a long run's peak
        # RSS 226 -> 167 MB (each kept more of the file, or a heap a thread, than a batch).
        schema = pq.read_schema(path)  # the first writer's tags are a map: not text
        texts = [key for key in KEYS if pa.types.is_string(schema.field(key).type)]
        parquet = pq.ParquetFile(path, pre_buffer=False, read_dictionary=texts)
        for batch in parquet.iter_batches(batch_size=BATCH, columns=COLUMNS, use_threads=False):
            for stretch in _stretches(batch, joiner):
                if (done := joiner.extend(*stretch)) is not None:
                    yield done
    except (OSError, pa.ArrowException, orjson.JSONDecodeError) as exc:
        raise ArchiveError(f"cannot read {path}: {exc}") from exc
    if (last := joiner.end()) is not None:
        yield last


def _stretches(batch: Any, joiner: SerieJoiner) -> Iterator[tuple[Any, ...]]:
    """A record batch cut where a serie ends: (key, first and last time, the times and
    values of its points), the points left out of a serie `joiner` does not want."""
    import pyarrow as pa
    import pyarrow.compute as pc

    batch = batch.filter(pc.is_valid(batch.column("time")))
    rows = batch.num_rows
    if not rows:
        return
    millis = batch.column("time").cast(pa.int64())
    tags = batch.column("tags")  # a serie's tags as JSON text, compared as strings
    if pa.types.is_map(tags.type):
        tags = _map_as_text(tags)
    names, methods = batch.column("metric"), batch.column("method")
    ends = pc.less_equal(millis[1:], millis[:-1])
    for column in (names, methods, tags):
        if pa.types.is_dictionary(column.type):
            # its indices: two for one text (a dictionary may repeat one) only cut a
            # stretch that the joiner joins again (same key, time increasing)
            column = column.indices
        ends = pc.or_(ends, pc.not_equal(column[1:], column[:-1]).fill_null(True))
    cuts = [0, *(i + 1 for i in pc.indices_nonzero(ends).to_pylist()), rows]
    # seconds as Python's millis / 1000 gives them: a double divided, correctly rounded
    seconds = pc.divide(millis.cast(pa.float64()), 1000.0)
    values = batch.column("value").cast(pa.float64())
    finite = pc.and_(pc.is_valid(values), pc.is_finite(values)).fill_null(False)
    times, figures = _doubles(seconds.filter(finite)), _doubles(values.filter(finite))
    # points before each cut: where its stretch starts among the finite ones
    counted = pc.cumulative_sum(finite.cast(pa.int64()))
    kept = [0, *pc.take(counted, pa.array([cut - 1 for cut in cuts[1:]])).to_pylist()]
    every = _doubles(seconds)
    empty: array[float] = array("d")
    for n, (start, stop) in enumerate(zip(cuts, cuts[1:], strict=False)):
        key = (str(names[start].as_py()), tags_key(orjson.loads(tags[start].as_py() or "{}")),
               method_name(methods[start].as_py()))  # fmt: skip
        lo, hi = kept[n], kept[n + 1]
        points = (times[lo:hi], figures[lo:hi]) if joiner.wants(key) else (empty, empty)
        yield key, every[start], every[stop - 1], *points


def _doubles(column: Any) -> array[float]:
    """An Arrow double array without nulls as an array of doubles (its buffer, copied)."""
    out: array[float] = array("d")
    if len(column):
        data = memoryview(column.buffers()[1])
        out.frombytes(data[column.offset * 8 : (column.offset + len(column)) * 8])
    return out


def _map_as_text(tags: Any) -> Any:
    """Tags as the first Parquet writer wrote them (a `map<string, string>`, which Arrow
    cannot compare) made the JSON text written since: an old archive still reads."""
    import pyarrow as pa

    pairs = tags.to_pylist()
    texts = [None if p is None else orjson.dumps(dict(p)).decode() for p in pairs]
    return pa.array(texts, pa.string())
