"""`harvester report`: flags, and writing the page (or its charts as PNG) where asked."""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..cli_flags import add_store_flags, store_flags
from ..errors import ConfigError, HarvesterError, OutputError
from .build import ReportOptions, build_page, unread
from .html import render

_MARGIN = re.compile(r"\s*(\d+(?:\.\d+)?)\s*%?\s*")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "archive", metavar="DIR", help="the --out of a harvest: a directory or s3://BUCKET/PREFIX/"
    )
    p.add_argument("--run", dest="runs", action="append", metavar="ID", help="a run; repeatable")
    p.add_argument(
        "--test", dest="tests", action="append", metavar="T", help="runs of a test id; repeatable"
    )
    p.add_argument("--since", help="runs created at or after: 2026-01-31 or an age like 30d")
    p.add_argument("--format", choices=("html", "png"), default="html", help="default html")
    p.add_argument(
        "--out",
        help="the HTML file (default report.html; - for stdout), or the directory for --format png",
    )
    p.add_argument(
        "--regression",
        default="10%",
        metavar="PCT",
        help="mark a run worse than the median of the previous runs by more (default 10%%)",
    )
    p.add_argument(
        "--baseline", type=int, default=5, metavar="N", help="previous runs compared (default 5)"
    )
    add_store_flags(p)


def options_from(ns: argparse.Namespace) -> ReportOptions:
    since = None
    if ns.since:  # discovery imports aiohttp: a quarter of a second, when it is needed
        from ..discovery import parse_when

        since = parse_when(ns.since, "--since", now=datetime.now(UTC))
    match = _MARGIN.fullmatch(ns.regression)
    if not match:
        raise ConfigError(f"--regression {ns.regression!r} is not a percentage: write e.g. 10%")
    if ns.baseline < 1:
        raise ConfigError("--baseline must be at least 1")
    return ReportOptions(
        run_ids=tuple(_run_id(r) for r in ns.runs or ()),
        tests=tuple(_run_id(t, "--test") for t in ns.tests or ()),
        since=since,
        margin=float(match[1]) / 100,
        baseline=ns.baseline,
    )


def make_report(ns: argparse.Namespace) -> list[Path]:
    """Write the report; the files written (none for `--out -`: the page went to stdout,
    as `config init -` writes the example)."""
    if ns.format == "png" and ns.out == "-":
        raise ConfigError("--format png writes one file per chart: give --out a directory")
    options = options_from(ns)
    unlisted: list[tuple[Path, OSError]] = []
    if ns.archive.lower().startswith("s3://"):
        from .from_store import build_store_page

        page = build_store_page(store_flags(ns.archive, ns), options)
    else:
        page = build_page(ns.archive, options, unlisted)
    written = _write(ns, page)
    if unlisted:  # (as verify: said, and not exit 0; it was left out in silence)
        where = ", ".join(map(str, written)) or "stdout"
        raise HarvesterError(f"report written to {where}, but {unread(unlisted)}")
    return written


def _write(ns: argparse.Namespace, page: dict[str, Any]) -> list[Path]:
    if ns.out == "-":  # not a file named `-` in the working directory
        sys.stdout.buffer.write(render(page).encode())
        sys.stdout.flush()
        return []
    if ns.format == "png":
        from .png import write_pngs

        return write_pngs(render(page), Path(ns.out or "report-png"))
    out = Path(ns.out or "report.html")
    write_atomically(out, render(page).encode())
    return [out]


def write_atomically(path: Path, data: bytes) -> None:
    """A reader never sees half a page: a temporary file beside it, renamed into place."""
    try:
        fd, temp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(temp, 0o644)  # a page to share, unlike the archive itself
        os.replace(temp, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _run_id(text: str, flag: str = "--run") -> int:
    """An id as harvest reads one (`values.resource_id`: ASCII digits up to int64, or the
    web app's URL): str.isdigit() took '²', then int() made it an internal error."""
    from ..values import resource_id

    try:
        return int(resource_id("tests" if flag == "--test" else "runs")(text))
    except ValueError as exc:
        raise ConfigError(f"{flag} {text!r} {exc}") from None
