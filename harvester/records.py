"""The output format: one JSON object a line, and the messages that carry lines to the writer.

Every line is `{"type": T, "test_run_id": N, "data": OBJ}` with OBJ the API's object
unchanged. Each line is serialised once, here, with orjson; a v2 serie's `data` is the
text the API sent (`encode_texts`).
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import orjson

from .packed import PackedSeries, SeriesTexts

#: Record types, in the order they appear in a run's file.
RECORD_TYPES = (
    "run",
    "metric",
    "series",
    "threshold_metric",
    "threshold",
    "overview",
    "metric_detail",
    "error",
    "summary",
)


def encode(kind: str, run_id: int, items: Iterable[Any]) -> bytes:
    """Lines for `items`, all of one record type.

    Each line goes into one growing buffer as soon as it is made: orjson hands back bytes
    with up to ten times their length allocated, so a list of them (for `b"".join`) held
    about 14 MB for a 2.3 MB batch of series; this holds the batch once (2.5 MB).
    """
    dumps = orjson.dumps
    newline = orjson.OPT_APPEND_NEWLINE
    out = io.BytesIO()
    write = out.write
    for item in items:
        write(dumps({"type": kind, "test_run_id": run_id, "data": item}, option=newline))
    return out.getvalue()


def encode_texts(kind: str, run_id: int, texts: Iterable[bytes | msgspec.Raw]) -> bytes:
    """Lines for objects given as their JSON text (one line each: no line break in it),
    each as `encode` writes it but its `data` the text unchanged: a serie as the API sent
    it (`series_answers.series_answer`), never parsed nor encoded again."""
    head = _head(kind, run_id)
    out = io.BytesIO()
    write = out.write
    for text in texts:
        write(head)
        write(text)
        write(b"}\n")
    return out.getvalue()


def _head(kind: str, run_id: int) -> bytes:
    """What comes before a record's `data` in its line."""
    return orjson.dumps({"type": kind, "test_run_id": run_id, "data": None})[: -len(b"null}")]


#: What a run's writer is given: lines, or a batch of series packed for Parquet or points.
Chunk = bytes | PackedSeries | SeriesTexts


@dataclass(frozen=True, slots=True)
class Lines:
    """Encoded lines of one run, and how many records of each type they hold; or, in
    place of their lines, a batch of its series packed for the Parquet or points writer."""

    run_id: int
    data: Chunk
    counts: Counter[str]

    @property
    def size(self) -> int:
        """Bytes of the lines (a packed batch's: of the lines it stands for)."""
        if isinstance(self.data, bytes):
            return len(self.data)
        count = len(self.data.metric_ids)
        return self.data.text_bytes + count * len(_head("series", self.run_id) + b"}\n")


@dataclass(frozen=True, slots=True)
class RunStarted:
    run_id: int


@dataclass(frozen=True, slots=True)
class RunFinished:
    """The run's records are all sent; the writer adds the summary line and commits."""

    run_id: int
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunFailed:
    run_id: int
    reason: str


Message = Lines | RunStarted | RunFinished | RunFailed
