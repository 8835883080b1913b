"""An answer's JSON read with each number as the API wrote it.

orjson reads almost every answer; it refuses a number no double holds (`1e999`, 400
digits) and rounds an integer past 2**64, though the text is whole JSON. Such answers
are read again by the standard library, the numbers kept as their text, so an archive
holds what the API sent (`answers.py` reads every answer through `loads`).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

from .errors import UnusableAnswer

#: A number of 20 digits or more where JSON has a value: orjson reads an integer past
#: 2**64 as a double (`1.1111111111111111e+24`, not what the API wrote), so an answer
#: holding one is read by `as_sent` instead.
_LONG_NUMBER = re.compile(rb"[:,\[]\s*-?[0-9]{20}")
#: Every digit as `9`, every other byte as `.`: a run of 20 digits is then a plain
#: substring, found at memchr's speed. The regex above, run on every answer, cost as much
#: as orjson's parse of it (~13 ms a 2 MB answer): it now runs only where such a run is.
_DIGITS_AS_NINE = bytes(57 if 48 <= byte <= 57 else 46 for byte in range(256))
_TWENTY_DIGITS = b"9" * 20


def loads(body: bytes | memoryview) -> Any:
    """A whole JSON text parsed, each number as the API wrote it: orjson, or `as_sent`
    when orjson would change a number or refuses one. `orjson.JSONDecodeError` when the
    text is no whole JSON; `UnusableAnswer` when it is, but holds text no UTF-8 can (half
    of a UTF-16 surrogate pair, `"\\ud800"`)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return as_sent(body, exc)
    return as_sent(body, None) if _has_long_number(body) else doc


def _has_long_number(body: bytes | memoryview) -> bool:
    text = body if isinstance(body, bytes) else bytes(body)
    return _TWENTY_DIGITS in text.translate(_DIGITS_AS_NINE) and bool(_LONG_NUMBER.search(text))


def as_sent(body: bytes | memoryview, failed: orjson.JSONDecodeError | None) -> Any:
    """The JSON text parsed by the standard library, where orjson refused it (`failed`) or
    would change a number: a number no double or 64-bit integer holds (`1e999`, 400
    digits) becomes an `orjson.Fragment` of its text, written again as sent. Text that is
    no JSON raises `failed` (orjson's words), the answer's cause as before."""
    try:
        doc = json.loads(bytes(body), parse_int=_integer, parse_float=_real,
                         parse_constant=_no_constant)  # fmt: skip
    except ValueError:  # UnicodeDecodeError and json's JSONDecodeError are ValueErrors
        if failed is None:
            raise
        raise failed from None
    try:
        orjson.dumps(doc)
    except orjson.JSONEncodeError as exc:
        raise UnusableAnswer(
            "answer holds text no UTF-8 can: half of a UTF-16 surrogate pair "
            f"({exc}); asking again would bring the same"
        ) from None
    return doc


def _integer(text: str) -> Any:
    # Compared by length first: int() refuses more than 4300 digits.
    if len(text) <= 20 and -(2**63) <= (value := int(text)) < 2**64:
        return value
    return orjson.Fragment(text)


def _real(text: str) -> Any:
    value = float(text)
    return value if math.isfinite(value) else orjson.Fragment(text)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
