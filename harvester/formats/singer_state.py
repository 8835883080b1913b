"""The Singer state of `--format singer`: the runs done, written as sorted ranges of ids.

A STATE's value is `{"bookmarks": {"runs": {"done": [...]}}}`, each item of `done` a run
id or `[first, last]` (every id from first to last done): three or more consecutive ids
are written as a range, the others as plain ids. So a state whose ids are never
consecutive is the plain list of ids the first versions wrote, every state they wrote
reads as before, and one with a range is refused by them in one line (exit 2) rather
than read as naming no run. `DoneRuns` holds the set as ranges too, never an entry an id.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from typing import Any

import orjson

from ..errors import ConfigError
from ..sources import read_limited

EXPECTED = '{"bookmarks": {"runs": {"done": [run ids or [first, last] ranges]}}}'


class DoneRuns:
    """A set of run ids as sorted ranges, apart (two lists: each range's first and last
    id). A run added is a binary search and at most one insertion: no rewrite of the set
    after each run, whatever its size."""

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._firsts: list[int] = []
        self._lasts: list[int] = []
        for first, last in sorted(ranges):  # (sorted: each joins the last or follows it)
            if self._lasts and first <= self._lasts[-1] + 1:
                self._lasts[-1] = max(self._lasts[-1], last)
            else:
                self._firsts.append(first)
                self._lasts.append(last)

    def __contains__(self, run_id: object) -> bool:
        if not isinstance(run_id, int):
            return False
        at = bisect_right(self._firsts, run_id)  # the ranges before `at` start at or below
        return at > 0 and run_id <= self._lasts[at - 1]

    def add(self, run_id: int) -> None:
        """The id in the set: a range of its own, or joined to those it touches."""
        firsts, lasts = self._firsts, self._lasts
        touching = bisect_left(lasts, run_id - 1)  # the first range ending at or after
        beyond = bisect_right(firsts, run_id + 1)  # the first range starting after
        if touching == beyond:
            firsts.insert(touching, run_id)
            lasts.insert(touching, run_id)
        else:  # (a range holding it, one or two it extends: made one)
            firsts[touching:beyond] = [min(run_id, firsts[touching])]
            lasts[touching:beyond] = [max(run_id, lasts[beyond - 1])]

    def ids(self) -> Iterable[int]:
        """Every id, in order (one by one: for tests and small sets)."""
        return (
            i
            for first, last in zip(self._firsts, self._lasts, strict=True)
            for i in range(first, last + 1)
        )

    def value(self) -> dict[str, Any]:
        """The STATE's value: three or more consecutive ids as `[first, last]`."""
        done = [
            item
            for first, last in zip(self._firsts, self._lasts, strict=True)
            for item in ((first,) if first == last else (first, last) if last == first + 1
                         else ([first, last],))
        ]  # fmt: skip
        return {"bookmarks": {"runs": {"done": done}}}


def read_state(path: str, flag: str = "--singer-state") -> DoneRuns:
    """The runs a Singer state (`--singer-state`, a STATE message's value) lists as done;
    `flag` names it in errors as the user gave it (tap-harvester's `--state`)."""
    where = f"{flag} {path}"
    try:
        doc = orjson.loads(read_limited(path, where))
    except FileNotFoundError:
        raise ConfigError(f"{where} does not exist; give the last STATE a target emitted") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {where}: {exc.strerror}") from None
    except orjson.JSONDecodeError:
        raise ConfigError(f"{where} is not JSON; give the last STATE's value") from None
    if isinstance(doc, dict) and doc.get("type") == "STATE" and isinstance(doc.get("value"), dict):
        doc = doc["value"]  # the STATE message itself: its value was read as no bookmarks
    done: Any = doc
    for key in ("bookmarks", "runs", "done"):  # a state without them names no run
        done = done.get(key, [] if key == "done" else {}) if isinstance(done, dict) else None
    if not isinstance(done, list):
        raise ConfigError(f"{where} is not a harvester state: expected {EXPECTED}")
    ranges = [(i, i) for i in done if type(i) is int]  # (not a bool: `true` is no run)
    for item in done if len(ranges) < len(done) else ():
        if type(item) is int:
            continue
        found = _as_range(item)
        if found is None:
            said = orjson.dumps(item)[:40].decode(errors="replace")
            raise ConfigError(
                f"{where} is not a harvester state: {said} in `done` is neither a run id "
                f"nor a [first, last] range; expected {EXPECTED}"
            )
        ranges.append(found)
    return DoneRuns(ranges)


def _as_range(item: Any) -> tuple[int, int] | None:
    """(first, last) of a range of `done`; None if it is not one."""
    if isinstance(item, list) and len(item) == 2 and all(type(i) is int for i in item):
        first, last = item
        return (first, last) if first <= last else None
    return None
