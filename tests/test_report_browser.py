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
import struct
import sys
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from harvester.cli import main
from harvester.report import png
from harvester.report.browser import ARGS, executable
from harvester.simulator.generated import generate_cloud
from tests.k6_helpers import SIM_TOKEN, recording
from tests.report_helpers import (
    K6_RUN_ID,
    harvest,
    harvest_cloud,
    harvest_recording,
    serving,
)
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


@pytest.fixture(scope="module")
def v6_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real k6 run through v6 with mean, p95 and per-second series only: no counts
    to weight the mean by, so the page must call its mean (and requests) an estimate."""
    where = tmp_path_factory.mktemp("v6-report")
    with serving("k6-shop-run") as base_url:
        archive = harvest(base_url, SIM_TOKEN, where / "archive", "--run", str(K6_RUN_ID),
                          "--api", "v6", "--stack-id", "1", "--step", "1",
                          "--method", "mean", "--method", "p95", "--method", "rate")  # fmt: skip
    assert main(["report", str(archive), "--out", str(where / "v6.html")]) == 0
    return where / "v6.html"


#: Text in a name that broke the page: the HTML parser took what followed `<!--<script>`
#: for script text, and `{{scripts}}` had the scripts pasted into the page's data.
HOSTILE = "<!--<script>{{scripts}}"


@pytest.fixture(scope="module")
def hostile_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run whose URL tags all begin with `HOSTILE` (the archive's lines rewritten)."""
    where = tmp_path_factory.mktemp("hostile-report")
    archive = harvest_cloud(generate_cloud(runs=1, metrics=30, points=30), where / "archive")
    for path in archive.glob("*.ndjson"):
        path.write_bytes(path.read_bytes().replace(b'"url":"', b'"url":"' + HOSTILE.encode()))
    assert main(["report", str(archive), "--out", str(where / "hostile.html")]) == 0
    return where / "hostile.html"


@pytest.fixture(scope="module")
def browser(
    shop_page: Path, trends_page: Path, v6_page: Path, hostile_page: Path
) -> Iterator[Browser]:
    """Chromium, once every page exists (they are made before its event loop runs)."""
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
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url))
    page.goto(html.as_uri())
    page.wait_for_function("window.reportReady === true", timeout=20_000)
    # Self-contained: the file itself is the only thing the page loads (no network).
    assert [url for url in asked if not url.startswith("data:")] == [html.as_uri()]
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


def threshold_verdicts(page: Page) -> dict[tuple[str, str], bool]:
    """The thresholds table as shown: (metric, expression) -> crossed, each verdict in
    words and the crossed rows red."""
    rows = page.locator("table.thresholds tbody tr")
    shown = {}
    for i in range(rows.count()):
        cells = rows.nth(i).locator("td").all_inner_texts()
        metric, expression, verdict = cells[0], cells[1], cells[3]
        assert verdict in ("✗ crossed", "✓ passed")  # in words, not by colour alone
        shown[(metric, expression)] = verdict == "✗ crossed"
        color = rows.nth(i).locator("td").first.evaluate("e => getComputedStyle(e).color")
        assert (color == "rgb(176, 0, 32)") == shown[(metric, expression)]  # crossed: red
    assert rows.first.get_attribute("class") == "crossed"  # crossed ones first
    return shown


def facts(page: Page) -> dict[str, str]:
    """The run's header, term to value."""
    terms = page.locator("dl.facts dt").all_inner_texts()
    return dict(zip(terms, page.locator("dl.facts dd").all_inner_texts(), strict=True))


SHOP = orjson.loads(recording("k6-shop-run")[1].read_bytes())


def test_a_real_k6_run_draws_every_chart_and_shows_k6s_threshold_verdicts(
    shop_page: Path, browser: Browser, artifacts: Path
) -> None:
    page, errors = open_page(browser, shop_page)
    charts = assert_every_chart_drew_its_data(page, expected=6)
    duration = next(chart for chart in charts if chart["id"] == "duration")
    assert len(duration["lines"]) == 2  # default (mean) and p95, each once
    assert threshold_verdicts(page) == k6_threshold_results(SHOP["metrics"])
    shown = facts(page)  # k6's own mean and p95, exact: no estimate sign
    k6 = SHOP["metrics"]["http_req_duration"]
    assert shown["http_req_duration mean"] == f"{k6['avg']:.2f} ms"
    assert shown["http_req_duration p95"] == f"{k6['p(95)']:.2f} ms"
    assert "≈" not in page.inner_text("body")
    assert "Not in the archive" not in page.inner_text("body")
    page.screenshot(path=str(artifacts / "k6-shop-run.png"), full_page=True)
    assert errors == []


# (run id, "title (unit)") of every regression marker drawn on the trend charts.
MARKED = """() => window.reportCharts.flatMap(c => c.plot.series.flatMap((s, i) =>
  s.label !== "regression" ? [] : c.plot.data[i].flatMap((v, at) =>
    v == null ? [] : [[c.labels[at], c.title + " (" + c.unit + ")"]])))"""


