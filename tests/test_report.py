"""`harvester report` without a browser: the archive reader, the figures a page shows, the
selection of runs, regressions, downsampling and the size of the page (issue 12)."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import tempfile
from array import array
from pathlib import Path

import orjson
import pytest

from harvester.archive import ArchivedRun, ArchiveError, open_archive, select
from harvester.cli import main
from harvester.errors import ConfigError
from harvester.report import ReportOptions, build_page, render
from harvester.report.lines import Line, downsample
from harvester.report.run import read_run
from harvester.report.trends import RunPoint, regressions
from harvester.simulator.generated import generate_cloud
from tests.k6_helpers import recording
from tests.process_helpers import ROOT, run_as_reader
from tests.report_helpers import K6_RUN_ID, harvest_cloud, harvest_recording, page_data
from tests.test_k6_roundtrip import k6_checks, k6_threshold_results


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real k6 shop recording, harvested with its run record."""
    return harvest_recording("k6-shop-run", tmp_path_factory.mktemp("shop"), "--run-record")


@pytest.fixture(scope="module")
def nightly(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six runs of one test, harvested by id with their run records."""
    cloud = generate_cloud(runs=6, metrics=40, points=40, tests=1, projects=1)
    return harvest_cloud(cloud, tmp_path_factory.mktemp("nightly"), "--run-record")


# --- the archive reader ------------------------------------------------------------------


def test_records_of_a_type_come_in_file_order_and_other_lines_stay_unparsed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "7.ndjson"
    path.write_bytes(
        b'{"type":"metric","test_run_id":7,"data":{"id":"a"}}\n'
        b'{"type":"series", this line is never parsed when only metrics are asked\n'
        b'{"type":"metric","test_run_id":7,"data":{"id":"b"}}\n'
    )
    run = open_archive(tmp_path)[0]
    assert [r["data"]["id"] for r in run.records("metric")] == ["a", "b"]
    with pytest.raises(ArchiveError, match=r"7\.ndjson:2: not a JSON line"):
        list(run.records())


def test_the_archive_lists_run_files_only_and_names_runs_it_lacks(tmp_path: Path) -> None:
    for name in ("3.ndjson", "12.ndjson", ".5.ndjson.partial", "notes.ndjson", "4.csv"):
        (tmp_path / name).write_text("")
    runs = open_archive(tmp_path)
    assert [run.run_id for run in runs] == [3, 12]
    with pytest.raises(ConfigError, match="run 99 is not in the archive"):
        select(runs, [3, 99])
    with pytest.raises(ConfigError, match="is not a directory"):
        open_archive(tmp_path / "3.ndjson")


# --- one run: a real k6 recording ----------------------------------------------------------


def test_a_real_k6_run_shows_k6s_own_totals_thresholds_and_checks(shop: Path) -> None:
    run_file, summary_file = recording("k6-shop-run")
    summary = orjson.loads(summary_file.read_bytes())
    figures = summary["metrics"]
    report = read_run(ArchivedRun(K6_RUN_ID, shop / f"{K6_RUN_ID}.ndjson"))
    header = report.header
    assert header["http_reqs"] == figures["http_reqs"]["count"]
    assert header["iterations"] == figures["iterations"]["count"]
    assert header["status"] and header["created"] and header["test"] is not None
    assert header["result"] == "failed: a threshold was crossed"  # k6 exited 99
    verdicts = {(row["metric"], row["expression"]): row["crossed"] for row in report.thresholds}
    assert verdicts == k6_threshold_results(figures)
    crossed = [row["crossed"] for row in report.thresholds]
    assert crossed == sorted(crossed, reverse=True) and crossed[0]  # crossed ones first
    checks = {row["check"]: (row["passes"], row["fails"]) for row in report.checks}
    assert checks == {name: (float(p), float(f)) for name, (p, f) in k6_checks(summary).items()}
    got = report.figures.values
    assert got["requests"] == figures["http_reqs"]["count"]
    failed = figures["http_req_failed"]
    assert got["error_rate"] == failed["passes"] / (failed["passes"] + failed["fails"])
    # Exact, not estimated: the mean weighted by requests, p95 from the threshold.
    duration = figures["http_req_duration"]
    assert got["mean"] == pytest.approx(duration["avg"], rel=1e-9)
    assert got["p95"] == pytest.approx(duration["p(95)"], rel=1e-9)
    assert report.figures.estimated == {}


def test_every_chart_of_a_real_run_has_data_and_each_aggregation_is_labelled_once(
    shop: Path,
) -> None:
    run = read_run(ArchivedRun(K6_RUN_ID, shop / f"{K6_RUN_ID}.ndjson")).as_json()
    charts = {chart["id"]: chart for chart in run["charts"]}
    assert set(charts) == {"vus", "rps", "duration", "failed", "checks", "data"}
    assert run["empty_charts"] == []
    for chart in charts.values():
        assert chart["x"] and all(any(v is not None for v in s["values"]) for s in chart["series"])
    labels = [s["label"] for s in charts["duration"]["series"]]
    # default (k6 Cloud's mean here) and p95, the default named by its method; sum and
    # count are archived too, but they are no durations.
    assert labels == ["mean (mean of URLs)", "p95 (slowest URL)"]
    assert run["urls"]["rank"] == "p95" and run["urls"]["rows"]


def test_the_default_aggregation_asked_again_by_name_is_drawn_once(tmp_path: Path) -> None:
    cloud = generate_cloud(runs=1, metrics=30, points=20)
    out = harvest_cloud(cloud, tmp_path, "--method", "default", "--method", "mean")
    run = read_run(open_archive(out)[0]).as_json()
    duration = next(chart for chart in run["charts"] if chart["id"] == "duration")
    assert [s["label"] for s in duration["series"]] == ["mean (mean of URLs)"]


def test_a_run_harvested_without_its_run_record_still_renders_and_says_what_is_unknown(
    tmp_path: Path,
) -> None:
    out = harvest_cloud(generate_cloud(runs=1, metrics=30, points=20), tmp_path)
    page = build_page(out, ReportOptions())
    run = page["runs"][0]
    assert run["unknown"] and "no run record" in run["unknown"][0]
    assert "test" not in run["header"] and run["header"]["project"] is not None
    assert run["header"]["result"].endswith("(from the thresholds)")
    assert "--run-record" in render(page)


# --- many runs ----------------------------------------------------------------------------


def test_many_runs_of_a_test_give_trends_and_the_newest_runs_details(nightly: Path) -> None:
    page = build_page(nightly, ReportOptions())
    [trend] = page["trends"]
    assert trend["dated"] and len(trend["runs"]) == 6
    titles = {chart["title"] for chart in trend["charts"]}
    assert {"http_req_duration mean", "Failed requests", "Requests", "Checks passed"} <= titles
    for chart in trend["charts"]:
        assert chart["x"] == sorted(chart["x"]) and len(chart["series"][0]["values"]) == 6
    assert [run["run_id"] for run in page["runs"]] == [trend["runs"][-1]]


def test_a_run_worse_than_the_median_of_the_previous_runs_is_a_regression() -> None:
    def point(run_id: int, p95: float, checks: float) -> RunPoint:
        return RunPoint(run_id, None, {"p95": p95, "checks": checks})

    points = [point(1, 100, 1.0), point(2, 300, 0.99), point(3, 105, 0.99),
              point(4, 110, 0.99), point(5, 130, 0.8)]  # fmt: skip
    found = regressions(points, margin=0.10, baseline=3)
    # run 2: 300 vs 100; run 5: 130 vs median(300, 105, 110) = 110 (+18%); checks fell 19%.
    assert [(r["run"], r["trend"]) for r in found] == [(2, "p95"), (5, "checks"), (5, "p95")]
    assert found[-1]["median"] == 110 and found[-1]["change"] == pytest.approx(20 / 110)
    assert regressions(points, margin=0.25, baseline=3) == found[:1]  # -19% and +18% pass


def test_the_regression_margin_decides_which_runs_are_marked(nightly: Path, tmp_path: Path) -> None:
    marked = {}
    for margin in ("50%", "1%"):
        out = tmp_path / f"{margin[:-1]}.html"
        assert main(["report", str(nightly), "--regression", margin, "--out", str(out)]) == 0
        data = page_data(out.read_text())
        assert data["margin"] == float(margin[:-1]) / 100
        marked[margin] = {(row["run"], row["trend"]) for row in data["regressions"]}
        # Each listed regression is a marker on its trend chart, at its run.
        [trend] = data["trends"]
        drawn = {(int(trend["charts"][0]["labels"][at]), chart["id"].removeprefix("trend-"))
                 for chart in trend["charts"] for series in chart["series"][1:]
                 for at, value in enumerate(series["values"]) if value is not None}  # fmt: skip
        assert drawn == marked[margin]
    assert marked["50%"] < marked["1%"]


def test_run_selection_by_test_and_date_needs_run_records(
    nightly: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = open_archive(nightly)
    test_id = runs[0].first("run")["data"]["test_id"]  # type: ignore[index]
    assert len(build_page(nightly, ReportOptions(tests=(test_id,)))["runs"]) == 1
    out = tmp_path / "r.html"
    code = main(["report", str(nightly), "--test", "1", "--out", str(out)])
    assert code == 2 and not out.exists()
    # Every run has its record: the archive holds no run of test 1, and says only that.
    assert capsys.readouterr().err == (
        f"harvester: no archived run in {nightly} matches: --test 1\n"
    )
    bare = harvest_cloud(generate_cloud(runs=1, metrics=5, points=5), tmp_path / "bare")
    assert main(["report", str(bare), "--test", "1", "--out", str(out)]) == 2
    assert "need run records: harvest with --run-record" in capsys.readouterr().err
    code = main(["report", str(nightly), "--since", "2999-01-01", "--out", str(out)])
    assert code == 2
    code = main(["report", str(nightly), "--run", str(runs[2].run_id), "--out", str(out)])
    assert code == 0 and page_data(out.read_text())["title"] == f"k6 run {runs[2].run_id}"


@pytest.mark.parametrize(
    ("args", "cut"),
    [
        (("--compress", "zstd"), "half"),  # zstandard's reader ended quietly inside a frame
        (("--compress", "zstd", "--format", "points"), "points"),
        ((), "summary"),  # cut at a line's end: every line parses, the last is not there
    ],
)
def test_a_run_file_cut_short_fails_the_report_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], cut: str
) -> None:
    out = harvest_cloud(generate_cloud(runs=2, metrics=20, points=20), tmp_path / "a", *args)
    run = open_archive(out)[0]
    if cut == "summary":
        lines = run.path.read_bytes().splitlines(keepends=True)
        run.path.write_bytes(b"".join(lines[:-1]))
    else:
        path = next(out.glob(f"{run.run_id}.points.*")) if cut == "points" else run.path
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    capsys.readouterr()  # the harvest's
    assert main(["report", str(out), "--out", str(tmp_path / "r.html")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    said = "no summary record" if cut == "summary" else "ends inside a zstd frame: cut short"
    assert f"{run.run_id}." in err and said in err, err
    assert not (tmp_path / "r.html").exists()


def test_bad_report_flags_are_one_line_and_exit_2(
    nightly: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # '²' passed str.isdigit(), then int() made it an internal error (exit 1).
    odd = [["--run", "²"], ["--run", "１２"], ["--test", "0"], ["--run", str(2**63)]]
    for args in (["--regression", "ten"], ["--run", "x"], ["--baseline", "0"], *odd):
        assert main(["report", str(nightly), *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert "internal error" not in err and (args[0] != "--run" or "not a run id" in err)


def test_out_dash_is_the_page_on_stdout_not_a_file_named_dash(
    nightly: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfdbinary: pytest.CaptureFixture[bytes],
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(nightly), "--out", "-"]) == 0
    page = capfdbinary.readouterr().out.decode()
    assert page_data(page)["runs"] and page.rstrip().endswith("</html>")
    assert main(["report", str(nightly), "--format", "png", "--out", "-"]) == 2
    assert b"give --out a directory" in capfdbinary.readouterr().err
    assert list(tmp_path.iterdir()) == []


# --- drawing budget -----------------------------------------------------------------------


def test_downsampling_keeps_every_buckets_extremes() -> None:
    xs = [float(i) for i in range(10_000)]
    ys: list[float | None] = [float(i % 7) for i in range(10_000)]
    ys[4321], ys[8765] = 1e6, -1e6
    kept_x, [kept] = downsample(xs, [ys], limit=200)
    assert len(kept_x) <= 202 and 1e6 in kept and -1e6 in kept
    assert kept_x[0] == 0 and kept_x[-1] == 9999


def test_a_line_folds_series_by_timestamp() -> None:
    line = Line("mean")
    line.add(array("d", [10.0, 11.0]), array("d", [1.0, 5.0]))
    line.add(array("d", [10.0]), array("d", [3.0]))
    assert line.folded() == {10.0: 2.0, 11.0: 5.0}
    with pytest.raises(ValueError):
        Line("median")


def test_a_400_metric_run_makes_a_page_under_10_mb(tmp_path: Path) -> None:
    cloud = generate_cloud(runs=1, metrics=400, points=1500)
    out = harvest_cloud(cloud, tmp_path / "archive", "--method", "default", "--method", "p95")
    page = tmp_path / "report.html"
    assert main(["report", str(out), "--out", str(page)]) == 0
    size = page.stat().st_size
    assert 100_000 < size < 10_000_000
    data = page_data(page.read_text())
    assert max(len(chart["x"]) for chart in data["runs"][0]["charts"]) <= 1202


def test_the_demo_ends_by_writing_a_report_of_what_it_harvested(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    command = [sys.executable, str(ROOT / "scripts" / "demo.py"), "--out", str(out),
               "--runs", "4", "--metrics", "20", "--points", "5"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    page = out / "report.html"
    assert done.stdout.splitlines()[-1] == f"open it in a browser: {page.as_uri()}"
    data = page_data(page.read_text())
    assert len(data["trends"]) == 2  # two tests, two runs each, with their run records
    assert all(run["header"].get("created") for run in data["runs"])


def test_the_readme_shows_a_small_screenshot_of_a_report() -> None:
    readme = (ROOT / "README.md").read_text()
    [image] = re.findall(r"!\[A report of a real k6 run\]\((\S+\.png)\)", readme)
    data = (ROOT / image).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 200_000
    width, height = struct.unpack(">II", data[16:24])  # IHDR
    assert width >= 800 and height >= 600


#: `harvester report DIR --out -` by this user or (root) by nobody (root cannot be refused
#: a read): the interpreter starts as root and imports what the report needs first.
#: What `report` imports before it reads as another user (`run_as_reader`).
REPORT_IMPORTS = """
from harvester.cli import build_parser, main
import sqlite3, harvester.report.command, harvester.report.build, harvester.report.html
build_parser("report")
"""


def test_a_day_the_report_cannot_list_is_said_and_not_exit_0() -> None:
    """--layout date, a day directory the reader may not list: its runs were left out of
    the page in silence, exit 0 (verify names such a directory: so does the report)."""
    root = os.geteuid() == 0
    cloud = generate_cloud(runs=4, metrics=5, points=5)
    with tempfile.TemporaryDirectory() as where:
        archive = Path(where)
        archive.chmod(0o755)
        harvest_cloud(cloud, archive, "--layout", "date", "--file-mode", "0644", "--run-record")
        days = sorted({path.parent for path in archive.rglob("*.ndjson")})
        assert len(days) >= 2  # (the simulator's runs are a day or more apart)
        for folder in {p for day in days for p in (day, day.parent, day.parent.parent)}:
            folder.chmod(0o755)
        shut, seen = days[-1], {int(p.name.split(".")[0]) for p in days[0].glob("*.ndjson")}
        shut.chmod(0o700 if root else 0o000)
        work = "sys.exit(main(['report', archive, '--out', '-']))"
        done = run_as_reader(REPORT_IMPORTS, work, archive)
        shut.chmod(0o755)
    assert done.returncode == 1, done.stderr
    said = [line for line in done.stderr.decode().splitlines() if line.startswith("harvester:")]
    assert said == [
        f"harvester: report written to stdout, but cannot list {shut} (Permission denied): "
        "their runs are not in the report"
    ]
    shown = {run["run_id"] for run in page_data(done.stdout.decode())["runs"]}
    assert seen <= shown
