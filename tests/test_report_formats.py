"""`harvester report` reads every archive the harvester writes (raw NDJSON in any
compression, `--format points`, `--format parquet`; the v2 and the v6 API) and draws one
report from each; its run-level figures are exact where the archive allows, else labelled
as estimates (issue 12)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from harvester.archive import open_archive
from harvester.cli import main
from harvester.formats import parquet as parquet_format
from harvester.report import ReportOptions, build_page, parquet_source
from harvester.report.facts import header_of, threshold_rows
from harvester.report.run import read_run
from harvester.report.series import from_v6, method_name, number, serie
from harvester.simulator.generated import generate_cloud
from tests.k6_helpers import RECORDINGS, SIM_TOKEN, recording
from tests.report_helpers import K6_RUN_ID, harvest, harvest_cloud, harvest_k6, serving
from tests.test_k6_roundtrip import k6_checks, k6_threshold_results

pytest.importorskip("pyarrow.parquet")

#: v6 at the v2 recording's one-second buckets, so both APIs give the same intervals.
V6 = ("--api", "v6", "--stack-id", "1", "--step", "1")
FORMATS = {
    "raw": ("--compress", "zstd"),
    "points": ("--format", "points", "--compress", "gzip"),
    "parquet": ("--format", "parquet"),
}


@pytest.fixture(autouse=True, scope="module")
def small_batches() -> Iterator[None]:
    """Parquet files of many row groups, read in batches that end mid-serie."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(parquet_format, "ROW_GROUP", 500)
        patch.setattr(parquet_source, "BATCH", 97)
        yield


def runs_of(archive: Path) -> list[dict[str, Any]]:
    """Each run's report data (header, charts, tables), by run id."""
    runs: list[dict[str, Any]] = build_page(archive, ReportOptions())["runs"]
    return sorted(runs, key=lambda run: run["run_id"])


def drawn(run: dict[str, Any]) -> int:
    """How many values the run's charts hold: a report with no data is no comparison."""
    return sum(len([v for v in s["values"] if v is not None])
               for chart in run["charts"] for s in chart["series"])  # fmt: skip


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The real k6 shop run through v2 and v6, in every format."""
    where = tmp_path_factory.mktemp("shop-formats")
    with serving("k6-shop-run") as base:
        return {
            f"{api}-{fmt}": harvest_k6(base, where / f"{api}-{fmt}", *args, *extra)
            for api, extra in (("v2", ("--run-record",)), ("v6", V6))
            for fmt, args in FORMATS.items()
        }


def test_points_and_parquet_give_the_same_report_as_raw(tmp_path: Path) -> None:
    # Two tests of two runs each: the page has trends and two runs' details.
    cloud = generate_cloud(runs=4, metrics=40, points=60, tests=2, projects=1)
    methods = ("--method", "default", "--method", "p95", "--method", "count")
    pages = {}
    for fmt, args in FORMATS.items():
        archive = harvest_cloud(cloud, tmp_path / fmt, "--run-record", *methods, *args)
        pages[fmt] = build_page(archive, ReportOptions())
        del pages[fmt]["generated"]
    raw = pages["raw"]
    assert len(raw["runs"]) == 2 and len(raw["trends"]) == 2
    assert all(drawn(run) > 300 and run["urls"]["rows"] for run in raw["runs"])
    assert pages["points"] == raw
    assert pages["parquet"] == raw


def with_map_tags(path: Path) -> None:
    """Rewrite a Parquet file with its tags as a `map<string, string>` column, as the
    first --format parquet wrote them (bb1d41a, before they became JSON text)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    tags = [list(orjson.loads(text).items()) for text in table.column("tags").to_pylist()]
    column = pa.array(tags, pa.map_(pa.string(), pa.string()))
    where = table.schema.get_field_index("tags")
    table = table.set_column(where, pa.field("tags", column.type), column)
    pq.write_table(table, path, compression="zstd", row_group_size=500)


