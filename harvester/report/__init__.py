"""`harvester report`: an archive as one self-contained HTML page, or its charts as PNG."""

from __future__ import annotations

from .build import ReportOptions, build_page, choose_runs
from .html import render

__all__ = ["ReportOptions", "build_page", "choose_runs", "render"]
