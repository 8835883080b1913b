"""The CSV export of a run (`--export-csv`): ask k6 Cloud for it, wait, keep the file.

For run N: read the run object (one request); unless it already names an `export_file`,
`POST /loadtests/v2/runs/N/export` and poll the run object (each poll through the rate
gate, with a growing pause between polls) until it does, for at most `--export-timeout`
seconds. `export_status` values are not documented, so only `export_file` is trusted.
The file, typically a signed URL on a storage host, is downloaded without the token and
kept byte for byte: `N.csv.gz` when it is gzip (by its magic bytes), `N.csv` otherwise.
It is written to a temporary name, fsynced, and published without replacing a file
already there, all before the run's NDJSON is published (the scheduler waits for it),
so an archived run always has its export. A stored `export_file` that no longer answers
(403/404/410: a signed URL expires) is asked for once more with a new POST.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import anyio
from yarl import URL

from .api import V2, CloudApi, JsonObject
from .compression import published_run
from .errors import ApiStatusError, HarvesterError, OutputError
from .layout import Places, make_dirs
from .outdir import create_temp, discard, publish
from .retry import RetryPolicy
from .sinks import FILE_MODE, current_umask, fsync_directory, writing_to

GZIP_MAGIC = b"\x1f\x8b"
SUFFIXES = (".csv.gz", ".csv")
#: A stored URL answering these has expired (signed URLs answer 403): export again, once.
EXPIRED = frozenset({403, 404, 410})
#: The pause between polls grows like the retry backoff, but never past this exponent.
MAX_POLL_STEP = 16


class ExportTimeout(HarvesterError):
    """k6 Cloud did not finish the run's CSV export within `--export-timeout`."""


@dataclass(frozen=True)
class ExportedFile:
    path: Path
    size: int


def published_csv(out_dir: Path, run_id: int) -> Path | None:
    """The run's published export, if any (`N.csv.gz` or `N.csv`)."""
    for suffix in SUFFIXES:
        path = out_dir / f"{run_id}{suffix}"
        if path.exists():
            return path
    return None


def run_archived(out_dir: Path, run_id: int, export_csv: bool) -> bool:
    """A run is archived when its NDJSON (compressed or not) is published and, with
    --export-csv, its CSV."""
    if published_run(out_dir, run_id) is None:
        return False
    return not export_csv or published_csv(out_dir, run_id) is not None


def export_file_of(run: JsonObject) -> str | None:
    """`export.export_file` of a `k6-run` object, when it names a URL."""
    export = run.get("export")
    found = export.get("export_file") if isinstance(export, dict) else None
    return found if isinstance(found, str) and found else None


class CsvExporter:
    """Fetches runs' CSV exports into `out_dir` (each into its run's directory there, as
    `places` say: --layout); one per job, shared by its runs."""

    def __init__(
        self,
        api: CloudApi,
        out_dir: Path,
        *,
        timeout: float,
        replace: bool = False,
        file_mode: int | None = FILE_MODE,
        places: Places | None = None,
    ) -> None:
        self.api = api
        self.places = places if places is not None else Places("flat", out_dir)
        # --file-mode as for the NDJSON files; None: what the umask leaves of 0666.
        self.file_mode = file_mode if file_mode is not None else 0o666 & ~current_umask()
        self.timeout = timeout
        self.replace = replace  # --force: a new export replaces the published one
        self._policy: RetryPolicy = api.transport.policy

    async def export(self, run_id: int) -> ExportedFile:
        """The run's export, published. One already published (a job that stopped between
        the CSV and the NDJSON) is kept as it is: no request, no second copy."""
        existing = published_csv(self.places.directory(run_id), run_id)
        if existing is not None and not self.replace:
            return ExportedFile(existing, existing.stat().st_size)
        stored = export_file_of(await self.api.get_run(run_id))
        if stored is not None:
            try:
                return await self._download(run_id, stored)
            except ApiStatusError as exc:
                if exc.status not in EXPIRED:
                    raise
        url = await self._new_export(run_id, expired=stored)
        return await self._download(run_id, url)

    async def _new_export(self, run_id: int, *, expired: str | None) -> str:
        """POST the export and poll the run object until it names a file (other than the
        expired one, which the run object may still show for a while)."""
        await self.api.transport.post(
            "export", self.api.transport.url(f"{V2}/runs/{run_id}/export")
        )
        with anyio.move_on_after(self.timeout):
            step = 0
            while True:
                step += 1
                await anyio.sleep(self._policy.backoff(min(step, MAX_POLL_STEP)))
                url = export_file_of(await self.api.get_run(run_id))
                if url is not None and url != expired:
                    return url
        raise ExportTimeout(
            f"the CSV export was not ready after {self.timeout:g}s (--export-timeout)"
        )

    def _file_url(self, text: str) -> URL:
        """`export_file` as an absolute http(s) URL (a relative one is on the API's host)."""
        try:
            url = self.api.transport.url("").join(URL(text, encoded=True))
        except ValueError:
            url = URL()
        if url.scheme not in ("http", "https") or not url.host:
            raise ApiStatusError(f"the run's export_file is not an http(s) URL ({text[:80]!r})")
        return url

    async def _download(self, run_id: int, url: str) -> ExportedFile:
        target = self._file_url(url)
        with self._temporary(run_id) as (fh, temp):
            try:
                await self.api.transport.download(target, fh)
            except HarvesterError:
                raise  # (a RequestTimeout is an OSError too: it is no disk error)
            except OSError as exc:
                raise OutputError(f"cannot write to {temp}: {exc.strerror or exc}") from exc
            final = self.places.directory(run_id) / f"{run_id}{_suffix(fh)}"
            with writing_to(final):
                await anyio.to_thread.run_sync(self._publish, fh, temp, run_id, final)
        return ExportedFile(final, final.stat().st_size)

    @contextlib.contextmanager
    def _temporary(self, run_id: int) -> Iterator[tuple[BinaryIO, Path]]:
        """A temporary file of this writer only (`outdir.create_temp`: unique, flocked while
        open, so no other job's cleanup removes it), removed unless published. The run's
        directory is made here too: the export runs beside the run's fetch, and may be
        ready before the writer has opened the run (--layout date)."""
        where = self.places.directory(run_id)
        with writing_to(where):
            make_dirs(self.places.root, self.places.relative(run_id))
            fd, temp = create_temp(where, run_id, "csv")
        os.fchmod(fd, self.file_mode)
        try:
            with os.fdopen(fd, "w+b") as fh:
                yield fh, temp
        finally:
            discard(temp)

    def _publish(self, fh: BinaryIO, temp: Path, run_id: int, final: Path) -> None:
        fh.flush()
        os.fsync(fh.fileno())
        if self.replace:
            # The new export may be gzip where the old one was not: keep one of them.
            old = published_csv(final.parent, run_id)
            if old is not None and old != final:
                old.unlink()
        # Without --force a file another writer published stays as it is.
        publish(temp, final, replace=self.replace)
        fsync_directory(final.parent)


def _suffix(fh: BinaryIO) -> str:
    """`.csv.gz` for gzip bytes (their magic number), `.csv` for anything else."""
    fh.seek(0)
    return ".csv.gz" if fh.read(len(GZIP_MAGIC)) == GZIP_MAGIC else ".csv"


def summary_fields(exported: ExportedFile) -> dict[str, Any]:
    """What the run's `summary` record says about its export."""
    return {"export_file": exported.path.name, "export_bytes": exported.size}
