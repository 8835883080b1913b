"""`<id>.manifest.json`: what a published run is made of, so an archive can be proved intact.

A manifest names each of the run's files (the NDJSON, compressed or not, and the CSV
export when there is one) with its size and sha256, the records of each type, the gaps
(`missing_series`) and how the run was harvested (harvester version, API, base URL, time,
methods, step, format, compression).

Order of publication (why): the data files first, the manifest last. A manifest is
written only once every file it names is published whole (each by link after fsync), so
a manifest never names a file that is not there whole. The one window left, a crash
between the data file and its manifest, leaves a data file without a manifest: the next
job seals it (`seal`: the manifest made from the file itself, which is whole since it was
published atomically) before deciding what to harvest, and `verify` reports it meanwhile.
The reverse order would leave, after the same crash, a manifest naming a file that does
not exist, and a later job could not tell it from a lost file. Archives from before
manifests are sealed the same way by their next job.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from . import version
from .compression import codec_of, published_data, published_run
from .outdir import create_temp, discard, publish
from .provenance import API, methods_of, summary_of
from .scan import Scan as Scan  # sinks and verify take the scan from here
from .scan import open_regular
from .scan import scan as scan

SUFFIX = ".manifest.json"
FORMAT_VERSION = 1


def manifest_path(out_dir: Path, run_id: int) -> Path:
    return out_dir / f"{run_id}{SUFFIX}"


def job_facts(settings: Any) -> dict[str, Any]:
    """What a job's settings say about the data every run it writes holds."""
    facts: dict[str, Any] = {
        "api": settings.api,
        "base_url": settings.base_url,
        "methods": methods_of(settings),
        "details": settings.details,
        "format": settings.format,
        "compression": settings.compress,
    }
    if settings.api == "v6":
        facts["step"] = settings.step
    return facts


def _format_of(files: list[dict[str, Any]]) -> str:
    names = " ".join(entry["name"] for entry in files)
    return "parquet" if ".parquet" in names else "points" if ".points." in names else "raw"


def file_entry(path: Path, known: Scan | None = None) -> dict[str, Any]:
    """A file as its manifest names it; `known`: its size and sha256 already computed."""
    facts = known or scan(path, ndjson=".ndjson" in path.name)
    entry: dict[str, Any] = {"name": path.name, "bytes": facts.bytes, "sha256": facts.sha256}
    if facts.counts:
        entry["counts"] = dict(sorted(facts.counts.items()))
    return entry


def build(
    run_id: int,
    files: list[dict[str, Any]],
    facts: Mapping[str, Any],
    summary: Mapping[str, Any],
) -> dict[str, Any]:
    harvest = summary.get("harvest") if isinstance(summary.get("harvest"), dict) else {}
    counts: Counter[str] = Counter()
    for entry in files:
        counts.update(entry.get("counts", {}))
    return {
        "manifest": FORMAT_VERSION,
        "test_run_id": run_id,
        "harvester": (harvest or {}).get("harvester", version()),
        "time": (harvest or {}).get("time"),
        **facts,
        "complete": summary.get("complete"),
        "counts": dict(sorted(counts.items())),
        "missing_series": summary.get("missing_series", []),
        "files": files,
    }


def write(out_dir: Path, run_id: int, manifest: Mapping[str, Any], file_mode: int) -> None:
    """Publish the manifest (temporary file, fsync, then its name). It replaces one already
    there: the caller has just published the files it names, so an older manifest
    describes files that are no longer these."""
    final = manifest_path(out_dir, run_id)
    fd, temp = create_temp(out_dir, run_id, "manifest.json")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fd, file_mode)
            fh.write(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
            publish(temp, final, replace=True)
    except BaseException:
        discard(temp)
        raise


def seal(out_dir: Path, run_id: int, file_mode: int) -> bool:
    """Write the manifest of a run published without one (a crash between its data file and
    its manifest, or an archive from before manifests), from the files themselves. False
    when the run has no data file."""
    data = published_run(out_dir, run_id)
    if data is None:
        return False
    kinds = ("ndjson", "points.ndjson", "parquet", "meta.ndjson", "csv")
    paths = (published_data(out_dir, run_id, kind) for kind in kinds)
    files = [file_entry(path) for path in paths if path is not None]
    summary = summary_of(data) or {}
    found = summary.get("harvest")
    how: dict[str, Any] = found if isinstance(found, dict) else {}
    facts = {
        "api": how.get("api", API),
        "base_url": None,  # not recorded in the file: unknown
        "methods": how.get("methods"),
        "details": how.get("details"),
        "format": _format_of(files),
        "compression": codec_of(data),
        "sealed_later": True,
    }
    write(out_dir, run_id, build(run_id, files, facts, summary), file_mode)
    return True


#: A manifest is a few KB; one past this is not read (a tampered archive's must not fill
#: the memory of the `verify` that reads it).
MANIFEST_LIMIT = 16 << 20


def read(path: Path, run_id: int | None = None) -> dict[str, Any]:
    """A manifest, parsed (`run_id`: the run it must be of); ValueError when it is not one."""
    with open_regular(path) as fh:  # (a FIFO in its place is not waited on)
        return parse(fh.read(MANIFEST_LIMIT + 1), run_id)


def parse(data: bytes, run_id: int | None = None) -> dict[str, Any]:
    """A manifest's bytes, parsed; ValueError when they are not one, or (`run_id`) when
    they are another run's (a copy, or a link: it would vouch for that run's files)."""
    if len(data) > MANIFEST_LIMIT:
        raise ValueError(f"{len(data)} bytes: not a harvester manifest")
    manifest = orjson.loads(data)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise ValueError("not a harvester manifest")
    if run_id is not None and manifest.get("test_run_id") != run_id:
        raise ValueError(f"it is run {manifest.get('test_run_id')}'s manifest, not run {run_id}'s")
    for entry in named_files(manifest):
        # A manifest names files beside it, never a path: one tampered with must not make
        # verify (or a report) read what lies elsewhere.
        if not _beside(entry["name"]):
            raise ValueError(f"it names {entry['name']!r}, not a file beside it")
    return manifest


def _beside(name: str) -> bool:
    # A name past 255 bytes (NAME_MAX) is no file either: stat() of it raised
    # ENAMETOOLONG, an internal error of verify.
    fits = len(name.encode("utf-8", "surrogatepass")) <= 255
    return fits and name not in ("", ".", "..") and not any(c in name for c in "/\\\0")


def named_files(manifest: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for entry in manifest.get("files", []):
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            yield entry
