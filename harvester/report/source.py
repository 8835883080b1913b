"""A run's series, streamed from whichever files its format left.

- `--format ndjson` (raw, any compression): the `series` records of `<id>.ndjson`, v2
  `k6-serie`s joined with their `metric` records by id, or v6 results with their `query`.
- `--format points`: `<id>.points.ndjson[.gz|.zst]`, one point a line.
- `--format parquet`: `<id>.parquet`, read one record batch at a time (pyarrow, the
  `[parquet]` extra); its tags JSON text, or a map in the first writer's files.

The other records (run, metrics, thresholds, checks, overview, summary) are in the
run's `ArchivedRun` file either way: `<id>.ndjson` itself, or the `<id>.meta.ndjson`
sidecar beside the points. Memory holds one line, or one batch, and one serie.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from ..archive import ArchivedRun, ArchiveError, Record
from ..compression import READ_ERRORS, open_data, published_data
from ..errors import ConfigError
from .series import Serie, SerieJoiner, from_v2, from_v6, join_rows, method_name, tags_key

#: Rows per record batch read from a Parquet file.
BATCH = 20_000
COLUMNS = ["metric", "tags", "method", "time", "value"]
INSTALL = "pip install 'k6-harvester[parquet]'"


def series_of(run: ArchivedRun, metrics: dict[str, Record]) -> Iterator[Serie]:
    """The run's series in file order (`metrics`: v2 `metric` records by id)."""
    if ".meta." not in run.path.name:
        yield from _raw(run, metrics)
        return
    folder = run.path.parent
    points = published_data(folder, run.run_id, "points.ndjson")
    if points is not None:
        yield from _points(points)
        return
    parquet = folder / f"{run.run_id}.parquet"
    if parquet.is_file():
        yield from _parquet(parquet)
        return
    raise ArchiveError(
        f"{run.path} has no points beside it ({run.run_id}.points.ndjson or "
        f"{run.run_id}.parquet): copy the whole archive, or harvest run {run.run_id} again"
    )


def _raw(run: ArchivedRun, metrics: dict[str, Record]) -> Iterator[Serie]:
    for record in run.records("series"):
        data, query = record["data"], record.get("query")
        serie = from_v6(query, data) if isinstance(query, dict) else from_v2(data, metrics)
        if serie is not None:
            yield serie


def _points(path: Path) -> Iterator[Serie]:
    def rows() -> Iterator[dict[str, Any]]:
        for number_, line in enumerate(lines, 1):
            if line.strip():
                try:
                    yield orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise ArchiveError(f"{path}:{number_}: not a JSON line ({exc})") from exc

    try:
        with open_data(path) as lines:
            yield from join_rows(rows())
    except READ_ERRORS as exc:
        raise ArchiveError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from exc


def _parquet(path: Path) -> Iterator[Serie]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(f"reading {path.name} needs pyarrow: {INSTALL}") from None
    joiner = SerieJoiner()
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH, columns=COLUMNS):
            for key, moments, values in _stretches(batch):
                if (done := joiner.extend(key, moments, values)) is not None:
                    yield done
    except (OSError, pa.ArrowException, orjson.JSONDecodeError) as exc:
        raise ArchiveError(f"cannot read {path}: {exc}") from exc
    if (last := joiner.end()) is not None:
        yield last


def _stretches(batch: Any) -> Iterator[tuple[Any, list[float], list[Any]]]:
    """A record batch cut where a serie ends (a key changes or time stops increasing),
    found by Arrow over whole columns: Python touches each stretch once, not each row."""
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
    columns = [batch.column("metric"), batch.column("method"), tags]
    ends = pc.less_equal(millis[1:], millis[:-1])
    for column in columns:
        ends = pc.or_(ends, pc.not_equal(column[1:], column[:-1]).fill_null(True))
    cuts = [0, *(i + 1 for i in pc.indices_nonzero(ends).to_pylist()), rows]
    moments = [m / 1000 for m in millis.to_pylist()]
    values = batch.column("value").to_pylist()
    names, methods = batch.column("metric").to_pylist(), batch.column("method").to_pylist()
    for start, stop in zip(cuts, cuts[1:], strict=False):
        key = (str(names[start]), tags_key(orjson.loads(tags[start].as_py() or "{}")),
               method_name(methods[start]))  # fmt: skip
        yield key, moments[start:stop], values[start:stop]


def _map_as_text(tags: Any) -> Any:
    """Tags as the first Parquet writer wrote them (a `map<string, string>`, which Arrow
    cannot compare) made the JSON text written since: an old archive still reads."""
    import pyarrow as pa

    pairs = tags.to_pylist()
    texts = [None if p is None else orjson.dumps(dict(p)).decode() for p in pairs]
    return pa.array(texts, pa.string())
