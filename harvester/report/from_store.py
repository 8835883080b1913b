"""`harvester report s3://BUCKET/PREFIX/`: the page of an object-store archive, drawn from
a copy of the runs it can show (`objectstore.download`) in a temporary directory, which
goes once the page is made. The page is the one a directory with the same objects gives;
its messages name the objects by their s3:// URL, not the copy's path."""

from __future__ import annotations

import functools
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio

from ..errors import ConfigError, HarvesterError
from ..objectstore.download import Wanted
from .build import ReportOptions, asked, build_page, record_matches


def _wanted(options: ReportOptions) -> Wanted:
    """The runs to copy. With --run, those runs, whatever --test and --since say: they are
    few, and chosen among the copies as in a directory, whose messages then name a run
    asked for that is there but older or of another test (not "not in the archive")."""
    if options.run_ids:
        return Wanted(frozenset(options.run_ids))
    if options.tests or options.since:
        return Wanted(
            since=options.since, record=functools.partial(record_matches, options=options)
        )
    return Wanted()


def build_store_page(flags: Mapping[str, Any], options: ReportOptions) -> dict[str, Any]:
    """The page of the archive at `flags["out"]` (`cli_flags.store_flags`: how to reach it)."""
    from ..config import load_settings
    from ..objectstore.download import copy_archive
    from ..objectstore.location import parse_location

    settings = load_settings(flags)
    loc = parse_location(settings.out)
    shown = f"s3://{loc.bucket}/{loc.prefix}"
    wanted = _wanted(options)
    with tempfile.TemporaryDirectory(prefix="harvester-report-") as local:
        copied = anyio.run(copy_archive, settings, Path(local), wanted)
        if not copied.archived:
            raise ConfigError(f"no archived run in {shown}: give the s3:// --out of a harvest")
        if not copied.runs and not options.run_ids:  # (--run: `select` names the missing)
            unrecorded = copied.unrecorded > 0
            raise ConfigError(f"no archived run in {shown} matches: {asked(options, unrecorded)}")
        megabytes = copied.bytes / 1e6
        sys.stderr.write(f"read {copied.runs} of {copied.archived} runs from {shown} "
                         f"({megabytes:.1f} MB)\n")  # fmt: skip
        try:
            return build_page(local, options)
        except HarvesterError as exc:
            exc.args = (str(exc).replace(f"{local}/", shown).replace(local, shown),)
            raise
