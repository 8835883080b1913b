"""`harvester report s3://BUCKET/PREFIX/` draws an object-store archive as it draws a
directory holding the same runs, copies only the runs it can show, and says in one line
what is wrong."""

from __future__ import annotations

import gzip
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio.from_thread
import pytest
import zstandard

from harvester.archive import open_archive
from harvester.cli import main
from harvester.objectstore.peek import NO_RECORD, PEEK, UNKNOWN, first_record
from tests.harvest_helpers import cli_args
from tests.report_helpers import page_data
from tests.s3_helpers import RUNS, CutOnce, S3Cli

pytest.importorskip("aiobotocore")
pytestmark = pytest.mark.timeout(120, method="thread")


def _both(s3cli: S3Cli, tmp_path: Path, *flags: str) -> tuple[Path, str]:
    """The same runs, with their run records, harvested into a directory and onto the store."""
    directory = tmp_path / "dir"
    flags = ("--run-record", *flags)
    assert main(cli_args(s3cli.sim, directory, *RUNS, *flags)) == 0
    out = f"s3://{s3cli.bucket}/v/"
    assert s3cli.main([*s3cli.args(out, *RUNS), *flags])[0] == 0
    return directory, out


def _page(s3cli: S3Cli, archive: str, out: Path, *flags: str) -> tuple[int, str, dict[str, Any]]:
    """`harvester report ARCHIVE --out OUT`: exit status, stderr, the page's data."""
    code = main(["report", archive, "--out", str(out), *flags])
    err = s3cli.capfd.readouterr().err
    data = page_data(out.read_text()) if code == 0 else {}
    data.pop("generated", None)
    return code, err, data


@pytest.mark.parametrize(
    "flags",
    [(), ("--layout", "date", "--format", "points", "--compress", "zstd"), ("--format", "parquet")],
)
def test_the_page_of_a_store_is_the_page_of_a_directory_of_the_same_runs(
    s3cli: S3Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: tuple[str, ...]
) -> None:
    if "parquet" in flags:
        pytest.importorskip("pyarrow")
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # where the copy is made
    directory, out = _both(s3cli, tmp_path, *flags)
    endpoint = ("--s3-endpoint-url", s3cli.s3.url)
    code, err, stored = _page(s3cli, out, tmp_path / "s3.html", *endpoint)
    assert code == 0, err
    assert f"read 2 of 2 runs from {out}" in err
    assert stored == _page(s3cli, str(directory), tmp_path / "dir.html")[2]
    assert sorted(run["header"]["run"] for run in stored["runs"]) == [100001, 100002]
    # Only the run asked for is copied.
    code, err, one = _page(s3cli, out, tmp_path / "one.html", *endpoint, "--run", "100002")
    assert code == 0 and f"read 1 of 2 runs from {out}" in err
    assert one["title"] == "k6 run 100002"
    assert not list(temp.iterdir())  # the copy goes with the page


def test_what_the_store_lacks_is_one_line_naming_the_s3_url(s3cli: S3Cli, tmp_path: Path) -> None:
    _, out = _both(s3cli, tmp_path)
    endpoint = ("--s3-endpoint-url", s3cli.s3.url)
    said = {
        (f"s3://{s3cli.bucket}/empty/",): f"no archived run in s3://{s3cli.bucket}/empty/",
        (out, "--run", "100009"): "run 100009 is not in the archive",
        (out, "--since", "2999-01-01"): f"no archived run in {out} matches: --since 2999",
        (out, "--test", "1"): f"no archived run in {out} matches: --test 1",
        ("s3://no-such-bucket-here/p/",): "bucket no-such-bucket-here does not exist",
    }
    for args, message in said.items():
        code, err, _ = _page(s3cli, args[0], tmp_path / "r.html", *endpoint, *args[1:])
        assert code == 2, err
        lines = [line for line in err.splitlines() if not line.startswith("read ")]
        assert len(lines) == 1 and message in lines[0] and "harvester-report-" not in err, err
    assert not (tmp_path / "r.html").exists()


def test_since_copies_no_day_directory_before_its_day(s3cli: S3Cli, tmp_path: Path) -> None:
    _, out = _both(s3cli, tmp_path, "--layout", "date")
    endpoint = ("--s3-endpoint-url", s3cli.s3.url)
    code, err, _ = _page(s3cli, out, tmp_path / "r.html", *endpoint, "--since", "2999-01-01")
    # Told by the listing alone: nothing was copied ("read ..." comes after the copy).
    assert code == 2 and f"no archived run in {out} matches: --since 2999" in err
    assert "read " not in err
    code, err, _ = _page(s3cli, out, tmp_path / "r.html", *endpoint, "--since", "2000-01-01")
    assert code == 0 and f"read 2 of 2 runs from {out}" in err
    # A run asked for by id is copied whatever its day: it is there, only older.
    args = ("--run", "100001", "--since", "2999-01-01")
    code, err, _ = _page(s3cli, out, tmp_path / "r.html", *endpoint, *args)
    assert code == 2 and f"no archived run in {out} matches: --run 100001 --since 2999" in err


