"""A job's own local directory for the CSV exports of `--out s3://` (`--export-csv`): each
is downloaded there, then uploaded with its run and deleted. Beside the default state
file (`$XDG_STATE_HOME/harvester/<bucket>-<prefix>.spool-XXXXXXXX/`), unique to the job,
so that two jobs on one host never take each other's file; flocked while the job runs and
removed when it ends. The spool of a job that was killed is removed by the next job on
the same archive (only once no process holds its flock)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import ConfigError
from ..outdir import try_flock
from .location import default_state_path


class Spool:
    def __init__(self, out: str) -> None:
        state = default_state_path(out)
        self._prefix = f"{state.stem}.spool-"
        self._parent = state.parent
        self.path, self._fd = self._make()

    def _make(self) -> tuple[Path, int]:
        while True:
            try:
                path = Path(tempfile.mkdtemp(prefix=self._prefix, dir=self._parent))
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            except OSError as exc:
                raise ConfigError(
                    f"cannot create a spool for the exports in {self._parent}: {exc.strerror}"
                ) from None
            # Between mkdtemp and flock another job's `remove_abandoned` may have taken it.
            if try_flock(fd) and os.fstat(fd).st_nlink > 0:
                return path, fd
            os.close(fd)  # pragma: no cover (a race of microseconds with another job)

    def remove_abandoned(self) -> int:
        """Remove the spools of this archive's jobs that are gone; returns how many."""
        removed = 0
        for path in self._parent.glob(f"{self._prefix}*"):
            if path != self.path and _remove_if_abandoned(path):
                removed += 1
        return removed

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._fd)


def _remove_if_abandoned(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return False  # gone meanwhile, or not a directory of ours
    try:
        if not try_flock(fd):
            return False  # its job is running
        shutil.rmtree(path, ignore_errors=True)
        return True
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
