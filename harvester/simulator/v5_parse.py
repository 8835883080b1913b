"""The v5 metrics API's URL syntax, as the simulator parses it (rules from `v6.md`).

Function calls carry their arguments in the path, OData style:
`query_range_k6(query='increase by (name,status)',metric='http_reqs{status="200"}',step=5)`.
Strings are single-quoted with `''` for a quote inside; integers, `[1,2]` lists and
zoned RFC 3339 date-times are bare; arguments are separated by a comma and no space. The
caller percent-decodes the path first. A call that does not parse is `Unparsable` (the
API's 404: the URL matches no route); a literal of the wrong type is `Invalid` (400).
Query expressions (`method [by (l1,l2)]`, optionally wrapped in `sum|avg|min|max(...)
[by (...)]`) and label selectors (`name{label="v",other!~"re"}`) are parsed here too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

_CALL = re.compile(r"([a-z_0-9]+)\((.*)\)", re.S)
_KEY = re.compile(r"[a-z_]+")
_INT = re.compile(r"-?\d+")
_ZONED = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
_ZONELESS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?")
_INNER_TEXT = r"(?P<method>[a-z_]+(?:\([^()]*\))?)(?:\s+by\s*\((?P<by>[^()]*)\))?"
_INNER = re.compile(_INNER_TEXT)
_WRAPPED = re.compile(
    r"(?P<wrap>sum|avg|min|max)\((?P<inner>[a-z_]+(?:\([^()]*\))?(?:\s+by\s*\([^()]*\))?)\)"
    r"(?:\s+by\s*\((?P<outer>[^()]*)\))?"
)
_SELECTOR = re.compile(r"(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<matchers>.*)\})?", re.S)
_MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')

#: Required and optional keys of each function of a single run.
SIGNATURES: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "query_range_k6": (frozenset({"query", "metric"}), frozenset({"step", "start", "end"})),
    "query_aggregate_k6": (frozenset({"query", "metric"}), frozenset({"start", "end"})),
}
_TYPES = {"query": str, "metric": str, "step": int, "start": datetime, "end": datetime}


class Unparsable(ValueError):
    """The URL matches no route: the API answers 404."""


class Invalid(ValueError):
    """A well-formed URL with a bad value: the API answers 400 (`validation_error`)."""


Value = str | int | list[int] | datetime


@dataclass(frozen=True)
class Quoted:
    text: str


def _quoted(text: str, pos: int) -> tuple[str, int]:
    """The string starting after the opening quote at `pos`; returns it and the index
    after its closing quote."""
    out: list[str] = []
    i = pos
    while i < len(text):
        if text[i] == "'":
            if text.startswith("''", i):
                out.append("'")
                i += 2
                continue
            return "".join(out), i + 1
        out.append(text[i])
        i += 1
    raise Unparsable("an unterminated string")


def _bare(token: str) -> Value:
    if _INT.fullmatch(token):
        return int(token)
    if token.startswith("[") and token.endswith("]"):
        items = [t.strip() for t in token[1:-1].split(",")]
        if not items or not all(_INT.fullmatch(t) for t in items):
            raise Unparsable(f"a bad list {token!r}")
        return [int(t) for t in items]
    if _ZONED.fullmatch(token):
        return datetime.fromisoformat(token)
    raise Unparsable(f"a bad literal {token!r}")  # zone-less dates included


def parse_arguments(text: str) -> dict[str, Value | Quoted]:
    """`key='str',key=3,...` -> values; quoted strings come back as `Quoted`."""
    args: dict[str, Value | Quoted] = {}
    i = 0
    while i < len(text):
        key = _KEY.match(text, i)
        if key is None or not text.startswith("=", key.end()):
            raise Unparsable("an argument without key=")
        i = key.end() + 1
        value: Value | Quoted
        if text.startswith("'", i):
            raw, i = _quoted(text, i + 1)
            value = Quoted(raw)
        else:
            end = text.index("]", i) + 1 if text.startswith("[", i) else len(text)
            if end == len(text):
                comma = text.find(",", i)
                end = comma if comma >= 0 else len(text)
            value = _bare(text[i:end])
            i = end
        if key.group() in args:
            raise Unparsable(f"{key.group()} given twice")
        args[key.group()] = value
        if i < len(text):
            if text[i] != ",":
                raise Unparsable("arguments must be separated by a comma")
            i += 1
            if i == len(text):
                raise Unparsable("a trailing comma")
    return args


@dataclass(frozen=True)
class Call:
    """A parsed function call of a single run: query, metric and the optional keys."""

    function: str
    query: str
    metric: str
    step: int | None = None
    start: datetime | None = None
    end: datetime | None = None


def parse_call(segment: str) -> Call:
    """One decoded path segment such as `query_aggregate_k6(query='ratio',metric='checks')`."""
    match = _CALL.fullmatch(segment)
    if match is None or match.group(1) not in SIGNATURES:
        raise Unparsable(f"no function call in {segment!r}")
    function = match.group(1)
    required, optional = SIGNATURES[function]
    args = parse_arguments(match.group(2))
    if not required <= args.keys() or not args.keys() <= required | optional:
        raise Unparsable(f"{function} takes {sorted(required)} and optionally {sorted(optional)}")
    typed: dict[str, Value] = {}
    for key, value in args.items():
        plain: Value = value.text if isinstance(value, Quoted) else value
        want = _TYPES[key]
        if not isinstance(plain, want) or (want is int and isinstance(value, Quoted)):
            raise Invalid(f"{key}: expected {want.__name__}")
        typed[key] = plain
    step, start, end = typed.get("step"), typed.get("start"), typed.get("end")
    return Call(
        function,
        query=str(typed["query"]),
        metric=str(typed["metric"]),
        step=step if isinstance(step, int) else None,
        start=start if isinstance(start, datetime) else None,
        end=end if isinstance(end, datetime) else None,
    )


# --- query expressions and selectors ----------------------------------------------------


@dataclass(frozen=True)
class Expression:
    """`method [by (labels)]`, optionally inside `wrap(...) [by (outer)]`."""

    method: str
    by: tuple[str, ...] | None = None
    wrap: str | None = None
    outer_by: tuple[str, ...] | None = None


def _labels(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n) for n in names):
        raise Invalid(f"bad label list ({text})")
    return names


def parse_expression(text: str) -> Expression:
    text = text.strip()
    wrapped = _WRAPPED.fullmatch(text)
    if wrapped is not None:
        inner = parse_expression(wrapped.group("inner"))
        return Expression(inner.method, inner.by, wrapped["wrap"], _labels(wrapped["outer"]))
    match = _INNER.fullmatch(text)
    if match is None:
        raise Invalid(f"Metric query expression not understood: {text}")
    return Expression(match.group("method"), _labels(match.group("by")))


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str
    value: str

    def matches(self, labels: dict[str, str]) -> bool:
        have = labels.get(self.label, "")
        if self.op in ("=", "!="):
            return (have == self.value) == (self.op == "=")
        return bool(re.fullmatch(self.value, have)) == (self.op == "=~")


def parse_selector(text: str) -> tuple[str, tuple[Matcher, ...]]:
    """`http_reqs{status!="0",name=~"a.*"}` -> ("http_reqs", matchers); 400 without a name."""
    match = _SELECTOR.fullmatch(text.strip())
    if match is None:
        raise Invalid(f"a selector must start with a metric name: {text}")
    body = match.group("matchers") or ""
    matchers: list[Matcher] = []
    i = 0
    while i < len(body.rstrip()):
        m = _MATCHER.match(body, i)
        if m is None:
            raise Invalid(f"bad label matcher in {text}")
        value = m.group(3).replace('\\"', '"')
        matchers.append(Matcher(m.group(1), m.group(2), value))
        i = m.end()
    return match.group("name"), tuple(matchers)
