"""Text from flags, the environment or a TOML file -> one checked value.

Every setting goes through one of these parsers whatever its origin, so `--rate nan`,
`HARVESTER_RATE=nan` and `rate = nan` in the file meet the same check. A parser takes the
raw value (a `str` from a flag or the environment, any TOML type from the file) and
returns the typed value, or raises `ValueError` saying what is wrong and what to write;
`config.py` adds where the value came from. The parsers are idempotent (a parsed value
parses to itself), so `Settings` can run them again on values built in Python.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from .errors import ConfigError

#: k6 Cloud ids are 64-bit signed integers.
INT64_MAX = 2**63 - 1
# ASCII only: str.isdigit() and int() also accept '²' or '٣', which no id is made of.
_WHOLE = re.compile(r"[+-]?[0-9]+", re.ASCII)
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
#: A run, test or project as the k6 web app shows it: https://app.k6.io/runs/123456 or
#: https://NAME.grafana.net/a/k6-app/runs/123456 (any query or fragment after it).
_WEB_URL = re.compile(
    r"(?:https?://)?[^/\s]+/(?:\S*/)?(?P<kind>runs|tests|projects)/(?P<id>[0-9]+)/?(?:[?#]\S*)?",
    re.ASCII,
)
_AGE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw])\s*", re.ASCII | re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_WHEN_HELP = "use an ISO date (2026-01-31), a date and time (2026-01-31T12:00:00Z) or an age"

Parser = Callable[[Any], Any]


def text(raw: Any) -> str:
    """A string as it is; TOML's `false` or `5` where text belongs are refused, not
    turned into a folder named `False`."""
    if not isinstance(raw, str):
        raise ValueError(f"must be text in quotes, not a {_toml_type(raw)}")
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:  # a byte the locale could not decode (`--out $'o\xff'`)
        raise ValueError(
            "is not UTF-8: the state file, the manifests and the log keep it as text; "
            "use a name in UTF-8"
        ) from None
    return raw


def nonempty(raw: Any) -> str:
    value = text(raw).strip()
    if not value:
        raise ValueError("must not be empty")
    return value


def path(raw: Any) -> str:
    """A file or directory; `~` is expanded (a shell does not expand it in a config file,
    an environment variable or `--out=~/x`). `-` (stdin/stdout) stays `-`."""
    value = nonempty(raw)
    if "\0" in value:  # (TOML's "\u0000": the OS refuses it, an internal error then)
        raise ValueError("holds a NUL character, which no path can")
    return value if value == "-" else os.path.expanduser(value)


#: `scheme://...`: a URL, not a path (a folder named `s3:` is never what was meant).
URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
#: Where --out may point besides a directory and `-`.
OUT_SCHEMES = frozenset({"s3"})


def out_target(raw: Any) -> str:
    """--out: a directory, `-` for stdout, or an object-store URL of a scheme we write to;
    any other `scheme://` is refused rather than taken for a relative path."""
    value = path(raw)
    scheme = URL_SCHEME.match(value)
    if scheme and scheme.group(1).lower() not in OUT_SCHEMES:
        raise ValueError(
            f"is a URL of scheme {scheme.group(1)}, which harvester does not write to; "
            "give a directory, s3://BUCKET/PREFIX/, or - for stdout"
        )
    return value


def file_mode(raw: Any) -> str:
    """An octal file mode such as 0600 or 0640, or `umask` to honour the umask. The owner
    must be able to read the files: the harvester reads its archive back (resume, seal,
    verify, report), and 0000 or 0200 made an archive its own user could not open."""
    value = nonempty(raw)
    if value != "umask" and not re.fullmatch(r"0?[0-7]{3}", value, re.ASCII):
        raise ValueError("must be an octal mode such as 0600 or 0640, or umask")
    if value != "umask" and not int(value, 8) & 0o400:
        raise ValueError(
            "leaves the archive's files unreadable to their owner (the harvester reads them "
            "back: resume, verify, report); give 0600, 0640 or umask"
        )
    return value


def optional(parse: Parser) -> Parser:
    return lambda raw: None if raw is None else parse(raw)


def choice(*options: str) -> Parser:
    def parse(raw: Any) -> str:
        value = text(raw).strip().lower()
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}{did_you_mean(value, options)}")
        return value

    return parse


def boolean(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    words = {"1": True, "true": True, "yes": True, "on": True,
             "0": False, "false": False, "no": False, "off": False, "": False}  # fmt: skip
    if isinstance(raw, str) and raw.strip().lower() in words:
        return words[raw.strip().lower()]
    raise ValueError("must be true or false")


def whole(minimum: int = -INT64_MAX - 1, maximum: int = INT64_MAX) -> Parser:
    """A whole number in [minimum, maximum], written in ASCII digits."""

    def parse(raw: Any) -> int:
        if isinstance(raw, str) and _WHOLE.fullmatch(raw.strip()):
            raw = int(raw.strip())
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ValueError("is not a whole number")
        return int(_within(raw, minimum, maximum))

    return parse


def number(
    minimum: float = -math.inf,
    *,
    above: float | None = None,
    maximum: float = math.inf,
    hint: str = "",
) -> Parser:
    """A finite number, at least `minimum` (or greater than `above`) and at most `maximum`;
    `hint` follows the complaint of a number out of range. nan and inf are refused: every
    comparison with nan is false, so it would slip past any bound."""

    def parse(raw: Any) -> float:
        if isinstance(raw, str) and _NUMBER.fullmatch(raw.strip()):
            raw = float(raw.strip())
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise ValueError("is not a number")
        value = float(raw)
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        try:
            if above is not None and value <= above:
                raise ValueError(f"must be greater than {_show(above)}")
            return float(_within(value, minimum, maximum))
        except ValueError as exc:
            raise ValueError(f"{exc}{hint}") from None

    return parse


def _within(value: Any, minimum: float, maximum: float) -> Any:
    if value < minimum:
        raise ValueError(f"must be at least {_show(minimum)}")
    if value > maximum:
        raise ValueError(f"must be at most {_show(maximum)}")
    return value


def _show(bound: float) -> str:
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


def resource_id(kind: str) -> Parser:
    """A positive 64-bit id, or the web app's URL of that `kind` (runs, tests, projects)."""
    noun = kind.rstrip("s")

    def parse(raw: Any) -> int:
        if isinstance(raw, str) and (url := _WEB_URL.fullmatch(raw.strip())):
            if url["kind"] != kind:
                raise ValueError(f"is the URL of a {url['kind'].rstrip('s')}, not of a {noun}")
            raw = url["id"]
        try:
            return int(whole(1, INT64_MAX)(raw))
        except ValueError:
            raise ValueError(
                f"is not a {noun} id: write a whole number from 1 to {INT64_MAX} "
                f"or the {noun}'s URL (https://app.k6.io/{kind}/123456)"
            ) from None

    return parse


