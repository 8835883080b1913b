"""What a run's statuses say: finished or not, processed or not, and so whether to
harvest it now, harvest it as incomplete, or leave it for later (`classify`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # at run time only where needed: `report` reads the names, and the
    # scheduler imports aiohttp (0.26 s of the report's start)
    from .api import JsonObject
    from .scheduler import RunTarget

#: run_status values after which a run never changes (finished, timed out, aborted ...).
FINAL_RUN_STATUSES = frozenset(range(3, 10))
PROCESSED, PROCESSING_ERROR = 2, 3
RUN_STATUS_NAMES = {
    -2: "created", -1: "validated", 0: "queued", 1: "initializing", 2: "running",
    3: "finished", 4: "timed out", 5: "aborted by user", 6: "aborted by system",
    7: "aborted by script error", 8: "aborted by threshold", 9: "aborted by limit",
}  # fmt: skip
PROCESSING_NAMES = {0: "not started", 1: "processing", 2: "processed", 3: "processing error"}
INCOMPLETE_REASON = "k6 Cloud reported a processing error (processing_status 3)"


@dataclass(frozen=True)
class PendingRun:
    """A run discovery saw but leaves for later, and why."""

    run_id: int
    reason: str
    run: JsonObject


def int_field(run: JsonObject, key: str) -> int | None:
    """An integer field of a run object; None when missing or not an integer."""
    value = run.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def classify(run: JsonObject) -> RunTarget | PendingRun:
    """Harvest a run whose `run_status` is final and whose processing is done (2) or failed
    (3, harvested as incomplete); leave every other run for the next time."""
    from .scheduler import RunTarget

    run_id = int(run["id"])
    run_status, processing = int_field(run, "run_status"), int_field(run, "processing_status")
    if run_status not in FINAL_RUN_STATUSES:
        name = RUN_STATUS_NAMES.get(run_status, "unknown") if run_status is not None else "unknown"
        return PendingRun(run_id, f"not finished: run_status {run_status} ({name})", run)
    if processing == PROCESSED:
        return RunTarget(run_id, run=run)
    if processing == PROCESSING_ERROR:
        return RunTarget(run_id, run=run, incomplete_reason=INCOMPLETE_REASON)
    name = PROCESSING_NAMES.get(processing, "unknown") if processing is not None else "unknown"
    return PendingRun(run_id, f"not processed yet: processing_status {processing} ({name})", run)
