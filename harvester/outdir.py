"""The output directory's rules, for any number of writers: no file under its final name
is ever torn, and no writer removes or replaces what another one writes or published.

- **One harvester per directory.** `DirectoryLock` holds an exclusive `flock` on
  `DIR/.harvester.lock` for the job's life, whatever `--state` says. A second job is
  refused with one line. The rules below do not rely on it: they hold when the lock file
  is deleted under a running job, or when a directory is shared some other way.
- **Temporary files are unique per writer.** `create_temp` makes `.<run>.<random>.ndjson.partial`
  (or `.csv.partial`), in the directory of the final name (`--layout date`: the run's
  `YYYY/MM/DD/`, not the root), with `O_EXCL` (`tempfile.mkstemp`), never a fixed name opened with
  `O_TRUNC`, and the writer holds an `flock` on it until the file is published or removed.
- **Publication never replaces another writer's file.** `publish` hard-links the temporary
  file to its final name (`link` fails if the name exists, atomically), then unlinks the
  temporary name. When the final file is already there, another writer published the run
  whole: this writer's copy is discarded. Only `--force` replaces, by `rename`, which is
  atomic too: a reader sees the old file or the new one, never a mix.
- **Leftovers are removed only when their writer is gone.** `remove_leftovers` deletes a
  temporary file only after taking its `flock` itself: every live writer holds that lock
  from the moment it checked that its file still has a name, and the kernel drops the
  locks of a dead process (`kill -9` included).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import tempfile
from pathlib import Path
from types import TracebackType

from .errors import OutputBusy
from .layout import run_dirs

LOCK_FILE_NAME = ".harvester.lock"
TEMP_SUFFIX = ".partial"
#: Our temporary files: `.<run>.<random>.ndjson.partial` (also `.ndjson.gz`, `.ndjson.zst`),
#: the other formats' `.points.ndjson`, `.meta.ndjson` (compressed too) and `.parquet`,
#: `.<run>.<random>.csv.partial`, `.<run>.<random>.manifest.json.partial`,
#: and what earlier versions wrote (`.<run>.ndjson.partial`, `.<run>.csv.<random>.partial`),
#: which a crash may have left.
TEMP_NAME = re.compile(
    r"\.\d+\.(?:[a-z0-9_]+\.)?(?:(?:points\.|meta\.)?ndjson|parquet|csv|manifest)"
    r"(?:\.[a-z0-9_]+)?\.partial"
)
#: errnos of filesystems without hard links (FAT, some network and FUSE filesystems).
NO_HARD_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})


def try_flock(fd: int) -> bool:
    """An exclusive flock on `fd` if nobody else holds one, without waiting."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class DirectoryLock:
    """`DIR/.harvester.lock`, flocked while this object is open. The file is never deleted:
    removing a lock file while another process waits on it would let two in."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / LOCK_FILE_NAME
        # Read-only: held by a long job, it does not keep the filesystem from going
        # read-only; flock needs no write access.
        fd = os.open(self.path, os.O_RDONLY | os.O_CREAT, 0o600)
        if not try_flock(fd):
            os.close(fd)
            raise OutputBusy(
                f"another harvester is writing to {out_dir}; wait for it to finish, or give "
                "this one its own --out"
            )
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None

    def __enter__(self) -> DirectoryLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def create_temp(out_dir: Path, run_id: int, kind: str = "ndjson") -> tuple[int, Path]:
    """A new temporary file for `run_id`'s `kind` of file (descriptor, path), owned by this
    writer: a unique name created with O_EXCL and mode 0600, flocked until it is closed
    (after `publish` or `discard`)."""
    while True:
        suffix = f".{kind}{TEMP_SUFFIX}"
        fd, name = tempfile.mkstemp(prefix=f".{run_id}.", suffix=suffix, dir=out_dir)
        # Between mkstemp and flock a `remove_leftovers` elsewhere may have taken the lock
        # (it then deletes the file) or already deleted it: take another name.
        if try_flock(fd) and os.fstat(fd).st_nlink > 0:
            return fd, Path(name)
        os.close(fd)  # pragma: no cover (a race of microseconds with another process)


def publish(temp: Path, final: Path, *, replace: bool = False, keep: bool = False) -> bool:
    """Give the (flushed, fsynced) `temp` its final name. False when another writer had
    published `final` already: then `temp` is removed (kept with `keep`, for the caller to
    settle) and `final` left as it is. With `replace` (--force) an existing `final` is
    replaced on purpose, atomically."""
    if replace:
        os.replace(temp, final)
        return True
    try:
        os.link(temp, final)
        published = True
    except FileExistsError:
        published = False
    except OSError as exc:
        if exc.errno not in NO_HARD_LINKS:
            raise
        # No hard links here: check, then rename. Safe while the directory lock keeps
        # other harvesters out (the only case left open is a deleted lock file).
        if final.exists():
            published = False
        else:
            os.rename(temp, final)
            return True
    if published or not keep:
        temp.unlink()
    return published


def discard(temp: Path) -> None:
    """Remove this writer's own temporary file (a unique name: nobody else's)."""
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()


def remove_leftovers(out_dir: Path) -> int:
    """Delete the temporary files of writers that are gone (a crash, `kill -9`); returns
    how many. A file is deleted only while this process holds its flock, which no live
    writer lets go of before it is done with the file (see `create_temp`), so this is
    safe with other harvesters running on the directory, locked out or not."""
    removed = 0
    for directory in run_dirs(out_dir):  # the root and, --layout date, each day's directory
        for path in directory.glob(f".*{TEMP_SUFFIX}"):
            if TEMP_NAME.fullmatch(path.name) and _remove_if_abandoned(path):
                removed += 1
    return removed


def _remove_if_abandoned(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False  # gone meanwhile, or not a plain file of ours
    try:
        if not try_flock(fd):
            return False  # a live writer holds it
        # Still the file we locked (names are random: a new one is a new writer's)?
        if os.stat(path, follow_symlinks=False).st_ino != os.fstat(fd).st_ino:
            return False  # pragma: no cover
        path.unlink()
        return True
    except FileNotFoundError:  # pragma: no cover (removed by another cleaner meanwhile)
        return False
    finally:
        os.close(fd)
