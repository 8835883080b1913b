"""`harvester status --out s3://BUCKET/PREFIX/`: the local state file's view (when this
host has one) and the runs archived in the store, which are the truth."""

from __future__ import annotations

from ..config import load_settings
from ..status import StatusReport, read_status
from .listing import list_archive
from .location import default_state_path


def archive_status(out: str, endpoint: str | None) -> StatusReport:
    state = default_state_path(out)
    report = read_status(state) if state.is_file() else StatusReport(f"{state} (no state yet)")
    settings = load_settings({"out": out, "s3_endpoint_url": endpoint})
    stored = list_archive(settings)
    report.archive = (out, [stored[run_id].row() for run_id in sorted(stored)])
    return report
