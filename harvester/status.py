"""`harvester status`: what the state file says, without sqlite3 — runs by state, each
failure with its reason, the runs waiting for a later harvest.

The file is opened read-only (an SQLite `mode=ro` URI): a harvester or worker may be
using it, and its lock is a flock on a separate `.lock` file that reading does not take.
Whatever statuses the file holds are counted; none is assumed, except that a `running`
run is shown `interrupted` when no live job holds the lock (`StateLock.held`): its job
was killed (SIGKILL, the OOM killer, a power cut) before it could record anything.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

import orjson

from .errors import ConfigError
from .state import STATE_FILE_NAME
from .state_file import StateLock, refuse_foreign
from .tables import Row, plural, print_table

#: A run the state calls running that no live job holds.
INTERRUPTED = "interrupted"
#: Statuses the file holds that are listed run by run (the others are only counted),
#: and all listed: a `running` one may be shown as interrupted.
LISTED_IN_FILE = ("failed", "waiting", "running")
LISTED = (*LISTED_IN_FILE, INTERRUPTED)
INTERRUPTED_WHY = "its job ended without recording it (killed?); the next harvest takes it again"


@dataclass
class StatusReport:
    state: str
    counts: dict[str, int] = field(default_factory=dict)
    runs: dict[str, list[Row]] = field(default_factory=dict)  # by status, for LISTED
    #: An object-store archive's runs, read from the store (the truth): where, and rows.
    archive: tuple[str, list[Row]] | None = None

    def as_json(self) -> dict[str, Any]:
        shown = {"state": self.state, "counts": self.counts, **self.runs}
        if self.archive is not None:
            shown["archive"] = {"url": self.archive[0], "runs": self.archive[1]}
        return shown


def status_path(state: str | None, out: str | None) -> Path:
    """--state FILE, or the default state file of --out DIR."""
    if state:
        return Path(state)
    if out and out != "-":
        return Path(out) / STATE_FILE_NAME
    raise ConfigError("status of what? give --out DIR (an archive) or --state FILE")


def read_status(path: Path) -> StatusReport:
    if not path.is_file():
        raise ConfigError(
            f"no state file at {path}; give the --out DIR a harvest wrote to, or --state FILE"
        )
    refuse_foreign(path)  # as a harvest says it: SQLite's words were "file is not a database"
    try:
        db = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot read state file {path}: {exc}") from None
    try:
        db.row_factory = sqlite3.Row
        return _report(db, path, live=StateLock.held(path))
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"{path} is not a harvester state file ({exc})") from None
    finally:
        db.close()


def _report(db: sqlite3.Connection, path: Path, *, live: bool) -> StatusReport:
    """`live`: a job holds the state now, so its `running` runs are in flight."""
    report = StatusReport(str(path))

    def shown(status: str) -> str:
        return INTERRUPTED if status == "running" and not live else status

    for row in db.execute("SELECT status, count(*) FROM runs GROUP BY status ORDER BY status"):
        report.counts[shown(row[0])] = row[1]
    for status in LISTED_IN_FILE:
        rows = db.execute("SELECT * FROM runs WHERE status = ? ORDER BY run_id", (status,))
        found = [_run(dict(row)) for row in rows]
        if found and shown(status) == INTERRUPTED:
            found = [{**row, "status": INTERRUPTED, "reason": INTERRUPTED_WHY} for row in found]
        if found:
            report.runs[shown(status)] = found
    return report


def _run(row: Row) -> Row:
    """A state row for people and programs: the time in ISO 8601, no empty columns."""
    updated = row.pop("updated_at", None)
    if isinstance(updated, int | float):
        row["updated"] = datetime.fromtimestamp(updated, UTC).isoformat(timespec="seconds")
    return {key: value for key, value in row.items() if value is not None}


def write_status(stream: TextIO, report: StatusReport, output: str) -> None:
    if output == "json":
        stream.write(orjson.dumps(report.as_json()).decode() + "\n")
        stream.flush()
        return
    total = sum(report.counts.values())
    by_state = ", ".join(f"{n} {status}" for status, n in report.counts.items()) or "no runs"
    stream.write(f"{report.state}: {plural(total, 'run')} ({by_state})\n")
    if report.archive is not None:
        url, archived = report.archive
        stream.write(f"{url}: {plural(len(archived), 'run')} archived\n")
    stream.flush()
    for status in LISTED:
        rows = [{**row, "updated": row.get("updated", "").replace("T", " ")[:16]}
                for row in report.runs.get(status, [])]  # fmt: skip
        if rows:
            columns = [("run_id", "run"), ("attempts", "tries"), ("updated", "updated")]
            if any("reason" in row for row in rows):
                columns.append(("reason", "why"))
            print_table(stream, columns, rows, title=f"{status} runs")
