"""The commands that read an archive back and touch no API: status, verify, report.

Kept apart from `cli.py` (which parses, harvests and is the one exit point); their
heavy modules load only when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from . import cli
from . import cli_help as text
from .cli_flags import add_store_flags, store_flags

AddCommand = Callable[[str, str, str, str], argparse.ArgumentParser]


def add_archive_commands(add: AddCommand, command: str | None) -> None:
    """`status`, `verify` and `report`; the report's flags load only when it runs."""
    status = add("status", "what the state file says", text.STATUS, text.STATUS_EPILOG)
    where = status.add_mutually_exclusive_group()
    where.add_argument("--state", metavar="FILE", help="the state file to read")
    where.add_argument(
        "--out", metavar="DIR", help="archive directory (its state file), or s3://BUCKET/PREFIX/"
    )
    _add_store_and_output(status)
    status.set_defaults(handler=_cmd_status)
    verify = add(
        "verify", "check an archive against its manifests", text.VERIFY, text.VERIFY_EPILOG
    )
    verify.add_argument(
        "directory",
        metavar="DIR",
        help="the --out of a harvest: a directory or s3://BUCKET/PREFIX/",
    )
    _add_store_and_output(verify)
    verify.set_defaults(handler=_cmd_verify)
    report = add(
        "report", "an archive as one HTML page, or PNG charts", text.REPORT, text.REPORT_EPILOG
    )
    if command == "report":
        from .report import command as report_command

        report_command.add_arguments(report)
        report.set_defaults(handler=_cmd_report)


def _add_store_and_output(parser: argparse.ArgumentParser) -> None:
    add_store_flags(parser)
    parser.add_argument(
        "--output", choices=("table", "json"), help="table (default on a terminal) or json"
    )


def _cmd_status(ns: argparse.Namespace) -> int:
    """Read the state file (read-only: a running harvester may hold its lock)."""
    from .objectstore.location import is_s3
    from .status import read_status, status_path, write_status

    if ns.out and is_s3(ns.out):
        from .objectstore.status import archive_status

        report = archive_status(store_flags(ns.out, ns))
    else:
        report = read_status(status_path(ns.state, ns.out))
    output = ns.output or ("table" if sys.stdout.isatty() else "json")
    write_status(sys.stdout, report, output)
    return cli.EXIT_OK


def _cmd_verify(ns: argparse.Namespace) -> int:
    """Every file checked against its manifest; 1 when anything is not intact. JSON rows
    are written as they come, and a table keeps only the problems: an archive of 100,000
    runs is never held as rows."""
    from .cpus import usable_cpus
    from .errors import HarvesterError
    from .tables import json_line, plural, print_table
    from .verify import PROBLEMS, verify

    if ns.directory.lower().startswith("s3://"):  # (objectstore.is_s3: its package loads anyio)
        from .config import load_settings
        from .objectstore.verify import verify_store

        settings = load_settings(store_flags(ns.directory, ns))
        rows = verify_store(settings)
    else:
        rows = verify(ns.directory, workers=usable_cpus())
    output = ns.output or ("table" if sys.stdout.isatty() else "json")
    files = 0
    problems: list[dict[str, Any]] = []
    runs: set[int] = set()  # an orphan (None) is no run
    for row in rows:
        files += 1
        if row["status"] in PROBLEMS:
            problems.append(row)
        if output == "json":
            sys.stdout.write(json_line(row))
        elif row["test_run_id"] is not None:
            runs.add(row["test_run_id"])
    sys.stdout.flush()
    if not files:
        # Most likely a wrong path (a nightly check of it would pass for ever): say so.
        raise HarvesterError(
            f"nothing to verify in {ns.directory}: no run's manifest or data file there; "
            "give the --out directory (or s3:// prefix) of a harvest"
        )
    if output != "json":
        if problems:
            columns = [("test_run_id", "run"), ("file", "file"), ("status", "status"),
                       ("detail", "detail")]  # fmt: skip
            # A status is one word ("truncated" was cut in two at 80 columns).
            print_table(sys.stdout, columns, problems, wide=frozenset({"file", "detail"}))
        print(f"{files - len(problems)} of {files} files intact ({plural(len(runs), 'run')})")
    return cli.EXIT_FAILED if problems else cli.EXIT_OK


def _cmd_report(ns: argparse.Namespace) -> int:
    from .report.command import make_report

    for path in make_report(ns):
        print(f"report written to {path}")
    return cli.EXIT_OK
