"""`harvester verify s3://BUCKET/PREFIX/` checks an object-store archive as it checks a
directory: the same rows for the same archive, intact or damaged in the same ways."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio.from_thread
import pytest

from harvester.cli import main
from tests.harvest_helpers import cli_args, parse_lines
from tests.s3_helpers import RUNS, S3Cli, SlowStore

pytest.importorskip("aiobotocore")
#: Bounded hard (the thread method ends the session): a stalled store never holds the run.
pytestmark = pytest.mark.timeout(120, method="thread")


def _rows(s3cli: S3Cli, *target: str) -> tuple[int, list[tuple[Any, ...]]]:
    """`harvester verify TARGET --output json`: exit status, rows (run, file, status, detail)."""
    code = main(["verify", *target, "--output", "json"])
    out = s3cli.capfd.readouterr().out
    rows = [
        (r["test_run_id"], r["file"], r["status"], r["detail"]) for r in parse_lines(out.encode())
    ]
    return code, sorted(rows, key=lambda r: r[1])


def _both(s3cli: S3Cli, tmp_path: Path, *flags: str) -> tuple[Path, str]:
    """The same runs harvested into a directory and onto the store."""
    directory = tmp_path / "dir"
    assert main(cli_args(s3cli.sim, directory, *RUNS, *flags)) == 0
    out = f"s3://{s3cli.bucket}/v/"
    assert s3cli.main([*s3cli.args(out, *RUNS), *flags])[0] == 0
    return directory, out


@pytest.mark.parametrize(
    "flags",
    [(), ("--compress", "gzip", "--export-csv"), ("--layout", "date", "--format", "points")],
)
def test_an_intact_archive_gives_the_directory_s_rows(
    s3cli: S3Cli, tmp_path: Path, flags: tuple[str, ...]
) -> None:
    directory, out = _both(s3cli, tmp_path, *flags)
    code, rows = _rows(s3cli, out, "--s3-endpoint-url", s3cli.s3.url)
    assert code == 0
    assert rows and {row[2] for row in rows} == {"ok"}
    # (a compressed file's size may differ by a byte or two: gzip's header has the time)
    assert [row[:3] for row in rows] == [row[:3] for row in _rows(s3cli, str(directory))[1]]


def test_damage_is_found_and_named_as_in_a_directory(s3cli: S3Cli, tmp_path: Path) -> None:
    directory, out = _both(s3cli, tmp_path, "--export-csv")
    client, bucket = s3cli.s3.client(), s3cli.bucket

    def damage(name: str, body: bytes | None) -> None:
        """The same change to the file and to the object (None: removed)."""
        if body is None:
            (directory / name).unlink()
            client.delete_object(Bucket=bucket, Key=f"v/{name}")
        else:
            (directory / name).write_bytes(body)
            client.put_object(Bucket=bucket, Key=f"v/{name}", Body=body)

    data = (directory / "100001.ndjson").read_bytes()
    damage("100001.ndjson", data[:-1] + b"x")  # same size, other bytes
    damage("100001.csv", (directory / "100001.csv").read_bytes()[:-3])  # truncated
    damage("100002.csv", None)  # named by the manifest, gone
    damage("100003.ndjson", data)  # no manifest
    damage("notes.txt", b"mine\n")  # an orphan
    damage("100002.manifest.json", b"{not json")  # a manifest that does not parse
    # Names whose id is no run id (past int64): orphans (they were an internal error).
    damage("99999999999999999999999.ndjson", data)
    damage("99999999999999999999998.manifest.json", b"{}")
    code, rows = _rows(s3cli, out, "--s3-endpoint-url", s3cli.s3.url)
    assert code == 1
    status = {row[1]: row[2] for row in rows}
    assert status == {
        "100001.manifest.json": "ok",
        "100001.ndjson": "corrupt",
        "100001.csv": "truncated",
        "100002.manifest.json": "corrupt",
        "100002.ndjson": "unverified",  # its manifest is there: not "no manifest"
        "100003.ndjson": "missing",
        "notes.txt": "orphan",
        "99999999999999999999999.ndjson": "orphan",
        "99999999999999999999998.manifest.json": "orphan",
    }
    _, in_directory = _rows(s3cli, str(directory))
    assert rows == [row for row in in_directory if not row[1].startswith(".")]


def test_a_missing_bucket_is_one_line_exit_2(s3cli: S3Cli) -> None:
    out = f"s3://{s3cli.bucket}-none/v/"
    assert main(["verify", out, "--s3-endpoint-url", s3cli.s3.url]) == 2
    err = s3cli.capfd.readouterr().err
    assert err.count("does not exist") == 1 and "Traceback" not in err


def test_many_pages_and_an_object_in_many_chunks_are_read_as_they_come(
    s3cli: S3Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listing of several pages (a page of 2 keys here) and bodies read in small chunks
    give the same rows as one page and one read."""
    from harvester import scan
    from harvester.objectstore import verify

    out = f"s3://{s3cli.bucket}/v/"
    assert s3cli.main(s3cli.args(out, *RUNS))[0] == 0
    endpoint = ("--s3-endpoint-url", s3cli.s3.url)
    whole = _rows(s3cli, out, *endpoint)
    monkeypatch.setattr(scan, "CHUNK", 7)
    monkeypatch.setattr(verify, "PAGE_KEYS", 2)
    assert _rows(s3cli, out, *endpoint) == whole


def test_runs_are_checked_at_once_not_one_round_trip_after_another(
    s3cli: S3Cli, tmp_path: Path
) -> None:
    directory, out = _both(s3cli, tmp_path)
    slow = SlowStore(s3cli.s3, delay=0.3)
    with anyio.from_thread.start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(slow.serving()) as url:
            code, rows = _rows(s3cli, out, "--s3-endpoint-url", url)
    assert code == 0 and [row[:3] for row in rows] == [
        row[:3] for row in _rows(s3cli, str(directory))[1]
    ]
    assert slow.most == 2  # both runs' objects asked for at once
