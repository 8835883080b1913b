"""`--format parquet` (the `[parquet]` extra, pyarrow): a run's points as `<id>.parquet`.

The columns of `--format points`, typed:

| column | type |
|---|---|
| test_run_id, test_id, project_id | int64 (test_id, project_id nullable) |
| metric, metric_type, method | string |
| tags | map<string, string> |
| time | timestamp[ms, tz=UTC] |
| value | float64 (null for NaN and infinities) |

Tags are a map rather than a JSON string: DuckDB (`tags['url']`), Spark, BigQuery and
ClickHouse read a Parquet map natively, so a filter on one tag needs no JSON parsing;
both APIs give tag values as strings (v5 labels always are; v2 tags are stringified).
Rows are buffered up to `ROW_GROUP` and written as one row group, so memory holds one row
group, never a run; pages are zstd-compressed. The file is written into the sink's own
temporary file and published like every other (fsync, link, then the manifest).
"""

from __future__ import annotations

import importlib.util
from datetime import datetime
from typing import Any

from ..errors import ConfigError

ROW_GROUP = 100_000
INSTALL = "--format parquet needs pyarrow: pip install 'k6-harvester[parquet]'"


def require_pyarrow() -> None:
    """A one-line ConfigError when the extra is not installed."""
    if importlib.util.find_spec("pyarrow") is None:
        raise ConfigError(INSTALL)


def schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("test_run_id", pa.int64()),
            ("test_id", pa.int64()),
            ("project_id", pa.int64()),
            ("metric", pa.string()),
            ("metric_type", pa.string()),
            ("tags", pa.map_(pa.string(), pa.string())),
            ("method", pa.string()),
            ("time", pa.timestamp("ms", tz="UTC")),
            ("value", pa.float64()),
        ]
    )


class ParquetPoints:
    """Points into one Parquet file on `sink` (a writable binary file object), by row group."""

    def __init__(self, sink: Any) -> None:
        import pyarrow.parquet as pq

        self._schema = schema()
        self._writer = pq.ParquetWriter(sink, self._schema, compression="zstd")
        self._rows: list[dict[str, Any]] = []

    def add(self, rows: list[dict[str, Any]]) -> None:
        self._rows.extend(rows)
        if len(self._rows) >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if not self._rows:
            return
        for row in self._rows:
            row["tags"] = [(str(k), str(v)) for k, v in (row["tags"] or {}).items()]
            row["time"] = _moment(row["time"])
            value = row["value"]
            row["value"] = float(value) if isinstance(value, int | float) else None
        table = pa.Table.from_pylist(self._rows, schema=self._schema)
        self._writer.write_table(table, row_group_size=ROW_GROUP)
        self._rows = []

    def close(self) -> None:
        self._flush()
        self._writer.close()


def _moment(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    return datetime.fromisoformat(value)
