"""`--format png`: the page's charts as PNG files, drawn by the same page in Chromium.

The HTML page is opened in headless Chromium and each chart element is screenshotted, so
the PNGs are exactly the charts a person sees in the page (one renderer, not two)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..errors import OutputError
from .browser import chromium

WIDTH = 1000
#: Longest wait for the page to draw its charts, in milliseconds.
DRAW_TIMEOUT = 30_000


def write_pngs(html: str, out_dir: Path) -> list[Path]:
    """One `<section>-<chart>.png` per chart in `out_dir`; the files written."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {out_dir}: {exc.strerror or exc}") from exc
    written = []
    with tempfile.TemporaryDirectory() as tmp, chromium() as browser:
        page_file = Path(tmp) / "report.html"
        page_file.write_text(html, encoding="utf-8")
        page = browser.new_page(viewport={"width": WIDTH, "height": 800})
        page.goto(page_file.as_uri())
        page.wait_for_function("window.reportReady === true", timeout=DRAW_TIMEOUT)
        for chart in page.query_selector_all("section .chart"):
            section = chart.evaluate("e => e.closest('section').id")
            path = out_dir / f"{section}-{chart.get_attribute('data-chart')}.png"
            chart.screenshot(path=str(path))
            written.append(path)
    return written
