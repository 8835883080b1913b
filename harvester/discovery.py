"""Which runs to harvest: selectors (projects, tests, a created-date window) -> run targets,
asked of the job's API backend (`backends/`: v2 or v6, chosen in `backends/choose.py`),
and the rows of `harvester runs`.

The selectors and what discovery found are `selection.py`'s (re-exported here); how a
backend lists projects, tests and runs is its own (`backends/v2_discovery.py`,
`backends/v6_discovery.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .api import JsonObject
from .backends.choose import backend_for
from .config import Settings
from .errors import ConfigError
from .export import run_archived
from .layout import Places
from .layout import parse_created as parse_created
from .ratelimit import RateGate
from .runstatus import FINAL_RUN_STATUSES, PROCESSED, PROCESSING_NAMES, RUN_STATUS_NAMES, int_field
from .selection import Discovery as Discovery
from .selection import Selection as Selection
from .selection import has_selectors as has_selectors
from .selection import sort_runs as sort_runs
from .selection import with_explicit as with_explicit
from .state import HarvestState
from .stats import HarvestStats
from .transport import Transport
from .values import parse_duration as parse_duration  # for the worker and the tests
from .values import parse_when as parse_when


async def discover_runs(
    settings: Settings,
    selection: Selection,
    *,
    gate: RateGate | None = None,
    stats: HarvestStats | None = None,
    state: HarvestState | None = None,
) -> Discovery:
    """The backend's discovery over a transport of its own (sharing `gate` and `stats`
    when given, so discovery and harvest count against one rate limit). With `state`,
    runs left for later are remembered and those earlier jobs left are asked about
    again (where the backend keeps them: v2)."""
    gate = gate if gate is not None else RateGate.for_settings(settings)
    stats = stats if stats is not None else HarvestStats()
    stats.runs_known = False  # (a worker's next cycle: its runs are not known yet)
    async with Transport(settings, gate=gate, stats=stats) as transport:
        backend = backend_for(settings, transport)
        await backend.prepare()
        found = await backend.discover(selection, state=state)
        await backend.after_job()  # only 404s, and so is a plain listing: v2 is gone
        return found


# --- listing (`harvester runs`) ---------------------------------------------------------


def archived_in(settings: Settings) -> Callable[[int], bool]:
    """Whether a run is archived in `--out DIR` (its final files exist; the files are the
    truth). The state file is not read: a running worker holds its lock."""
    if settings.to_stdout:
        return lambda _run_id: False
    if settings.to_object_store:
        from .objectstore.listing import list_archive

        return list_archive(settings).__contains__  # one listing of the prefix
    out = Path(settings.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {settings.out} is a file; give the directory a harvest writes")
    if not out.is_dir():
        return lambda _run_id: False  # no archive yet: a harvest would take every run
    places = Places(settings.layout, out)

    def archived(run_id: int) -> bool:  # in either --layout
        where = places.locate(run_id, None)
        return where is not None and run_archived(where, run_id, settings.export_csv)

    return archived


def listing(
    found: Discovery, archived: Callable[[int], bool] = lambda _: False
) -> list[JsonObject]:
    """One row per discovered run, by id: what a harvest would do with it and why."""
    rows: list[JsonObject] = []
    for target in found.targets:
        assert target.run is not None
        if archived(target.run_id):
            action, reason = "skip", "already archived"
        else:
            action, reason = "harvest", target.incomplete_reason or ""
        rows.append(_row(target.run, action, reason, found.test_names))
    rows.extend(_row(p.run, "wait", p.reason, found.test_names) for p in found.pending)
    rows.sort(key=lambda row: int(row["test_run_id"]))
    return rows


def _row(run: JsonObject, action: str, reason: str, test_names: dict[int, str]) -> JsonObject:
    test_id = int_field(run, "test_id")
    return {
        "test_run_id": run.get("id"),
        "test_id": test_id,
        "test_name": run.get("test_name") or (test_names.get(test_id) if test_id else None),
        "project_id": run.get("project_id"),
        "created": run.get("created"),
        "run_status": run.get("run_status"),
        "processing_status": run.get("processing_status"),
        "result_status": run.get("result_status"),
        "status": status_words(run),
        "result": result_word(run),
        "action": action,
        "reason": reason,
    }


def status_words(run: JsonObject) -> str:
    """ "finished", "running", "finished, processing": the run and, when not done yet or
    failed, its processing. A v6 run says it in words already (`status`)."""
    if "run_status" not in run and isinstance(run.get("status"), str):
        return str(run["status"])
    run_status, processing = int_field(run, "run_status"), int_field(run, "processing_status")
    words = RUN_STATUS_NAMES.get(run_status, "unknown") if run_status is not None else "unknown"
    if run_status in FINAL_RUN_STATUSES and processing != PROCESSED:
        more = PROCESSING_NAMES.get(processing, "unknown") if processing is not None else "unknown"
        words += f", {more}"
    return words


def result_word(run: JsonObject) -> str:
    """ "passed" or "failed" (its thresholds) for a run that is over; "" before."""
    if "run_status" not in run and isinstance(run.get("status"), str):
        return str(run.get("result") or "")  # v6: passed, failed, error or null
    if int_field(run, "run_status") not in FINAL_RUN_STATUSES:
        return ""
    result = int_field(run, "result_status")
    return {0: "passed", 1: "failed"}.get(result, "") if result is not None else ""
