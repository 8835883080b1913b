"""One rule for a point's `value` in every format that flattens series (points, Parquet,
Singer), so they agree on what the API sends besides numbers.

A point's value is a finite number or null:

- a JSON number is kept as it is (an integer stays an integer in NDJSON);
- a string that spells a finite number (v5 answers carry `"1.5"`) is that number;
- null, `true`/`false`, any other string (`"abc"`, `"NaN"`, `"Infinity"`, `"-Inf"`), an
  object or a list is null: not a measurement a number column can hold. (Parquet's
  float64 could hold NaN and infinities, but NDJSON and Singer cannot, and SQL's
  aggregates would make every p95 NaN; null is what each format and DuckDB skip.)

`--format raw` keeps every value exactly as the API sent it.
"""

from __future__ import annotations

import math
import re
from typing import Any

#: A JSON-like number in a string: no `nan`, `inf`, `0x..` or `1_000`, which Python's
#: float() would also take.
_NUMBER = re.compile(r"\s*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*", re.ASCII)


def point_value(value: Any) -> int | float | None:
    """The value a point holds for what the API sent as its value."""
    if isinstance(value, bool):  # before int: bool is an int in Python
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        if not _NUMBER.fullmatch(value):
            return None
        value = float(value)
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None
