"""`harvester verify DIR`: is every run of an archive still exactly what was published?

Each `<id>.manifest.json` names its run's files with their size and sha256 (and, for the
NDJSON, the records of each type). Every file is read once, streaming (a chunk and a
line in memory, never a file): its bytes are hashed while its lines are decompressed and
parsed. One row per file, with its status:

- `ok`: there, same size, same sha256, every line a record, the same counts;
- `missing`: a file the manifest names is not there, or a run's data file has no
  manifest (`unsealed`: the next harvest job seals it);
- `truncated`: shorter than the manifest says;
- `corrupt`: the same size or longer but other bytes, a line that does not parse, a
  compressed stream that breaks, other counts, or a manifest that does not parse;
- `orphan`: a file no manifest names. The state file (and its SQLite companions and
  lock), the directory lock and hidden temporary files are the harvester's own, not
  orphans, and so are the files scripts/demo lists in its `.harvester-demo` (its report);
- `unreadable`: a file, manifest or directory that cannot be read (its permissions, an
  I/O error): not verified, and said so (it ended verify as an internal error, no row);
- `unverified`: a data file whose manifest is there but `corrupt` or `unreadable` (it was
  called `missing: no manifest`, as if a crash had left it unsealed).

A FIFO, socket or device is never opened (a FIFO's open() waits for a writer for ever):
one in a named file's place is `missing`, one named by no manifest an `orphan`.

With `--layout date` every `YYYY/MM/DD/` (and `undated/`) is walked as well as the root
(`layout.run_dirs`); a run's manifest names files beside it, and rows name files by
their path under DIR.

Speed: with `workers` above 1 (the command: one per CPU it may use) the files of each
directory are scanned ahead by that many worker processes, and the rows still come in
order. A file's scan (`scan.py`) parses its lines with msgspec in bulk, which holds the
GIL (about two thirds of its CPU), so threads parsed one file at a time however many
cores there were: medium's raw archive, two cores, 0.23-0.27 s in two threads, 0.17-0.19
s in two processes. On Linux the workers are forked, with this process's modules
already imported (a spawned worker would import them again: ~0.1 s each); elsewhere
(no `fork`) they are threads. A worker that dies (killed, out of memory) costs no row:
that file and those after it are scanned here; workers end with this process, however
it ends (`_die_with`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from . import manifest
from .compression import as_run_id, run_id_of
from .errors import ConfigError
from .layout import run_dirs
from .manifest import Scan
from .outdir import LOCK_FILE_NAME, TEMP_NAME
from .scan import kind_of
from .state_file import STATE_FILE_NAME

Row = dict[str, Any]
PROBLEMS = ("missing", "truncated", "corrupt", "orphan", "unreadable", "unverified")
#: The harvester's own files beside the runs: the state (SQLite's -wal/-shm and its lock
#: included), the directory lock, the demo's list of its files.
#: scripts/demo's list of the files it made in its --out.
DEMO_MARKER = ".harvester-demo"
OWN_FILES = (STATE_FILE_NAME, LOCK_FILE_NAME, DEMO_MARKER)


def verify(directory: str | Path, *, workers: int = 1) -> Iterator[Row]:
    """One row per file of the archive (and per file a manifest names that is absent);
    `workers` > 1: files are scanned ahead by that many workers (`Scanner`)."""
    root = Path(directory)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a directory: give the --out directory of a harvest")
    demo = _demo_files(root)
    unlisted: list[tuple[Path, OSError]] = []
    with Scanner(workers) as scanner:
        for where in run_dirs(root, unlisted):
            for row in _verify_dir(where, where.relative_to(root), scanner):
                if row["status"] != "orphan" or row["file"] not in demo:
                    yield row
    for where, exc in unlisted:  # a year or month the walk could not list
        yield row_unlisted(where.relative_to(root), exc)


def _demo_files(root: Path) -> set[str]:
    """The files scripts/demo made at the root (its report.html), as its marker lists them:
    the demo's own, not orphans."""
    try:
        return set((root / DEMO_MARKER).read_text(encoding="utf-8").split())
    except (OSError, UnicodeDecodeError):
        return set()


#: Bytes from which a file is scanned ahead by a worker; a smaller one is scanned here when
#: its turn comes. A worker's hand-over (pickled, two pipes) cost more than such a file's
#: scan: 20,000 runs of 1 KB took 10.7 s in workers, 9.5 s in threads. A 256 KiB file's
#: scan takes ~0.4 ms (this machine).
SCANNED_AHEAD_FROM = 256 << 10


