"""How `harvester report` reads series fast (typed, as arrays, folded a column at a time)
without changing what it shows: lines fold exactly whatever the order and number of
series, and a line or chunk of another shape than the writer's is read as before."""

from __future__ import annotations

import math
import random
import re
from array import array
from pathlib import Path
from typing import Any

import pytest

from harvester import archive as archive_module
from harvester.archive import ArchivedRun, ArchiveError, open_archive
from harvester.report import ReportOptions, build_page
from harvester.report import source as report_source
from harvester.report.lines import COMPACT, Line, epoch
from harvester.report.run import read_run
from harvester.report.series import Clock
from harvester.simulator.generated import generate_cloud
from tests.report_helpers import harvest_cloud


def folds(how: str, series: list[tuple[list[float], list[float]]]) -> dict[float, float]:
    line = Line(how)
    for times, values in series:
        line.add(array("d", times), array("d", values))
    return line.folded()


def test_a_line_of_many_series_folds_each_timestamp_exactly_in_any_order() -> None:
    rng = random.Random(7)
    grid = [float(t) for t in range(50)]
    # more series than a grid keeps before compacting, of very different magnitudes, and
    # a few on other grids (a serie with gaps, one shifted)
    series = [(grid, [rng.uniform(-1, 1) * 10 ** rng.randint(-8, 12) for _ in grid])
              for _ in range(3 * COMPACT + 5)]  # fmt: skip
    series += [(grid[::2], [1e-3] * 25), ([t + 0.5 for t in grid], [2.0] * 50)]
    every: dict[float, list[float]] = {}
    for times, values in series:
        for t, v in zip(times, values, strict=True):
            every.setdefault(t, []).append(v)
    total = {t: math.fsum(vs) for t, vs in every.items()}
    mean = {t: math.fsum(vs) / len(vs) for t, vs in every.items()}
    assert folds("sum", series) == total
    assert folds("mean", series) == mean
    assert folds("max", series) == {t: max(vs) for t, vs in every.items()}
    rng.shuffle(series)
    assert folds("sum", series) == total and folds("mean", series) == mean


def test_a_serie_with_a_time_twice_counts_both_points() -> None:
    assert folds("sum", [([1.0, 1.0, 2.0], [1.0, 2.0, 3.0])]) == {1.0: 3.0, 2.0: 3.0}
    assert folds("mean", [([1.0, 1.0], [1.0, 2.0]), ([1.0], [6.0])]) == {1.0: 3.0}


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    cloud = generate_cloud(runs=1, metrics=30, points=300)
    where = tmp_path_factory.mktemp("reading")
    return {fmt: harvest_cloud(cloud, where / fmt, "--format", fmt) for fmt in ("raw", "points")}


def report_of(archive: Path) -> dict[str, Any]:
    page = build_page(archive, ReportOptions())
    del page["generated"]
    return page


def copied(archive: Path, to: Path) -> Path:
    to.mkdir()
    for path in archive.iterdir():
        (to / path.name).write_bytes(path.read_bytes())
    return to


def test_values_written_as_text_are_read_as_before_and_give_the_same_report(
    archives: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A value as text ("1.5", as v5 sends them) is not the writer's shape: its line (raw)
    or chunk (points) is read as before, and the figures do not change."""
    monkeypatch.setattr(report_source, "CHUNK", 4096)  # many chunks, a few of them odd
    for fmt, archive in archives.items():
        expected = report_of(archive)
        odd = copied(archive, tmp_path / fmt)
        path = next(odd.glob("*.points.ndjson" if fmt == "points" else "*[0-9].ndjson"))
        text = path.read_bytes()
        changed = re.sub(rb'"value":(\d+\.\d+)([,}])', rb'"value":"\1"\2', text, count=40)
        assert changed != text
        path.write_bytes(changed)
        assert report_of(odd) == expected, fmt


def test_a_bad_line_deep_in_a_points_file_is_named_by_its_number(
    archives: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report_source, "CHUNK", 4096)
    odd = copied(archives["points"], tmp_path / "odd")
    path = next(odd.glob("*.points.ndjson"))
    lines = path.read_bytes().splitlines(keepends=True)
    lines[4000] = b'{"metric": cut short\n'
    path.write_bytes(b"".join(lines))
    with pytest.raises(ArchiveError, match=rf"{path.name}:4001: not a JSON line"):
        read_run(open_archive(odd)[0])


@pytest.mark.parametrize("chunk", [1, 5, 17, 64, 1 << 20])
def test_a_runs_lines_are_found_across_chunks_as_iterating_the_file_finds_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    """Lines are read a chunk at a time, the unwanted passed over in place: whatever the
    chunk's size, the numbered lines of a type are those iterating the file gives."""
    monkeypatch.setattr(archive_module, "CHUNK", chunk)
    rng = random.Random(chunk)
    starts = [b'{"type":"series"', b'{"type":"metric"', b'{"type":"run"', b"", b'{"type":"se']
    path = tmp_path / "9.ndjson"
    for _ in range(200):
        lines = [rng.choice(starts) + b"a" * rng.choice([0, 1, 3, 40, 200]) for _ in range(9)]
        path.write_bytes(b"\n".join(lines) + rng.choice([b"", b"\n"]))
        run = ArchivedRun(9, path)
        for types in [(), ("series",), ("metric", "run")]:
            prefixes = tuple(b'{"type":"%s"' % kind.encode() for kind in types)
            with path.open("rb") as file:
                expected = [(n, line) for n, line in enumerate(file, 1)
                            if not types or line.startswith(prefixes)]  # fmt: skip
            assert list(run.lines(*types)) == expected


def test_text_that_is_not_utf8_is_refused_where_msgspec_would_skip_it(
    archives: dict[str, Path], tmp_path: Path
) -> None:
    """msgspec does not check UTF-8 inside a string it skips (a points line's metric_type):
    UTF-8 that is not ASCII reads typed and draws the same, bytes that are not UTF-8 are
    refused as before, naming the line."""
    expected = report_of(archives["points"])
    for name, text in (("utf8", "trend\u00e9".encode()), ("latin1", b"trend\xe9")):
        odd = copied(archives["points"], tmp_path / name)
        path = next(odd.glob("*.points.ndjson"))
        lines = path.read_bytes().splitlines(keepends=True)
        at = next(i for i, line in enumerate(lines) if b'"metric_type":"trend"' in line)
        lines[at] = lines[at].replace(b'"metric_type":"trend"', b'"metric_type":"' + text + b'"')
        path.write_bytes(b"".join(lines))
        if name == "utf8":
            assert report_of(odd) == expected
        else:
            with pytest.raises(ArchiveError, match=rf"{path.name}:{at + 1}: not a JSON line"):
                report_of(odd)


def test_the_clock_gives_each_texts_epoch_whether_it_knows_the_grid_or_not() -> None:
    stamps = [f"2024-06-02T16:{m:02d}:{s:02d}Z" for m in range(10) for s in range(0, 60, 3)]
    clock = Clock()
    pieces = [stamps[:50], stamps[50:120], stamps[120:], stamps[10:90], stamps, stamps[::-1]]
    pieces += [stamps[5:6], [], stamps[:3] + stamps[:3]]
    for texts in pieces:
        times, rising = clock.times(texts)
        assert list(times) == [epoch(text) for text in texts]
        increasing = all(a < b for a, b in zip(times, times[1:], strict=False))
        assert rising == increasing or (increasing and texts == stamps[5:6])  # in [::-1]