def test_many_runs_draw_their_trends_and_a_run_without_records_says_what_is_unknown(
    trends_page: Path, browser: Browser, artifacts: Path
) -> None:
    page, errors = open_page(browser, trends_page)
    charts = assert_every_chart_drew_its_data(page, expected=5 + 6)
    assert {c["id"] for c in charts} >= {"trend-p95", "trend-mean", "trend-requests"}
    text = page.inner_text("body")
    assert "Regressions: worse than the median of the previous 5 runs" in text
    assert "Run dates unknown" in text and "Not in the archive: test, dates" in text
    # Each regression listed at the top is marked on its trend chart at its run, and only
    # those: the marker line's drawn points.
    listed = page.locator("table.regressions tbody tr")
    rows = {
        (cells[0], cells[2])
        for cells in (listed.nth(i).locator("td").all_inner_texts() for i in range(listed.count()))
    }
    assert rows == {tuple(marked) for marked in page.evaluate(MARKED)}
    assert len(rows) >= 3
    # Runs without a p95 threshold have their p95 estimated: the chart says so.
    assert "≈ estimated for some runs" in page.inner_text("#chart-trend-p95 h3")
    assert "≈" not in page.inner_text("#chart-trend-mean h3")
    page.screenshot(path=str(artifacts / "trends.png"), full_page=True)
    assert errors == []


def test_names_holding_html_or_the_templates_slots_are_shown_as_they_are(
    hostile_page: Path, browser: Browser
) -> None:
    page, errors = open_page(browser, hostile_page)
    assert_every_chart_drew_its_data(page, expected=6)
    urls = page.locator("table.urls tbody tr td:first-child").all_inner_texts()
    assert urls and all(url.startswith(HOSTILE) for url in urls)
    assert errors == []


def test_a_v6_archive_draws_the_same_page_and_says_which_figures_are_estimates(
    v6_page: Path, browser: Browser, artifacts: Path
) -> None:
    page, errors = open_page(browser, v6_page)
    assert_every_chart_drew_its_data(page, expected=6)
    assert threshold_verdicts(page) == k6_threshold_results(SHOP["metrics"])
    checks = page.locator("table.checks tbody tr")
    assert checks.count() == 4  # from the v6 check records
    shown = facts(page)
    assert shown["http_req_duration mean"].startswith("≈ ")
    assert shown["http_req_duration mean"].endswith(" ms (estimate)")
    k6 = SHOP["metrics"]["http_req_duration"]
    assert shown["http_req_duration p95"] == f"{k6['p(95)']:.2f} ms"  # from its threshold
    assert shown["status"] == "completed"
    assert shown["requests (http_reqs)"].endswith(" (estimate)")  # from per-second series
    assert "Estimates (the archive has no exact figure): ≈ mean: estimated" in page.inner_text(
        "body"
    )
    page.screenshot(path=str(artifacts / "v6.png"), full_page=True)
    assert errors == []


def png_facts(data: bytes) -> tuple[int, int, int]:
    """(width, height, distinct pixel rows) of a PNG, read with the standard library: its
    signature, every chunk's CRC, IHDR, and the IDAT stream inflated to exactly its rows."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, kind
        header = body if kind == b"IHDR" else header
        idat += body if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    stride = 1 + width * {0: 1, 2: 3, 4: 2, 6: 4}[colour] * depth // 8
    pixels = zlib.decompress(idat)
    assert len(pixels) == height * stride
    return width, height, len({pixels[i : i + stride] for i in range(0, len(pixels), stride)})


def test_png_output_is_one_drawn_file_per_chart(
    trends_page: Path, browser: Browser, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive, out = trends_page.parent / "archive", tmp_path / "png"
    args = ["report", str(archive), "--format", "png", "--out", str(out)]
    # In a thread of its own: Playwright's sync API will not start where the module's
    # browser already runs an event loop (this thread).
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(main, args).result() == 0
    written = [line.removeprefix("report written to ") for line in
               capsys.readouterr().out.splitlines()]  # fmt: skip
    # The charts of the page as a person sees it at the PNG width, in page order.
    page = browser.new_page(viewport={"width": png.WIDTH, "height": 800})
    page.goto(trends_page.as_uri())
    page.wait_for_function("window.reportReady === true")
    charts = page.evaluate(CHART_BOXES)
    assert len(charts) == 5 + 6  # the trends and the newest run's charts
    assert written == [str(out / f"{c['section']}-{c['chart']}.png") for c in charts]
    assert sorted(path.name for path in out.iterdir()) == sorted(Path(w).name for w in written)
    for chart, path in zip(charts, written, strict=True):
        width, height, rows = png_facts(Path(path).read_bytes())
        # The element's box in CSS pixels (scale 1), to the whole pixels it touches.
        assert abs(width - chart["width"]) < 2 and abs(height - chart["height"]) < 2, path
        assert rows > 40, path  # axes, labels and lines drawn, not a blank box


CHART_BOXES = """() => [...document.querySelectorAll("section .chart")].map(e => ({
  section: e.closest("section").id, chart: e.dataset.chart,
  width: e.getBoundingClientRect().width, height: e.getBoundingClientRect().height,
}))"""


def test_png_output_without_a_browser_or_a_writable_folder_is_one_line(
    trends_page: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    archive = str(trends_page.parent / "archive")
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("HARVESTER_CHROMIUM", str(tmp_path / "no-chromium"))
    cases = [(tmp_path / "png", "not an executable", 2), (blocker / "png", "cannot create", 1)]
    for out, said, code in cases:
        assert main(["report", archive, "--format", "png", "--out", str(out)]) == code
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and said in err and "Traceback" not in err
    monkeypatch.delenv("HARVESTER_CHROMIUM")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["report", archive, "--format", "png", "--out", str(tmp_path / "p")]) == 2
    assert "needs Chromium, which is not installed" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "playwright.sync_api", None)
    assert main(["report", archive, "--format", "png", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert "needs Playwright" in err and "pip install 'k6-harvester[png]'" in err
