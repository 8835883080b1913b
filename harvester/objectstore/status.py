"""`harvester status --out s3://BUCKET/PREFIX/`: the local state file's view (when this
host has one) and the runs archived in the store, which are the truth."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..config import load_settings
from ..status import StatusReport, read_status
from .listing import list_archive
from .location import default_state_path


def archive_status(flags: Mapping[str, Any]) -> StatusReport:
    """`flags`: the archive's `out` and how to reach its store (`cli_flags.store_flags`)."""
    out = flags["out"]
    state = default_state_path(out)
    report = read_status(state) if state.is_file() else StatusReport(f"{state} (no state yet)")
    settings = load_settings(flags)
    stored = list_archive(settings)
    report.archive = (out, [stored[run_id].row() for run_id in sorted(stored)])
    return report
