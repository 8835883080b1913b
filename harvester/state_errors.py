"""SQLite's and the filesystem's errors on the state file, made ours by what happened.

A full disk, a read-only filesystem, an I/O error or a lock held by another program are
outages (`StateUnavailable`, exit 1: the worker backs off and tries again); a damaged
file is `StateCorrupt` (exit 2, with what to do); anything else is a `StateError`.
SQLite says "disk I/O error" for some writes on a full disk (growing the WAL index), so
an I/O error is also checked against the filesystem's free space and read-only flag.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

from .errors import StateCorrupt, StateError, StateUnavailable

#: Less free space than this, and an I/O error is the disk being full.
NEARLY_FULL = 1 << 20
_MOVE_ASIDE = (
    "move it aside and run again: the archived files are the truth, nothing archived is "
    "fetched again (only failure reasons and waiting runs are forgotten)"
)


def _filesystem_trouble(path: Path) -> str | None:
    """'full' or 'read-only' when the state file's filesystem is, else None."""
    try:
        st = os.statvfs(path.parent)
    except OSError:
        return None
    if st.f_flag & os.ST_RDONLY:
        return "read-only"
    if st.f_bavail * st.f_frsize < NEARLY_FULL:
        return "full"
    return None


def _outage(kind: str, path: Path, doing: str) -> StateUnavailable:
    what = {
        "full": "the disk is full",
        "read-only": "the filesystem is read-only",
        "busy": "another program holds a SQLite lock on it",
    }[kind]
    return StateUnavailable(
        f"state file {path}: {what} (while {doing}); archived runs are kept, run again "
        "once it is fixed"
    )


def from_sqlite_error(exc: sqlite3.Error, path: Path, doing: str) -> StateError:
    """The error to raise for `exc`, by its SQLite result code."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary == sqlite3.SQLITE_FULL:
        return _outage("full", path, doing)
    if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return StateCorrupt(f"state file {path} is damaged ({exc}); {_MOVE_ASIDE}")
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return _outage("busy", path, doing)
    if primary in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN):
        trouble = _filesystem_trouble(path)
        if trouble is not None:
            return _outage(trouble, path, doing)
        if primary == sqlite3.SQLITE_IOERR:
            return StateUnavailable(
                f"state file {path}: I/O error while {doing} ({exc}); check the disk, "
                "then run again"
            )
        if primary == sqlite3.SQLITE_READONLY:
            return StateError(f"state file {path} cannot be written ({exc}); check its permissions")
        return StateError(f"cannot open state file {path} ({exc}); check its permissions")
    return StateError(f"state file {path} is not a harvester state database ({exc}); {_MOVE_ASIDE}")


def from_os_error(exc: OSError, path: Path, doing: str) -> StateError:
    """The error to raise when the filesystem refuses the state file or its lock."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return _outage("full", path, doing)
    if exc.errno == errno.EROFS:
        return _outage("read-only", path, doing)
    if exc.errno == errno.EIO:
        return StateUnavailable(f"state file {path}: I/O error while {doing}; check the disk")
    return StateError(f"cannot use state file {path}: {exc.strerror}")