class Scanner:
    """`manifest.scan` of a file, here or, with `workers` > 1, scanned ahead by that many
    worker processes (threads off Linux, or where no process can start), started at the
    first directory with more than one file to scan."""

    def __init__(self, workers: int) -> None:
        self._workers = workers
        self._pool: Executor | None = None
        self._ahead: dict[Path, Future[manifest.Scan]] = {}

    def __enter__(self) -> Scanner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def ahead(self, paths: list[Path]) -> None:
        """Scan `paths` ahead, but those smaller than `SCANNED_AHEAD_FROM`."""
        if self._workers > 1 and len(paths) > 1:
            for path in paths:
                with contextlib.suppress(OSError):  # (then scanned in turn, which tells)
                    if path.stat().st_size >= SCANNED_AHEAD_FROM:
                        self._ahead[path] = self._submit(path)

    def _submit(self, path: Path) -> Future[manifest.Scan]:
        if self._pool is None:
            self._pool = _workers(self._workers)
        try:
            with _sigint_blocked():  # (the first submit forks the workers)
                return self._pool.submit(_scan, path)
        except (OSError, BrokenProcessPool):  # no worker could start (a process limit)
            self._pool.shutdown(wait=False)
            self._pool = ThreadPoolExecutor(self._workers)
            return self._pool.submit(_scan, path)

    def scan(self, path: Path) -> manifest.Scan:
        future = self._ahead.pop(path, None)
        if future is None:
            return _scan(path)
        try:
            return future.result()
        except BrokenProcessPool:  # a worker died: this file and the rest are scanned here
            self._workers = 1
            return _scan(path)


def _workers(count: int) -> Executor:
    if not sys.platform.startswith("linux"):  # pragma: no cover (macOS's fork is unsafe)
        return ThreadPoolExecutor(count)
    context = multiprocessing.get_context("fork")
    try:
        return ProcessPoolExecutor(
            count, mp_context=context, initializer=_die_with, initargs=(os.getpid(),)
        )
    except (NotImplementedError, ImportError, OSError):
        # No POSIX semaphores: /dev/shm is missing or not writable (some containers, a
        # user without it), which the process pool's queues need.
        return ThreadPoolExecutor(count)


def _die_with(parent: int) -> None:
    """A worker ends when this process does, however it ends (kill -9; SIGTERM, whose
    default action ends it at once): blocked on its queue, which its own copy of the pipe
    keeps open, a worker waited for ever. Linux kills it (`PR_SET_PDEATHSIG`); if the
    parent is already gone, it ends now."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):  # (then the check below)
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


#: Linux's prctl option: a signal the kernel sends a process when its parent ends.
PR_SET_PDEATHSIG = 1


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """SIGINT held back while a submit may fork the workers, which keep it blocked for
    life: ^C reaches the whole process group, and the command stops (`cli`:
    "interrupted") and ends its workers once their files are scanned, with no traceback
    of theirs. Here it comes once unblocked."""
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover (Windows: threads)
        yield
        return
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _scan(path: Path) -> manifest.Scan:
    return manifest.scan(path, ndjson=".ndjson" in path.name)


def _verify_dir(where: Path, under: Path, scanner: Scanner) -> Iterator[Row]:
    """The rows of one directory's runs; `under`: its path below the archive's root."""
    try:
        kinds = _listing(where)
    except OSError as exc:
        yield row_unlisted(under, exc)
        return
    files = [where / name for name, kind in kinds.items() if kind is None]
    scanner.ahead([path for path in files if run_id_of(path) is not None])
    named: set[str] = set()
    broken: dict[int, str] = {}  # a run whose manifest is there but cannot be used: why
    for name in kinds:
        if name.endswith(manifest.SUFFIX) and (run_id := as_run_id(name[: -len(manifest.SUFFIX)])):
            named.add(name)
            yield from _check_run(where, under, run_id, (named, broken, kinds), scanner)
    for name, kind in kinds.items():
        data_of = run_id_of(where / name)
        # (directories are the layout's, or anyone's: only one named like a data file counts)
        if name not in named and not _own(name) and (kind != "a directory" or data_of is not None):
            yield unnamed(_leading_id(name), (under / name).as_posix(), data_of, broken, kind)


def unnamed(
    run_id: int | None, shown: str, data_of: int | None, broken: dict[int, str], kind: str | None
) -> Row:
    """The row of a file no manifest names (`kind`: what it is when not a regular file)."""
    if kind is not None:  # a FIFO named like a data file: never opened
        return row(run_id, shown, "orphan", f"{kind}, not a regular file: named by no manifest")
    if data_of is None:
        return row(run_id, shown, "orphan", "named by no manifest")
    if data_of in broken:  # its manifest is there: the data file is neither orphan nor unsealed
        return row(data_of, shown, "unverified", f"its manifest {broken[data_of]}")
    return row(data_of, shown, "missing", f"no manifest ({data_of}{manifest.SUFFIX})")


def _listing(where: Path) -> dict[str, str | None]:
    """Each name in `where`, sorted, with what it is when not a regular file (None): a FIFO,
    a device... (a link is what it points to; one to nothing is "a link to nothing"). A
    name that cannot be looked at (a link to itself) is one row, not the directory's."""
    kinds: dict[str, str | None] = {}
    with os.scandir(where) as entries:
        for entry in entries:
            try:
                kinds[entry.name] = kind_of(entry.stat().st_mode)
            except FileNotFoundError:
                kinds[entry.name] = "a link to nothing"
            except OSError as exc:
                kinds[entry.name] = f"a name that cannot be looked at ({_why(exc)})"
    return dict(sorted(kinds.items()))


