"""The commands that list what the API holds: `runs` (what a harvest would take) and
`projects` (what the token sees).

Kept apart from `cli.py` (which parses, harvests and is the one exit point), as the
archive's commands are (`cli_archive`); their modules load only when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from . import cli_help as text
from .cli import (
    EXIT_FAILED,
    EXIT_OK,
    require_token,
    run_async,
    say_not_found,
    settings_from_args,
)
from .cli_archive import AddCommand
from .cli_flags import (
    add_api_flags,
    add_discovery_flags,
    add_log_flags,
    add_organization_flag,
    add_output_flag,
    add_s3_endpoint_flag,
)
from .cli_streams import stdout_to_devnull
from .errors import OutputError


def add_listing_commands(add: AddCommand) -> None:
    """`runs` and `projects`."""
    runs = add("runs", "list the runs a harvest would take", text.RUNS, text.RUNS_EPILOG)
    add_discovery_flags(runs)
    runs.add_argument(
        "--out", metavar="DIR", help="archive directory: runs already in it are marked skip"
    )
    add_s3_endpoint_flag(runs, "for --out s3://: S3-compatible store")
    add_output_flag(runs)
    add_log_flags(runs, quiet=False)
    add_api_flags(runs)
    runs.set_defaults(handler=_cmd_runs)
    projects = add(
        "projects", "list the organizations and projects the token sees", text.PROJECTS,
        text.PROJECTS_EPILOG,
    )  # fmt: skip
    what = projects.add_argument_group("what")
    add_organization_flag(what, "only the projects of this organization; repeatable")
    what.add_argument("--page-size", metavar="N", help="page size when a list is paged (50)")
    add_output_flag(projects)
    add_api_flags(projects)
    projects.set_defaults(handler=_cmd_projects)


def _cmd_runs(ns: argparse.Namespace) -> int:
    from .discovery import Selection, archived_in, discover_runs, listing
    from .errors import ConfigError
    from .progress import Reporter
    from .tables import runs_table

    settings = settings_from_args(ns)
    selection = Selection.from_settings(settings)
    if not selection.active:
        raise ConfigError(
            "nothing to list: give --project P, --test T, --organization O or --all-projects"
        )
    require_token(settings)
    archived = archived_in(settings)  # a bad --out is said before any request
    found = run_async(discover_runs, settings, selection)
    _show_rows(ns.output, listing(found, archived), runs_table)
    reporter = Reporter.for_settings(settings, live_allowed=False)
    reporter.discovered(found)
    return EXIT_FAILED if say_not_found(reporter, found) else EXIT_OK


def _show_rows(output: str | None, rows: Any, table: Any) -> None:
    """`table(stdout, rows)` for people (the default on a terminal), else NDJSON or CSV."""
    from .tables import write_rows

    output = output or ("table" if sys.stdout.isatty() else "json")
    try:
        if output == "table":
            table(sys.stdout, rows)
        else:
            write_rows(sys.stdout, rows, output)
        sys.stdout.flush()
    except BrokenPipeError:  # `| head -1`: `cli.main` says it
        raise
    except OSError as exc:  # `> /dev/full`: as a harvest to `--out -` says it
        stdout_to_devnull()
        raise OutputError(f"cannot write to stdout: {exc.strerror or exc}") from exc


def _cmd_projects(ns: argparse.Namespace) -> int:
    """One row per project the token sees: a table on a TTY, NDJSON otherwise."""
    from .projects import list_projects
    from .tables import projects_table

    settings = settings_from_args(ns)
    require_token(settings)
    _show_rows(ns.output, run_async(list_projects, settings), projects_table)
    return EXIT_OK
