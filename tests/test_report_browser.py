"""The report as a person sees it: the page opened from a file in a real Chromium (Debian's
`chromium`, driven by Playwright), its charts counted through uPlot's own objects, its
tables read from the DOM, and screenshots kept as artifacts (issue 12).

One browser per module; Playwright's sync API runs an event loop in this thread while it
lives, so every archive and page is made by fixtures before it starts. Outside CI a
missing browser skips these tests with the reason; in CI (CI=true) it fails them:
`scripts/test` installs Chromium where it can.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from harvester.cli import main
from harvester.report.browser import ARGS, executable
from harvester.simulator.generated import generate_cloud
from tests.k6_helpers import recording
from tests.report_helpers import harvest_cloud, harvest_recording
from tests.test_k6_roundtrip import k6_threshold_results

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

# What each chart drew, read from uPlot: its lines, and per line the points it drew (the
# index range uPlot drew, `idxs`, holding non-null values) and how many values it had.
DRAWN = """() => window.reportCharts.map(c => ({
  id: c.id, drawn: c.drawn,
  lines: c.plot.series.slice(1).map((s, i) => ({
    label: s.label, shown: s.show,
    points: c.plot.data[i + 1].slice(s.idxs[0], s.idxs[1] + 1).filter(v => v != null).length,
    values: c.plot.data[i + 1].filter(v => v != null).length,
  })),
}))"""


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}: CI needs the browser (scripts/test installs it as root)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[dev]')")
    path = executable()
    if path is None:
        _unavailable("Chromium is not installed (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """Where the screenshots go; the path is written to the terminal."""
    where = tmp_path_factory.mktemp("report-screenshots", numbered=True)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"report screenshots: {where}")
    return where


def open_page(browser: Browser, html: Path) -> tuple[Page, list[str]]:
    """The page opened from its file, all charts drawn; the console errors it logged."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(html.as_uri())
    page.wait_for_function("window.reportReady === true", timeout=20_000)
    return page, errors


def assert_every_chart_drew_its_data(page: Page, expected: int) -> list[dict[str, Any]]:
    charts: list[dict[str, Any]] = page.evaluate(DRAWN)
    assert len(charts) == expected == page.locator(".chart canvas").count()
    for chart in charts:
        assert chart["drawn"] >= 1, chart["id"]
        for line in chart["lines"]:
            assert line["shown"] and line["values"] > 0, (chart["id"], line)
            assert line["points"] == line["values"], (chart["id"], line)
    # Every chart is on the page when it opens: nothing folded away or hidden.
    for box in page.locator(".chart").all():
        bounds = box.bounding_box()
        assert box.is_visible() and bounds is not None and bounds["height"] > 100
    return charts


@pytest.fixture(scope="module")
def shop_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("shop-report")
    archive = harvest_recording("k6-shop-run", where / "archive", "--run-record")
    assert main(["report", str(archive), "--out", str(where / "report.html")]) == 0
    return where / "report.html"


@pytest.fixture(scope="module")
def trends_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five runs of one test harvested by id (no run records), with their p95."""
    where = tmp_path_factory.mktemp("trends-report")
    cloud = generate_cloud(runs=5, metrics=30, points=30, tests=1, projects=1)
    archive = harvest_cloud(cloud, where / "archive", "--method", "default", "--method", "p95")
    assert main(["report", str(archive), "--out", str(where / "trends.html")]) == 0
    return where / "trends.html"


def test_a_real_k6_run_draws_every_chart_and_shows_k6s_threshold_verdicts(
    shop_page: Path, trends_page: Path, browser: Browser, artifacts: Path
) -> None:
    page, errors = open_page(browser, shop_page)
    charts = assert_every_chart_drew_its_data(page, expected=6)
    duration = next(chart for chart in charts if chart["id"] == "duration")
    assert len(duration["lines"]) == 2  # default (mean) and p95, each once
    rows = page.locator("table.thresholds tbody tr")
    shown = {}
    for i in range(rows.count()):
        cells = rows.nth(i).locator("td").all_inner_texts()
        metric, expression, verdict = cells[0], cells[1], cells[3]
        assert verdict in ("✗ crossed", "✓ passed")  # in words, not by colour alone
        shown[(metric, expression)] = verdict == "✗ crossed"
        color = rows.nth(i).locator("td").first.evaluate("e => getComputedStyle(e).color")
        assert (color == "rgb(176, 0, 32)") == shown[(metric, expression)]  # crossed: red
    figures = orjson.loads(recording("k6-shop-run")[1].read_bytes())["metrics"]
    assert shown == k6_threshold_results(figures)
    assert rows.first.get_attribute("class") == "crossed"  # crossed ones first
    assert "Not in the archive" not in page.inner_text("body")
    page.screenshot(path=str(artifacts / "k6-shop-run.png"), full_page=True)
    assert errors == []


def test_many_runs_draw_their_trends_and_a_run_without_records_says_what_is_unknown(
    trends_page: Path, browser: Browser, artifacts: Path
) -> None:
    page, errors = open_page(browser, trends_page)
    charts = assert_every_chart_drew_its_data(page, expected=5 + 6)
    assert {c["id"] for c in charts} >= {"trend-p95", "trend-mean", "trend-requests"}
    text = page.inner_text("body")
    assert "Regressions: worse than the median of the previous 5 runs" in text
    assert "Run dates unknown" in text and "Not in the archive: test, dates" in text
    page.screenshot(path=str(artifacts / "trends.png"), full_page=True)
    assert errors == []


def test_png_output_is_the_pages_charts(shop_page: Path, browser: Browser, tmp_path: Path) -> None:
    # Its own process: this thread's event loop belongs to the module's browser.
    archive, out = shop_page.parent / "archive", tmp_path / "png"
    command = [sys.executable, "-m", "harvester", "report", str(archive),
               "--format", "png", "--out", str(out)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("report written to") == 6
    files = sorted(path.name for path in out.iterdir())
    assert len(files) == 6 and all(name.startswith("run-") for name in files)
    assert all((out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for name in files)