def test_an_old_parquet_archive_with_map_tags_gives_the_same_report(tmp_path: Path) -> None:
    """`harvester report` read only tags as JSON text: an archive the first Parquet writer
    left (tags a map) was 'cannot read'. Both are read, to the same page."""
    cloud = generate_cloud(runs=2, metrics=30, points=40, tests=1, projects=1)
    archive = harvest_cloud(cloud, tmp_path / "parquet", "--method", "p95", *FORMATS["parquet"])
    new = build_page(archive, ReportOptions())
    files = sorted(archive.glob("*.parquet"))
    assert len(files) == 2
    for path in files:
        with_map_tags(path)
    old = build_page(archive, ReportOptions())
    del new["generated"], old["generated"]
    assert old == new and all(drawn(run) > 100 for run in new["runs"])
    assert main(["report", str(archive), "--out", str(tmp_path / "r.html")]) == 0


def test_every_format_of_a_real_run_gives_the_same_report(shop: dict[str, Path]) -> None:
    for api in ("v2", "v6"):
        [raw] = runs_of(shop[f"{api}-raw"])
        assert drawn(raw) > 100 and raw["checks"] and raw["thresholds"]
        assert runs_of(shop[f"{api}-points"]) == [raw], api
        assert runs_of(shop[f"{api}-parquet"]) == [raw], api


def test_a_v6_archive_gives_the_v2_report(shop: dict[str, Path]) -> None:
    [v2], [v6] = runs_of(shop["v2-raw"]), runs_of(shop["v6-raw"])
    assert v6["charts"] == v2["charts"] and len(v2["charts"]) == 6
    assert v6["checks"] == v2["checks"]
    assert v6["urls"] == v2["urls"]
    assert v6["empty_charts"] == v2["empty_charts"] == []
    for key in ("http_reqs", "iterations", "test", "project", "created", "started", "result"):
        assert v6["header"][key] == v2["header"][key], key
    assert v6["header"]["figures"] == pytest.approx(v2["header"]["figures"], rel=1e-9)
    assert v6["header"]["estimated"] == v2["header"]["estimated"] == {}
    verdicts = [(t["metric"], t["expression"], t["crossed"]) for t in v2["thresholds"]]
    assert [(t["metric"], t["expression"], t["crossed"]) for t in v6["thresholds"]] == verdicts
    # The measured values too, submetrics on tags v2 does not tell apart (scenario) included.
    assert any("scenario:" in t["metric"] for t in v2["thresholds"])
    for old, new in zip(v2["thresholds"], v6["thresholds"], strict=True):
        assert new["value"] == pytest.approx(old["value"], rel=1e-9), old


@pytest.mark.parametrize("name", RECORDINGS)
def test_the_run_mean_and_p95_are_k6s_own_figures(name: str, tmp_path: Path) -> None:
    summary = orjson.loads(recording(name)[1].read_bytes())
    duration = summary["metrics"]["http_req_duration"]
    with serving(name) as base:
        archives = [harvest_k6(base, tmp_path / "v2"), harvest_k6(base, tmp_path / "v6", *V6)]
    for archive in archives:
        [run] = runs_of(archive)
        figures = run["header"]["figures"]
        assert figures["mean"] == pytest.approx(duration["avg"], rel=1e-9), archive.name
        assert figures["p95"] == pytest.approx(duration["p(95)"], rel=1e-9), archive.name
        assert run["header"]["estimated"] == {}


def test_a_figure_the_archive_cannot_give_exactly_is_labelled_an_estimate(
    tmp_path: Path,
) -> None:
    with serving("k6-shop-run") as base:
        # histogram_avg without its counts: the mean is an estimate; p95 has its threshold.
        v6 = harvest(base, SIM_TOKEN, tmp_path / "v6", "--run", str(K6_RUN_ID), *V6,
                     "--method", "mean")  # fmt: skip
    [run] = runs_of(v6)
    # The error rate from ratio series only (no passes and fails) is one too; checks are
    # exact from the `check` records.
    assert set(run["header"]["estimated"]) == {"mean", "error_rate"}
    assert "per-interval" in run["header"]["estimated"]["mean"]
    # Generated runs: a p95 series, and a p95 threshold on some runs only.
    cloud = generate_cloud(runs=4, metrics=30, points=20)
    archive = harvest_cloud(cloud, tmp_path / "v2", "--method", "default", "--method", "p95")
    kinds = set()
    for archived in open_archive(archive):
        report = read_run(archived)
        threshold = [t["value"] for t in report.thresholds if t["expression"].startswith("p(95)")]
        if threshold:
            assert report.figures.values["p95"] == threshold[0]
        kinds.add(("p95" in report.figures.estimated, bool(threshold)))
    assert kinds == {(True, False), (False, True)}


