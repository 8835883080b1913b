"""The state file before SQLite opens it: is the path one we may open, and is it ours.

One process at a time: an exclusive flock on a file beside the state (`<state>.lock`),
released by the kernel even after SIGKILL, guards it; `harvester status` asks whether a
live job holds it. A path that is no state file (someone's runs file, a FIFO, a
directory) is refused untouched before anything is made beside it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import time
from pathlib import Path
from typing import IO

from .errors import StateError
from .state_errors import from_os_error

#: The state's name in an --out directory (here, not in `state`: `harvester verify` needs
#: the name, and no SQLite).
STATE_FILE_NAME = ".harvester-state.sqlite"
#: Seconds a job waits for a state lock that is taken: `harvester status` holds it for an
#: instant (`StateLock.held`), and a job starting then must not be refused for that.
LOCK_PATIENCE = 0.5


class StateLock:
    """The exclusive lock beside a state file, held until `release()`. Opened read-only,
    so holding it between a worker's cycles does not keep a filesystem from going
    read-only (that is an outage to wait out, not something to block)."""

    def __init__(self, path: Path, handle: IO[bytes]) -> None:
        self.path = path
        self._handle = handle

    @classmethod
    def acquire(cls, path: Path) -> StateLock:
        refuse_foreign(path)  # before a lock file is made beside someone's file
        lock_path = path.with_name(path.name + ".lock")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = os.fdopen(os.open(lock_path, os.O_RDONLY | os.O_CREAT, 0o600), "rb")
        except OSError as exc:
            raise from_os_error(exc, path, "taking its lock") from None
        if not _lock_within(handle.fileno(), LOCK_PATIENCE):
            handle.close()
            raise StateError(
                f"another harvester is already using the state file {path}; wait for it to "
                "finish, or give this one its own --state (and --out)"
            )
        return cls(path, handle)

    @staticmethod
    def held(path: Path) -> bool:
        """Whether a live job (or worker) holds the lock of the state file `path` now: the
        kernel drops a flock with its process, so a job killed with SIGKILL holds none.
        Asked by taking a shared lock and dropping it at once (a job starting meanwhile
        waits, `LOCK_PATIENCE`); a lock file that cannot be read says "held", so nothing
        is called stale on a guess. Never creates the lock file."""
        lock_path = path.with_name(path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDONLY)
        except FileNotFoundError:
            return False  # no job ever locked it
        except OSError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:  # BlockingIOError: a job holds it
            return True
        finally:
            os.close(fd)  # (releases the shared lock, if taken)
        return False

    def release(self) -> None:
        self._handle.close()


def _lock_within(fd: int, seconds: float) -> bool:
    """Take the exclusive flock on `fd`, waiting up to `seconds` for it."""
    deadline = time.monotonic() + seconds
    while True:
        with contextlib.suppress(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


#: The first bytes of every SQLite database file.
SQLITE_MAGIC = b"SQLite format 3\x00"


def refuse_foreign(path: Path) -> None:
    """A file that is no SQLite database at all is more likely someone's file given as
    --state (a runs file?) than a damaged state: it is refused untouched, and the message
    says both. An empty file, or one SQLite may have begun, is left to SQLite. Something
    that is no regular file is refused first: a FIFO would be waited on for ever (its
    opening blocks, deaf to SIGTERM), a directory said only "unable to open"."""
    kind = _not_a_file(path)
    if kind is not None:
        raise StateError(f"{path} is {kind}, not a state file: give --state a file's path")
    try:
        with path.open("rb") as fh:
            head = fh.read(len(SQLITE_MAGIC))
    except OSError:
        return  # missing (created later), or unreadable: the lock or SQLite says why
    if head and not SQLITE_MAGIC.startswith(head):
        raise StateError(
            f"{path} is not a harvester state file (not an SQLite database; it begins "
            f"{head!r}): give --state a path of its own, or if it is a damaged state "
            "file, move it aside and run again (the archived files are the truth)"
        )


def _not_a_file(path: Path) -> str | None:
    """What `path` is when it is there and no regular file (symlinks followed), else None."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None  # missing (created later), or unreadable: the lock or SQLite says why
    if stat.S_ISREG(mode):
        return None
    return (
        "a directory"
        if stat.S_ISDIR(mode)
        else "a FIFO"
        if stat.S_ISFIFO(mode)
        else ("not a regular file")
    )