def _check_run(
    where: Path,
    under: Path,
    run_id: int,
    seen: tuple[set[str], dict[int, str], dict[str, str | None]],
    scanner: Scanner,
) -> Iterator[Row]:
    """The rows of a run's manifest and of the files it names; `seen`: the names named so
    far, the runs whose manifest cannot be used (with why), the directory's listing."""
    named, broken, kinds = seen
    path = manifest.manifest_path(where, run_id)
    shown = (under / path.name).as_posix()
    try:
        found = manifest.read(path, run_id)
    except ValueError as exc:  # orjson's JSONDecodeError is a ValueError
        broken[run_id] = f"({path.name}) does not parse: not checked"
        yield row(run_id, shown, "corrupt", f"manifest does not parse: {exc}")
        return
    except OSError as exc:
        broken[run_id] = f"({path.name}) cannot be read: not checked"
        yield row(run_id, shown, "unreadable", f"cannot read it: {_why(exc)}")
        return
    yield row(run_id, shown, "ok", "")
    for entry in manifest.named_files(found):
        named.add(entry["name"])
        shown = (under / entry["name"]).as_posix()
        kind = kinds.get(entry["name"], "absent")
        yield _check_file(where / entry["name"], shown, run_id, (entry, kind), scanner)


def _check_file(
    path: Path, shown: str, run_id: int, named: tuple[dict[str, Any], str | None], scanner: Scanner
) -> Row:
    """The row of a file a manifest names (`named`: its entry, and what is there when not
    a regular file: "absent", a FIFO...)."""
    entry, kind = named
    if kind not in (None, "absent"):  # never opened: a FIFO's open() would wait for ever
        return row(run_id, shown, "missing", f"named by the manifest; {kind} is there, not a file")
    try:
        size = path.stat().st_size if kind is None else None
        return judge(run_id, shown, entry, size, lambda: scanner.scan(path))
    except OSError as exc:  # (a scan ahead raises it here, from its thread)
        return row(run_id, shown, "unreadable", f"cannot read it: {_why(exc)}")


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def row_unlisted(under: Path, exc: OSError) -> Row:
    """A directory of the archive that cannot be listed: its runs are not verified."""
    return row(None, under.as_posix(), "unreadable", f"cannot list it: {_why(exc)}")


def judge(
    run_id: int, shown: str, entry: dict[str, Any], size: int | None, scan: Callable[[], Scan]
) -> Row:
    """The row of a file a manifest `entry` names, from its `size` (None: not there) and,
    when that is right, its `scan` (also `verify s3://`'s, for an object)."""
    if size is None:
        return row(run_id, shown, "missing", "named by the manifest, not there")
    want = entry.get("bytes")
    if isinstance(want, int) and size < want:
        return row(run_id, shown, "truncated", f"{size} of {want} bytes")
    if isinstance(want, int) and size > want:
        return row(run_id, shown, "corrupt", f"{size} bytes, the manifest says {want}")
    ndjson = ".ndjson" in shown.rpartition("/")[2]
    facts = scan()
    if facts.sha256 != entry.get("sha256"):
        detail = facts.problem or "sha256 differs from the manifest's"
        return row(run_id, shown, "corrupt", detail)
    if facts.problem:
        return row(run_id, shown, "corrupt", facts.problem)
    if ndjson and dict(facts.counts) != entry.get("counts", {}):
        return row(run_id, shown, "corrupt", f"records {dict(facts.counts)}")
    return row(run_id, shown, "ok", f"{size} bytes")


def _own(name: str) -> bool:
    if TEMP_NAME.fullmatch(name):
        return True
    return any(name == own or name.startswith(own + "-") for own in OWN_FILES) or name == (
        STATE_FILE_NAME + ".lock"
    )


def _leading_id(name: str) -> int | None:
    return as_run_id(name.split(".", 1)[0])


def row(run_id: int | None, name: str, status: str, detail: str) -> Row:
    # A name that is not UTF-8 (an orphan `x\xff.ndjson` someone put there) is shown with
    # its bytes escaped: JSON holds text only (it was an internal error).
    shown = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return {"test_run_id": run_id, "file": shown, "status": status, "detail": detail}


def intact(rows: list[Row]) -> bool:
    return not any(row["status"] in PROBLEMS for row in rows)