def test_v6_check_and_threshold_records_fill_their_tables(tmp_path: Path) -> None:
    summary = orjson.loads(recording("k6-shop-run")[1].read_bytes())
    with serving("k6-shop-run") as base:
        # Only p95 series: the checks come from the `check` records alone.
        archive = harvest_k6(base, tmp_path / "v6", *V6, "--method", "p95")
    [run] = runs_of(archive)
    checks = {row["check"]: (row["passes"], row["fails"]) for row in run["checks"]}
    assert checks == {name: (float(p), float(f)) for name, (p, f) in k6_checks(summary).items()}
    shown = {(t["metric"], t["expression"]): t["crossed"] for t in run["thresholds"]}
    assert shown == k6_threshold_results(summary["metrics"])
    assert run["thresholds"][0]["crossed"] is True  # crossed ones first
    assert run["header"]["status"] == "completed" and run["header"]["started"]


def test_a_parquet_archive_without_pyarrow_is_one_line_naming_the_extra(
    shop: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    out = tmp_path / "r.html"
    assert main(["report", str(shop["v2-parquet"]), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'k6-harvester[parquet]'" in err
    assert "4242.parquet" in err and not out.exists()


def test_points_missing_beside_their_sidecar_are_named(
    shop: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "copy"
    archive.mkdir()
    meta = next(shop["v2-points"].glob("*.meta.ndjson*"))
    (archive / meta.name).write_bytes(meta.read_bytes())
    assert main(["report", str(archive), "--out", str(tmp_path / "r.html")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "4242.points.ndjson" in err and "Traceback" not in err


def test_a_date_layout_archive_of_points_is_found_and_drawn(tmp_path: Path) -> None:
    cloud = generate_cloud(runs=2, metrics=30, points=20, tests=2, projects=1)
    archive = harvest_cloud(cloud, tmp_path, "--layout", "date", "--format", "points")
    assert not list(tmp_path.glob("*.meta.ndjson"))  # the runs are under YYYY/MM/DD/
    runs = runs_of(archive)
    assert len(runs) == 2 and all(drawn(run) > 100 for run in runs)


def test_v5_methods_are_shown_under_their_v2_names() -> None:
    names = {"histogram_avg": "mean", "histogram_quantile(0.95)": "p95",
             "histogram_quantile(0.999)": "p99.9", "histogram_count_increase": "count",
             "increase": "sum", "increase_nz": "sum", "increase_z": "fails",
             "increase_total": "count", "ratio": "mean", "last": "last", "p95": "p95",
             None: "default", "value": None, "histogram_count_value": None}  # fmt: skip
    assert {method: method_name(method) for method in names} == names
    got = from_v6(
        {"method": "histogram_avg", "metric": "http_req_duration"},
        {"metric": {"__name__": "http_req_duration", "test_run_id": "7", "status": "200"},
         "values": [[1, "1.5"], [2, "NaN"], [3, 2], [4, None], [5, "x"]]},
    )  # fmt: skip
    assert got == serie("http_req_duration", (("status", "200"),), "mean", [(1.0, 1.5), (3.0, 2.0)])
    assert [number(v) for v in (True, float("inf"), "1e3", [1])] == [None, None, 1000.0, None]


def test_a_v6_threshold_it_could_not_compute_is_said_so_after_the_crossed_ones() -> None:
    records: list[dict[str, Any]] = [
        {"metric": "x", "expression": "p(95)<1", "query": None, "value": None,
         "crossed": None, "computed": True, "reason": "the run has no metric 'x'"},
        {"metric": "checks", "expression": "rate>0.9", "value": 0.5, "crossed": True},
        {"metric": "a", "expression": "count>1", "value": 5.0, "crossed": False},
    ]  # fmt: skip
    rows = threshold_rows(records, [])
    assert [row["metric"] for row in rows] == ["checks", "a", "x"]
    assert rows[-1]["reason"] == "the run has no metric 'x'" and rows[-1]["crossed"] is None
    run = {"id": 7, "status": "aborted", "result": "error", "created": "2026-01-01T00:00:00Z"}
    header, unknown = header_of(7, {"run": [run], "metric": [], "summary": []},
                                {"http_reqs": (None, False), "iterations": (None, False)},
                                rows)  # fmt: skip
    assert header["result"] == "error: the run did not complete" and header["started"] is None
    assert header["status"] == "aborted" and unknown == []
