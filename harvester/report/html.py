"""The page: one self-contained HTML file with uPlot, our script, styles and data inline."""

from __future__ import annotations

import re
from importlib.resources import files
from typing import Any

import orjson

_HERE = files(__package__)


def _asset(name: str) -> str:
    return (_HERE / name).read_text(encoding="utf-8")


def _inline(text: str) -> str:
    # Nothing inside a <script> or <style> element may close it early.
    return text.replace("</", "<\\/")


def _data(page: dict[str, Any]) -> str:
    """The page's JSON without a `<`: inside a string (the only place JSON has one)
    `\\u003c` is the same text, and the HTML parser sees no tag in it. `</` alone was
    escaped, and a name holding `<!--<script>` (a check's, a tag's) made the parser take
    the rest of the page for script text: no chart drew."""
    return orjson.dumps(page).decode().replace("<", "\\u003c")


_SLOT = re.compile(r"\{\{(title|styles|data|scripts)\}\}")


def render(page: dict[str, Any]) -> str:
    """The HTML text of a report page built by `build.build_page`. The slots are filled in
    one pass over the template: filled one after the other, a test named `{{scripts}}`
    had the scripts pasted into the page's data, which then did not parse."""
    slots = {
        "title": _escape(str(page.get("title", "k6 report"))),
        "styles": _asset("vendor/uPlot.min.css") + _asset("report.css"),
        "data": _data(page),
        "scripts": _inline(_asset("vendor/uPlot.iife.min.js") + "\n" + _asset("report.js")),
    }
    return _SLOT.sub(lambda slot: slots[slot[1]], _asset("template.html"))


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
