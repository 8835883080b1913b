"""The page: one self-contained HTML file with uPlot, our script, styles and data inline."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import orjson

_HERE = files(__package__)


def _asset(name: str) -> str:
    return (_HERE / name).read_text(encoding="utf-8")


def _inline(text: str) -> str:
    # Nothing inside a <script> or <style> element may close it early.
    return text.replace("</", "<\\/")


def render(page: dict[str, Any]) -> str:
    """The HTML text of a report page built by `build.build_page`."""
    data = orjson.dumps(page).decode()
    styles = _asset("vendor/uPlot.min.css") + _asset("report.css")
    scripts = _asset("vendor/uPlot.iife.min.js") + "\n" + _asset("report.js")
    return (
        _asset("template.html")
        .replace("{{title}}", _escape(str(page.get("title", "k6 report"))))
        .replace("{{styles}}", styles)
        .replace("{{data}}", _inline(data))
        .replace("{{scripts}}", _inline(scripts))
    )


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
