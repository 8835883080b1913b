"""The output format: one JSON object a line, and the messages that carry lines to the writer.

Every line is `{"type": T, "test_run_id": N, "data": OBJ}` with OBJ the API's object
unchanged. Each line is serialised once, here, with orjson.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

#: Record types, in the order they appear in a run's file.
RECORD_TYPES = (
    "run",
    "metric",
    "series",
    "threshold",
    "overview",
    "metric_detail",
    "error",
    "summary",
)


def encode(kind: str, run_id: int, items: Iterable[Any]) -> bytes:
    """Lines for `items`, all of one record type."""
    dumps = orjson.dumps
    newline = orjson.OPT_APPEND_NEWLINE
    return b"".join(
        [
            dumps({"type": kind, "test_run_id": run_id, "data": item}, option=newline)
            for item in items
        ]
    )


@dataclass(frozen=True, slots=True)
class Lines:
    """Encoded lines of one run, and how many records of each type they hold."""

    run_id: int
    data: bytes
    counts: Counter[str]


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