@pytest.mark.parametrize(
    "flags", [(), ("--compress", "zstd"), ("--format", "points", "--compress", "gzip")]
)
def test_test_and_since_copy_only_the_runs_whose_first_bytes_say_so(
    s3cli: S3Cli, tmp_path: Path, flags: tuple[str, ...]
) -> None:
    directory, out = _both(s3cli, tmp_path, *flags)
    records = {run.run_id: run.first("run") for run in open_archive(directory)}
    test_id = records[100002]["data"]["test_id"]  # type: ignore[index]
    assert records[100001]["data"]["test_id"] != test_id  # type: ignore[index]
    endpoint = ("--s3-endpoint-url", s3cli.s3.url)
    code, err, page = _page(s3cli, out, tmp_path / "t.html", *endpoint, "--test", str(test_id))
    assert code == 0 and f"read 1 of 2 runs from {out}" in err, err
    assert page == _page(s3cli, str(directory), tmp_path / "d.html", "--test", str(test_id))[2]
    code, err, _ = _page(s3cli, out, tmp_path / "s.html", *endpoint, "--since", "2000-01-01")
    assert code == 0 and f"read 2 of 2 runs from {out}" in err, err


def test_runs_without_their_record_are_not_copied_for_test_and_the_hint_says_why(
    s3cli: S3Cli, tmp_path: Path
) -> None:
    out = f"s3://{s3cli.bucket}/bare/"
    assert s3cli.main(s3cli.args(out, *RUNS))[0] == 0  # no --run-record
    endpoint = ("--s3-endpoint-url", s3cli.s3.url)
    code, err, _ = _page(s3cli, out, tmp_path / "r.html", *endpoint, "--test", "1")
    assert code == 2 and "read " not in err  # nothing copied
    assert f"no archived run in {out} matches: --test 1 (--test and --since need run " in err


def test_a_run_record_is_read_from_a_cut_start_or_said_unknown() -> None:
    run = b'{"type":"run","test_run_id":7,"data":{"id":7,"test_id":70}}\n'
    rest = b'{"type":"metric","test_run_id":7,"data":{}}\n' * 5000
    whole = run + rest
    starts = {
        "none": whole[:PEEK],
        "gzip": gzip.compress(whole)[:200],  # the start of a stream, cut
        "zstd": zstandard.ZstdCompressor().compress(whole)[:200],
    }
    for codec, head in starts.items():
        assert first_record(head, codec) == {"id": 7, "test_id": 70}, codec
    assert first_record(rest, "none") is NO_RECORD  # a run harvested without its record
    assert first_record(b'{"type":"run","data":{' + b" " * PEEK, "none") is UNKNOWN  # longer
    assert first_record(b"\x00garbage", "gzip") is UNKNOWN
    assert first_record(b"not json\n", "none") is UNKNOWN


@pytest.fixture
def cutting(s3cli: S3Cli) -> Iterator[tuple[CutOnce, str]]:
    proxy = CutOnce(s3cli.s3)
    with anyio.from_thread.start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(proxy.serving()) as url:
            yield proxy, url


def test_an_object_cut_on_the_way_is_read_again(
    s3cli: S3Cli, tmp_path: Path, cutting: tuple[CutOnce, str]
) -> None:
    directory, out = _both(s3cli, tmp_path)
    proxy, url = cutting
    code, err, stored = _page(s3cli, out, tmp_path / "s3.html", "--s3-endpoint-url", url)
    assert code == 0, err
    assert sorted(proxy.cut) == [
        f"/{s3cli.bucket}/v/100001.ndjson",
        f"/{s3cli.bucket}/v/100002.ndjson",
    ]
    assert stored == _page(s3cli, str(directory), tmp_path / "dir.html")[2]


def test_a_full_disk_under_the_copy_is_one_line_naming_tmpdir(
    s3cli: S3Cli, tmp_path: Path, tiny_fs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, out = _both(s3cli, tmp_path)
    # A run of 2 MB, more than the 1 MB the copy has room for.
    big = b'{"type":"metric","test_run_id":100003}\n' * 60_000
    s3cli.s3.client().put_object(Bucket=s3cli.bucket, Key="v/100003.ndjson", Body=big)
    monkeypatch.setattr(tempfile, "tempdir", str(tiny_fs))
    code, err, _ = _page(s3cli, out, tmp_path / "r.html", "--s3-endpoint-url", s3cli.s3.url)
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "No space left on device; set TMPDIR to a directory with room" in err
    assert not list(tiny_fs.iterdir())  # what was copied is gone
