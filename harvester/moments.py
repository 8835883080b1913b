"""The API's times as moments: ISO 8601 text read by `datetime.fromisoformat`, a time
without a zone taken as UTC, anything unreadable None (one reader for the run's place in
the date layout and the points' Parquet column, so both read a time alike)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def utc_moment(value: Any) -> datetime | None:
    """`value` as an aware moment, or None when it is not ISO 8601 text."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
