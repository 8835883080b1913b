"""A v2 serie's points made lines by bytes (`formats.points`): the checks that its
`values` array is plainly `[{"timestamp": "<text>", "value": <number or null>}, ...]`,
and the one replace that turns it into the points' lines.

Each check is a pass or two in C over the array (`translate`, `count`): parsed point by
point into Python objects, a large harvest's 7.7 million points cost more than the whole
raw harvest. An array of any other shape is parsed by the caller, its points converted
one by one (the same lines, slower).
"""

from __future__ import annotations

from typing import Any

import orjson

TIME_KEY = b',"time"'
FIRST = b'[{"timestamp":'
NEXT = b',{"timestamp":'
VALUE = b'","value":'
#: The keys of a point named, for the lines built from the bytes (`built_lines`): each
#: ends with its closing quote, and what follows (a `:`) is kept as it is. Searched for
#: 1.1x-1.6x as fast as with the `:` (this last byte is frequent in a serie's points).
NEXT_NAMED = b',{"timestamp"'
VALUE_NAMED = b'","value"'
#: The bytes that make JSON's structure (and its escapes), and `r` and `a`, which of JSON's
#: scalars only `true` and `false` hold: `checked_points` keeps only these.
STRUCTURE = b'"{}[],\\'
KEPT = STRUCTURE + b"ar"
NOT_KEPT = bytes(sorted(set(range(256)) - set(KEPT)))
#: What a point the fast path copies keeps: `{"timestamp":"<time>","value":<number or
#: null>}` (`pointvalue`'s rule: anything else is parsed and made null).
POINT_SHAPE = b'{"timestamp":"2026","value":1}'.translate(None, NOT_KEPT)
#: A converted pair's: `["<time>",<number or null>]`.
PAIR_SHAPE = b'["2026",1]'.translate(None, NOT_KEPT)
#: For a `values` text no one has read (`packed.SeriesTexts`): `e` and `E` kept too, so
#: that a number with an exponent fails the shape (`1e999` is no double) and the serie is
#: parsed, each value by `pointvalue.point_value`, as the harvester had made any value no
#: double holds. (A number of 309 digits or more, maybe past a double's ~1.8e308, never
#: comes as text: `packed.series_texts` sends its answer as lines.)
_NOT_NUMBER_KEPT = bytes(sorted(set(range(256)) - set(KEPT + b"eE")))
FINITE_SHAPE = b'{"timestamp":"2026","value":1}'.translate(None, _NOT_NUMBER_KEPT)


def built_lines(head: dict[str, Any], body: bytes, count: int) -> bytes | None:
    """The lines of the `count` points of `body` (checked by `checked_points` but for the
    first key of each point), after a first `\n`; None when a point has another key.

    One replace makes them: `body` with its `[` made a `,` and its `]` a newline is
    `,{"timestamp"<rest of a point>` N times, and each `,{"timestamp"` becomes a newline
    and the point's head up to `,"time"`. The shape check leaves `,{` nowhere but before
    a point (no string holds a `,` or `{`), so the lines are exactly as long as N
    replacements make them only when each point's first key is `"timestamp"` (its
    closing quote ends it): this length replaces a count of the key over the array (a
    pass over it as slow as the replace itself). What follows the key, its `:` (with any
    blanks valid JSON had there), follows `"time"` in the line."""
    prefix = orjson.dumps(head)[:-1] + TIME_KEY
    joiner = b"\n" + prefix
    source = b"".join((b",", memoryview(body)[1:-1], b"\n"))
    lines = source.replace(NEXT_NAMED, joiner)
    if len(lines) != len(source) + count * (len(joiner) - len(NEXT_NAMED)):
        return None
    return lines


def checked_points(body: bytes, *, keys: bool = True) -> int | None:
    """How many points `body` holds when it is exactly `[{"timestamp": <string>, "value":
    <number or null>}, ...]`, else None.

    `body` is part of a line orjson wrote, valid JSON from its `[` (a `"values":[` key, as
    no string holds an unescaped `"`) to its end, the first `]` after it. Its structural
    bytes (quotes, braces, brackets, commas, backslashes, and the `r` and `a` of `true`
    and `false`) being exactly those of N such points prove, with no backslash, no `:` or
    byte out of place in valid JSON, that each is an object of a string key, a string
    without them, a second key and a number or null; `{"timestamp":` starting the array
    and each `,{"timestamp":` after it (N-1) and N `","value":` (the only `","` of each)
    name the keys. Then the bytes `,{"timestamp":` and `","value":` are the structure
    alone, which the writers replace. (bytes.translate and count run at memory speed; a
    regex took 3x as long.) With `keys` False, for the lines built from these bytes, the
    first keys are not counted (the caller proves them, `_built_lines`) and N
    `","value"` name the second keys (`","` is only ever a time ending and a second key
    starting; the lines keep what follows the key as it is, its `:`), while Parquet's CSV
    replaces the whole `","value":` (`Serie.csv`), counted then."""
    if body == b"[]":
        return 0
    return _counted(body, body.translate(None, NOT_KEPT), POINT_SHAPE, keys=keys)


def finite_points(body: bytes) -> int | None:
    """`checked_points(body, keys=False)` for a `values` text as the API sent it, which
    no one has read (`packed.SeriesTexts`: msgspec proved it JSON, with no number of 309
    digits): each number must also be one a double holds, so it may have no exponent."""
    if body == b"[]":
        return 0
    return _counted(body, body.translate(None, _NOT_NUMBER_KEPT), FINITE_SHAPE, keys=False)


def _counted(body: bytes, shape: bytes, point: bytes, *, keys: bool) -> int | None:
    """The points of `body` when its `shape` is N times `point`'s and its keys are named
    (`checked_points`), else None."""
    count, extra = divmod(len(shape) - 1, len(point) + 1)
    if extra or shape != b"[" + point + (b"," + point) * (count - 1) + b"]":
        return None
    if not body.startswith(FIRST) or (keys and body.count(NEXT) != count - 1):
        return None
    return count if body.count(VALUE if keys else VALUE_NAMED) == count else None
