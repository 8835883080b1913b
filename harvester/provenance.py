"""How each run was harvested, and whether an archived run lacks what a job asks for.

Every run's `summary` records its `harvest` block (harvester version, API, methods,
details, time); the state keeps a copy. A job asking for more than an archived run holds
(another `--method`, `--details`) would otherwise skip it silently: it says so instead,
naming the runs, and `--force` redoes them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from . import version
from .compression import READ_ERRORS, codec_of, open_data
from .methods import DEFAULT_METHOD

if TYPE_CHECKING:  # only a type here: `harvester verify` reads no config
    from .config import Settings

#: The API of a summary that does not say (archives from before v6).
API = "v2"
#: Ids named in a warning; the rest are counted.
NAMED = 5
_TAIL = 4096
UNREADABLE: tuple[type[Exception], ...] = (*READ_ERRORS, orjson.JSONDecodeError)


def methods_of(settings: Settings) -> list[str]:
    """The aggregations a job fetches, `default` for the API's own, in the order asked."""
    return list(dict.fromkeys(settings.methods)) or [DEFAULT_METHOD]


def harvest_block(settings: Settings, now: datetime | None = None) -> dict[str, Any]:
    """The summary's record of how the run was harvested."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return {
        "harvester": version(),
        "api": settings.api,
        "methods": methods_of(settings),
        "details": settings.details,
        "time": moment.isoformat(timespec="seconds").replace("+00:00", "Z"),
    }


def lacking(how: dict[str, Any], settings: Settings) -> list[str]:
    """What `settings` ask for that a run harvested `how` does not hold."""
    missing: list[str] = []
    if how.get("api", API) != settings.api:
        missing.append(f"API {settings.api}")
    had = how.get("methods")
    if isinstance(had, list):
        missing += [f"method {m}" for m in methods_of(settings) if m not in had]
    if settings.details and how.get("details") is False:
        missing.append("details")
    return missing


def last_line(path: Path) -> bytes:
    """The file's last non-empty line (its summary), read from the end."""
    with path.open("rb") as handle:
        end = handle.seek(0, os.SEEK_END)
        size = _TAIL
        while True:
            start = max(0, end - size)
            handle.seek(start)
            lines = handle.read(end - start).rstrip(b"\n").rsplit(b"\n", 1)
            if len(lines) == 2 or start == 0:
                return lines[-1]
            size *= 4


def last_line_of(path: Path) -> bytes:
    """The last non-empty line of a data file: read from the end when it is plain, else
    decompressed from the start (a compressed stream cannot be read backwards), keeping
    one line at a time."""
    if codec_of(path) == "none":
        return last_line(path)
    last = b""
    with open_data(path) as lines:
        for line in lines:
            if line.strip():
                last = line
    return last


def summary_of(path: Path) -> dict[str, Any] | None:
    """The `data` of an archived file's last line (its summary), if it has one."""
    try:
        record = orjson.loads(last_line_of(path))
    except UNREADABLE:
        return None
    data = record.get("data") if isinstance(record, dict) else None
    return data if isinstance(data, dict) else None


def from_file(path: Path) -> dict[str, Any] | None:
    """The `harvest` block of an archived file's summary line, if it has one."""
    data = summary_of(path)
    how = data.get("harvest") if data is not None else None
    return how if isinstance(how, dict) else None


def describe_runs(run_ids: Iterable[int]) -> str:
    """ "3 runs (1, 2, 3)" or "12 runs (1, 2, 3, 4, 5 and 7 more)"."""
    ids = sorted(run_ids)
    named = ", ".join(str(run_id) for run_id in ids[:NAMED])
    more = f" and {len(ids) - NAMED} more" if len(ids) > NAMED else ""
    return f"{len(ids)} run{'s' if len(ids) != 1 else ''} ({named}{more})"