def many(parse: Parser) -> Parser:
    """A list: TOML's array, repeated flags, or one string split at commas and spaces
    (the environment)."""

    def parse_all(raw: Any) -> tuple[Any, ...]:
        items: Iterable[Any]
        if isinstance(raw, list | tuple):
            items = raw
        elif isinstance(raw, str):
            items = [part for part in raw.replace(",", " ").split() if part]
        else:
            items = [raw]
        items = list(items)
        parsed = []
        for item in items:
            try:
                parsed.append(parse(item))
            except ValueError as exc:
                if len(items) == 1:
                    raise
                # The list is shown whole before this: name the item that is wrong.
                raise ValueError(f"holds {shown(item)}, which {exc}") from None
        return tuple(parsed)

    return parse_all


def duration(raw: Any) -> str:
    """A duration such as `5m`, kept as written (the worker reads it), checked here."""
    value = nonempty(raw)
    seconds(value)
    return value


def when(raw: Any) -> str:
    """A moment such as `7d` or `2026-01-31`, kept as written (an age is measured from
    the moment it is used), checked here."""
    value = nonempty(raw)
    moment(value, now=datetime.now(UTC))
    return value


def seconds(text_: str) -> float:
    """Seconds in "30s", "5m", "12h", "7d", "2w" (or a bare number of seconds)."""
    match = _AGE.fullmatch(text_)
    raw = match[1] if match else text_.strip()
    if not _NUMBER.fullmatch(raw):
        raise ValueError("is not a duration: write e.g. 30s, 5m, 12h or 7d")
    value = float(raw) * (_UNIT_SECONDS[match[2].lower()] if match else 1)
    if not math.isfinite(value) or value > timedelta.max.total_seconds():
        raise ValueError("is too long a duration")
    if value <= 0:
        raise ValueError("must be longer than zero")
    return value


def moment(text_: str, *, now: datetime) -> datetime:
    """A moment from an ISO date or datetime (naive means UTC) or an age like `7d`
    (that long before `now`)."""
    if _AGE.fullmatch(text_):
        try:
            return now - timedelta(seconds=seconds(text_))
        except OverflowError:
            raise ValueError("reaches back before the year 1") from None
    try:
        value = datetime.fromisoformat(text_.strip())
    except ValueError:
        raise ValueError(f"is not a date: {_WHEN_HELP} like 7d, 12h, 30m") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_duration(raw: str, what: str) -> float:
    """`seconds`, its complaint as a `ConfigError` naming `what`."""
    try:
        return seconds(raw)
    except ValueError as exc:
        raise ConfigError(f"{what} {raw!r} {exc}") from None


def parse_when(raw: str, what: str, *, now: datetime) -> datetime:
    """`moment`, its complaint as a `ConfigError` naming `what`."""
    try:
        return moment(raw, now=now)
    except ValueError as exc:
        raise ConfigError(f"{what} {raw!r} {exc}") from None


def shown(raw: Any) -> str:
    """A value as the user wrote it, for a message: TOML's false, not Python's False."""
    if isinstance(raw, bool):
        return str(raw).lower()
    if isinstance(raw, list | tuple):
        return repr(" ".join(map(str, raw)))
    return repr(raw)


def did_you_mean(word: str, choices: Iterable[str], *, prefix: str = "") -> str:
    """' (did you mean X?)' for the closest choice, or '' when nothing is close. A common
    `prefix` is left out of the comparison: it would make every name look close."""
    names = {choice.removeprefix(prefix): choice for choice in choices}
    close = difflib.get_close_matches(word.removeprefix(prefix), list(names), n=1, cutoff=0.6)
    return f" (did you mean {names[close[0]]}?)" if close else ""


def _toml_type(raw: Any) -> str:
    names = {bool: "true/false", int: "number", float: "number", list: "list", dict: "table"}
    return next((name for kind, name in names.items() if isinstance(raw, kind)), "value")
