"""Tables for people, and the same rows for programs: the harvest summary, `harvester
runs`, `harvester projects` and `harvester status`. Each table is laid out to read whole
at 80 columns.

rich is imported inside the functions: only a terminal pays for it.
"""

from __future__ import annotations

import csv
import sys
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

import orjson

if TYPE_CHECKING:
    from rich.console import Console

    from .job import JobResult

Row = dict[str, Any]


def plural(count: int, singular: str, many: str | None = None) -> str:
    """ "1 run", "2 runs", "0 retries"."""
    return f"{count} {singular if count == 1 else (many or singular + 's')}"


def make_console(stream: TextIO, *, force_terminal: bool | None = None) -> Console:
    from rich.console import Console

    if stream is sys.stderr:
        return Console(stderr=True, force_terminal=force_terminal)
    return Console(file=stream, force_terminal=force_terminal)


def summary_table(
    console: Console, result: JobResult, seconds: float, records: Counter[str], written: int
) -> None:
    """The closing summary for people: totals of what was kept, then each failed run."""
    from rich.table import Table

    s = result.stats
    table = Table(title="harvest summary", show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("value", justify="right")
    rate = s.request_count / seconds if seconds > 0 else 0.0
    rows = [
        ("runs harvested", f"{s.runs_done}"),
        ("runs failed", f"{len(result.report.failed)}"),
        ("already archived", f"{len(result.skipped)}"),
        *((("runs not harvested", f"{len(result.not_done)}"),) if result.not_done else ()),
        ("requests", f"{s.request_count} ({rate:.1f}/s)"),
        ("records", f"{sum(records.values())}"),
        *((f"  {kind}", f"{n}") for kind, n in sorted(records.items())),
        ("bytes written", f"{written / 1e6:.1f} MB"),
        ("retries", f"{s.retries}"),
        ("throttled (429, 503 + Retry-After)", f"{s.throttled}"),
        ("time", f"{seconds:.1f} s"),
    ]
    for what, value in rows:
        table.add_row(what, value)
    console.print(table)
    for outcome in result.report.failed:
        console.print(printable(f"run {outcome.run_id} failed: {outcome.reason}"), markup=False)


# --- rows for people and programs ---------------------------------------------------------

#: (row key, column header) of `harvester runs` on a TTY; JSON and CSV carry every key.
RUN_COLUMNS = (
    ("test_run_id", "run"),
    ("test", "test"),
    ("created", "created"),
    ("status", "status"),
    ("result", "result"),
    ("action", "action"),
)


#: The action column with its reason in a word (JSON and CSV carry the whole reason).
ACTION_WORDS = {("harvest", True): "harvest (incomplete)", ("skip", True): "skip (archived)"}
#: Columns that take the room left and wrap; the others keep their width.
WIDE_COLUMNS = frozenset({"test", "status", "action", "reason"})


def shown(value: Any) -> str:
    return "" if value is None else str(value)


def printable(text: str) -> str:
    """`text` with each character a terminal would act on (ESC, CR, a newline ...) as
    U+FFFD: a name the API gives is shown, never obeyed (`\x1b[2J` cleared the screen)."""
    return text if text.isprintable() else "".join(c if c.isprintable() else "\ufffd" for c in text)


def print_table(
    stream: TextIO,
    columns: Sequence[tuple[str, str]],
    rows: Sequence[Row],
    *,
    title: str | None = None,
    width: int | None = None,
    wide: frozenset[str] = WIDE_COLUMNS,
) -> None:
    """Rows as a rich table that wraps long cells instead of cutting them: the `wide`
    columns wrap, the others keep each value on one line."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # No vertical rules: 80 columns hold the cells, not the box around them.
    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for key, header in columns:
        wraps = key in wide
        table.add_column(header, overflow="fold", ratio=2 if wraps else None, no_wrap=not wraps)
    for row in rows:
        # Cells are text as it is, never rich markup: a test named 'a [/b]' by the API (or
        # a file '[red]x' in an archive) was an internal error (MarkupError), or shown
        # without its brackets.
        table.add_row(*(Text(printable(shown(row.get(key)))) for key, _ in columns))
    console = make_console(stream) if width is None else Console(file=stream, width=width)
    console.print(table)


def runs_table(stream: TextIO, rows: Sequence[Row], *, width: int | None = None) -> None:
    """`harvester runs` on a TTY: one row per discovered run."""
    people = [
        {
            **row,
            "test": row.get("test_name") or row.get("test_id"),
            "created": shown(row.get("created")).replace("T", " ")[:16],
            "action": ACTION_WORDS.get((shown(row.get("action")), bool(row.get("reason"))))
            or row.get("action"),
        }
        for row in rows
    ]
    print_table(stream, RUN_COLUMNS, people, width=width)


#: (row key, column header) of `harvester projects` on a TTY.
PROJECT_COLUMNS = (
    ("organization_id", "org id"),
    ("organization", "organization"),
    ("project_id", "project id"),
    ("project", "project"),
    ("tests", "tests"),
)


#: The columns of `harvester projects` that wrap: the names (the ids keep their width).
PROJECT_NAMES = frozenset({"organization", "project"})


def projects_table(stream: TextIO, rows: Sequence[Row], *, width: int | None = None) -> None:
    """`harvester projects` on a TTY: one row per project, "?" for a test count unknown."""
    people = [{**row, "tests": "?" if row.get("tests") is None else row["tests"]} for row in rows]
    # The names wrap: kept on one line, a long one cut the ids ("345" for 3458575).
    print_table(stream, PROJECT_COLUMNS, people, width=width, wide=PROJECT_NAMES)


def write_rows(stream: TextIO, rows: Sequence[Row], output: str) -> None:
    """Rows as NDJSON (`json`) or CSV with a header line (`csv`)."""
    if output == "csv":
        keys = list(dict.fromkeys(key for row in rows for key in row))
        writer = csv.DictWriter(stream, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        stream.write("".join(map(json_line, rows)))
    stream.flush()


def json_line(row: Row) -> str:
    """A row as one NDJSON line (`write_rows`; `verify` writes its rows one at a time)."""
    return orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE).decode()
