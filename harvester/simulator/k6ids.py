"""Ids and times of an imported k6 run (`k6import.py`, `k6verdicts.py`): ids are hashes
of the run id and what the object is, so they are stable across loads of the same file
and distinct across run ids; times are written as k6 Cloud writes them."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime


def hex_id(*parts: object) -> str:
    """32 hex digits of a BLAKE2b hash of `parts`."""
    return hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=16).hexdigest()


def int_id(*parts: object) -> int:
    """A 31-bit integer id hashed as `hex_id`."""
    return int(hex_id(*parts)[:8], 16) & 0x7FFFFFFF


def iso(epoch: float, whole_seconds: bool = False) -> str:
    """ISO 8601 in UTC with a `Z`, to the microsecond (or the second)."""
    moment = datetime.fromtimestamp(epoch, UTC)
    spec = "seconds" if whole_seconds else "microseconds"
    return moment.isoformat(timespec=spec).replace("+00:00", "Z")


def pg_time(epoch: float, timespec: str = "seconds") -> str:
    """Times in `calc_state` look like Python's str(datetime) in the docs' example."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(sep=" ", timespec=timespec)
