"""Reading an archive back: the runs in an output directory and each run's records, streamed.

One reader for everything that looks at an archive after the fact (`report`, and later
`verify`). Records are read one line at a time, so memory holds one line, never a file;
a record type that is not asked for is skipped on its line's first bytes, unparsed (the
writer puts `"type"` first on every line, see `records.encode`).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from .compression import READ_ERRORS, open_data, run_id_of
from .errors import ConfigError, HarvesterError
from .formats.points import read_line
from .layout import run_dirs

Record = dict[str, Any]
#: Bytes of a run file read at once.
CHUNK = 1 << 20


class ArchiveError(HarvesterError):
    """An archive file that cannot be read as the harvester wrote it."""


@dataclass(frozen=True)
class ArchivedRun:
    """One run's file in an archive."""

    run_id: int
    path: Path

    def records(self, *types: str) -> Iterator[Record]:
        """The run's records in file order; only those of `types` when any are given."""
        for number, line in self.lines(*types):
            record = self.parse(line, number)
            if record is not None and (not types or record.get("type") in types):
                yield record

    def lines(self, *types: str) -> Iterator[tuple[int, bytes]]:
        """The run's lines (numbered from 1) that may be records of `types` (any line when
        none are given), unparsed: a reader that builds what it needs (`report.source`)."""
        prefixes = tuple(b'{"type":"%s"' % kind.encode() for kind in types)
        try:
            with open_data(self.path) as data:
                yield from _lines(data, prefixes)
        except READ_ERRORS as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise ArchiveError(f"cannot read {self.path}: {reason}") from exc

    def first(self, kind: str) -> Record | None:
        """The first record of one type, or None when the run has none."""
        return next(self.records(kind), None)

    def parse(self, line: bytes, number: int) -> Record | None:
        """Line `number` as a record (None for a blank line); ArchiveError when it is none."""
        if not line.strip():
            return None
        try:  # a serie may hold a number orjson refuses (`1e999`), kept as the API sent it
            record = read_line(line)
        except ValueError as exc:
            raise ArchiveError(
                f"{self.path}:{number}: not a JSON line ({exc}); is this a harvester archive?"
            ) from exc
        if not isinstance(record, dict) or not isinstance(record.get("data"), dict | list):
            raise ArchiveError(f"{self.path}:{number}: not a harvester record")
        return record


def _lines(data: BinaryIO, prefixes: tuple[bytes, ...]) -> Iterator[tuple[int, bytes]]:
    """The numbered lines of `data` that start with one of `prefixes` (all when none).

    Read a chunk at a time into one buffer, where a line not wanted is passed over in
    place (`find`), never copied: iterating a file's lines made a bytes object of every
    line, the series' included (a 195 MB run file: 0.16-0.24 s a pass against 0.03)."""
    chunk = bytearray(CHUNK)
    view = memoryview(chunk)
    longest = max(map(len, prefixes), default=0)
    line = bytearray()  # the current line so far, while it may be wanted
    wanted: bool | None = None  # None: not decided yet (too few of its bytes read)
    number = 0
    readinto = cast(io.BufferedIOBase, data).readinto  # every reader `open_data` gives
    while size := readinto(chunk):
        at = 0
        while at < size:
            end = chunk.find(b"\n", at, size)
            stop = size if end < 0 else end + 1
            whole = not line and end >= 0  # the line is all in this chunk
            if wanted is None and not line and (end >= 0 or stop - at >= longest):
                wanted = not prefixes or chunk.startswith(prefixes, at, stop)
            if wanted is not False and not whole:
                line += view[at:stop]
                if wanted is None and len(line) >= longest:  # a line start cut by the chunk
                    wanted = not prefixes or line.startswith(prefixes)
                    if not wanted:
                        line.clear()
            if end >= 0:
                if wanted is None:  # a short line cut by the chunk
                    wanted = not prefixes or line.startswith(prefixes)
                if wanted:
                    yield number + 1, bytes(view[at:stop] if whole else line)
                number += 1
                line.clear()
                wanted = None
            at = stop
    if line and (wanted or not prefixes or line.startswith(prefixes)):  # no end of line
        yield number + 1, bytes(line)


def open_archive(
    directory: str | Path, unlisted: list[tuple[Path, OSError]] | None = None
) -> list[ArchivedRun]:
    """The runs archived in `directory` (`<run_id>.ndjson[.gz|.zst]` files, in the root
    or, --layout date, its `YYYY/MM/DD/` directories), by run id. Hidden temporary files
    (`.N.….partial`) and names that are not a run's never match. A directory that cannot
    be listed is added to `unlisted` with why (its runs were left out in silence)."""
    root = Path(directory)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a directory: give the --out directory of a harvest")
    unlisted = unlisted if unlisted is not None else []
    runs = {}
    paths = (path for where in run_dirs(root, unlisted) for path in _listed(where, unlisted))
    for path in paths:
        run_id = run_id_of(path)
        # --format points/parquet: the sidecar (`.meta.`) holds the run's records; its
        # series are in the points or Parquet file beside it (`report/source.py`).
        if run_id is not None and path.is_file() and ".points." not in path.name:
            runs[run_id] = ArchivedRun(run_id, path)
    return [runs[run_id] for run_id in sorted(runs)]


def _listed(where: Path, unlisted: list[tuple[Path, OSError]]) -> list[Path]:
    """The NDJSON files of one directory (Path.glob passed over one it could not list)."""
    try:
        with os.scandir(where) as entries:
            return [Path(e.path) for e in entries if ".ndjson" in e.name]
    except OSError as exc:
        unlisted.append((where, exc))
        return []


def select(runs: Iterable[ArchivedRun], run_ids: Iterable[int]) -> list[ArchivedRun]:
    """The runs with these ids; ConfigError names the ones the archive does not hold."""
    by_id = {run.run_id: run for run in runs}
    wanted = list(dict.fromkeys(run_ids))
    missing = [str(run_id) for run_id in wanted if run_id not in by_id]
    if missing:
        raise ConfigError(f"run {', '.join(missing)} is not in the archive")
    return [by_id[run_id] for run_id in wanted]
