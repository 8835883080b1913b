"""`harvester verify s3://BUCKET/PREFIX/`: an object-store archive checked as a directory
is (`harvester.verify`): each manifest's files there, of its size and sha256, each line a
record and the same counts; a data object without a manifest; objects no manifest names.

One listing of the prefix, read page by page as it comes: a run's objects are listed one
after another (all named `<id>.` something, so no other key sorts between them), so
memory holds one page, a few runs' names and a chunk of each object being read, never an
object or the whole listing. `AHEAD` runs are checked at once, their rows given in the
listing's order. Objects are read streaming, through the job's one S3 client (run on an
event loop of its own thread: `verify` is not async). As for a directory, only the root
of the prefix and its `YYYY/MM/DD/` and `undated/` are the archive's; other keys are not
looked at.
"""

from __future__ import annotations

import functools
import io
import re
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, cast

import anyio.from_thread
from anyio.from_thread import BlockingPortal

from .. import manifest
from ..compression import as_run_id, codec_of, run_id_of
from ..config import Settings
from ..scan import scan_opened
from ..verify import Row, judge, row, unnamed
from .listing import DATED
from .store import Store

#: A key below the prefix that may be the archive's: a name at the root or in a day's
#: directory; `run` when it begins with a run id.
ARCHIVE_KEY = re.compile(DATED + r"(?P<name>(?P<run>[0-9]+)?[^/]*)")
#: Keys a page of the listing holds at most (S3's own maximum).
PAGE_KEYS = 1000
#: Runs checked at once, each on a thread of its own: a store's answer takes a round trip
#: (tens of milliseconds to S3), which one run after another would wait out each time;
#: their hashing and decompressing let go of the GIL. Memory: a chunk of each.
AHEAD = 8


def verify_store(settings: Settings) -> Iterator[Row]:
    """One row per object of the archive (and per file a manifest names that is absent)."""
    with anyio.from_thread.start_blocking_portal() as portal:
        store = Store(settings)
        portal.call(store.open)  # a missing bucket, denied access: one line, before any row
        try:
            yield from _rows(_Reader(portal, store))
        finally:
            portal.call(store.close)


class _Reader:
    """The store's listing and objects, for code that is not async."""

    def __init__(self, portal: BlockingPortal, store: Store) -> None:
        self.portal = portal
        self.store = store
        self.prefix = store.loc.prefix

    def call(self, op: str, **kwargs: Any) -> Any:
        """`Store.call` from this thread."""
        return self.portal.call(functools.partial(self.store.call, op, **kwargs))

    def listing(self) -> Iterator[tuple[str, int]]:
        """(name below the prefix, size) of every object, page by page."""
        token: dict[str, str] = {}
        while True:
            page = self.call("list_objects_v2", Prefix=self.prefix, MaxKeys=PAGE_KEYS, **token)
            for item in page.get("Contents", []):
                yield item["Key"][len(self.prefix) :], int(item["Size"])
            if not page.get("IsTruncated"):
                return
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def open(self, name: str) -> BinaryIO:
        answer = self.call("get_object", Key=self.prefix + name)
        return cast(BinaryIO, _Body(self.portal, answer["Body"]))


class _Body(io.RawIOBase):
    """An object's body, read chunk by chunk from the client's event loop."""

    def __init__(self, portal: BlockingPortal, body: Any) -> None:
        self._portal = portal
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data: bytes = self._portal.call(self._body.read, len(buffer))
        memoryview(buffer)[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._portal.call(_close, self._body)
        super().close()


async def _close(body: Any) -> None:
    body.close()


def _rows(reader: _Reader) -> Iterator[Row]:
    """Each run's rows (`_checks`), checked `AHEAD` runs at a time, in the listing's order."""
    pool = ThreadPoolExecutor(AHEAD, thread_name_prefix="verify")
    pending: deque[Future[list[Row]]] = deque()
    try:
        for check in _checks(reader):
            pending.append(pool.submit(check))
            if len(pending) > AHEAD:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
    finally:
        # Not waited for when cut (Ctrl-C, a failed run): the client closes under the
        # runs still being read, which then end at once, rather than after their objects.
        pool.shutdown(wait=False, cancel_futures=True)


def _checks(reader: _Reader) -> Iterator[Callable[[], list[Row]]]:
    """The listing, one run (of one directory) at a time: what makes each one's rows."""
    group: dict[str, int] = {}
    current: tuple[str, int] | None = None
    for name, size in reader.listing():
        found = ARCHIVE_KEY.fullmatch(name)
        if found is None:
            continue  # below another directory: not the archive's
        where = found["dir"] + "/" if found["dir"] else ""
        run_id = as_run_id(found["run"] or "")
        if run_id is None or not found["name"].startswith(found["run"] + "."):
            yield functools.partial(list, [row(None, name, "orphan", "named by no manifest")])
            continue
        run = (where, run_id)
        if run != current:
            if current is not None:
                yield functools.partial(_run_rows, reader, *current, group)
            current, group = run, {}
        group[found["name"]] = size
    if current is not None:
        yield functools.partial(_run_rows, reader, *current, group)


def _run_rows(reader: _Reader, where: str, run_id: int, objects: dict[str, int]) -> list[Row]:
    return list(_check_run(reader, where, run_id, objects))


def _check_run(reader: _Reader, where: str, run_id: int, objects: dict[str, int]) -> Iterator[Row]:
    """The rows of one run's objects in one directory (`where`: '' or 'YYYY/MM/DD/')."""
    named: set[str] = set()
    broken: dict[int, str] = {}  # its manifest is there but does not parse: why
    name = f"{run_id}{manifest.SUFFIX}"
    if name in objects:
        named.add(name)
        try:
            found = _manifest(reader, where + name, objects[name], run_id)
        except ValueError as exc:  # orjson's JSONDecodeError is a ValueError
            yield row(run_id, where + name, "corrupt", f"manifest does not parse: {exc}")
            found, broken[run_id] = {}, f"({name}) does not parse: not checked"
        else:
            yield row(run_id, where + name, "ok", "")
        for entry in manifest.named_files(found):
            named.add(entry["name"])
            shown = where + entry["name"]
            size = objects.get(entry["name"])
            yield judge(run_id, shown, entry, size, functools.partial(_scan, reader, shown))
    for other in sorted(set(objects) - named):
        yield unnamed(run_id, where + other, run_id_of(Path(other)), broken, None)


def _manifest(reader: _Reader, name: str, size: int, run_id: int) -> dict[str, Any]:
    if size > manifest.MANIFEST_LIMIT:
        raise ValueError(f"{size} bytes: not a harvester manifest")
    with reader.open(name) as body:
        return manifest.parse(body.read(), run_id)


def _scan(reader: _Reader, name: str) -> manifest.Scan:
    opener = functools.partial(reader.open, name)
    kinds = {"ndjson": ".ndjson" in name, "points": ".points." in name}
    return scan_opened(opener, codec_of(Path(name)), **kinds)
