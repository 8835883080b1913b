"""`harvester verify` on archives someone tampered with: a manifest standing for another
run (a copy, or a link to it) passed as `ok` and vouched for that run's files a second
time while its own run's data was called "no manifest"; a manifest of gigabytes was read
into memory whole (`verify s3://` refused past 16 MiB already)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import orjson
import pytest

from harvester import manifest
from harvester.manifest import manifest_path, seal
from harvester.verify import verify
from tests.process_helpers import run_as_reader


def archive_of(tmp_path: Path, *run_ids: int) -> Path:
    archive = tmp_path / "archive"
    archive.mkdir()
    for run_id in run_ids:
        (archive / f"{run_id}.ndjson").write_bytes(b'{"type":"metric","id":"a"}\n')
        assert seal(archive, run_id, 0o600)
    return archive


def rows(archive: Path) -> dict[str, tuple[str, str]]:
    return {row["file"]: (row["status"], row["detail"]) for row in verify(archive)}


@pytest.mark.parametrize("how", ["copy", "symlink"])
def test_a_manifest_of_another_run_is_corrupt(tmp_path: Path, how: str) -> None:
    archive = archive_of(tmp_path, 1, 2)
    manifest_path(archive, 2).unlink()
    if how == "copy":
        manifest_path(archive, 2).write_bytes(manifest_path(archive, 1).read_bytes())
    else:
        os.symlink(manifest_path(archive, 1).name, manifest_path(archive, 2))
    found = rows(archive)
    assert found["2.manifest.json"] == (
        "corrupt",
        "manifest does not parse: it is run 1's manifest, not run 2's",
    )
    assert found["1.manifest.json"][0] == "ok" and found["1.ndjson"][0] == "ok"


def test_a_manifest_past_16_mib_is_corrupt_and_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = archive_of(tmp_path, 1)
    monkeypatch.setattr(manifest, "MANIFEST_LIMIT", 100)  # (a 16 MiB file, made small)
    assert manifest_path(archive, 1).stat().st_size > 100
    status, detail = rows(archive)["1.manifest.json"]
    assert status == "corrupt" and detail.endswith("bytes: not a harvester manifest")


def test_a_manifest_naming_a_file_past_255_bytes_is_corrupt(tmp_path: Path) -> None:
    """No file has such a name (NAME_MAX): its stat() raised ENAMETOOLONG, an internal
    error of verify with no row."""
    archive = archive_of(tmp_path, 1)
    found = manifest.read(manifest_path(archive, 1))
    found["files"].append({"name": "a" * 300 + ".ndjson", "bytes": 1, "sha256": "x"})
    manifest_path(archive, 1).write_bytes(orjson.dumps(found))
    status, detail = rows(archive)["1.manifest.json"]
    assert status == "corrupt" and detail.endswith(".ndjson', not a file beside it")


def test_what_verify_cannot_read_is_a_row_each_not_an_internal_error() -> None:
    """A loader's user verifying an archive (`--file-mode 0640`) whose older files are
    owner-only: a file, a manifest and a day directory it cannot read each ended verify
    as an internal error, with no row at all, and a year it could not list was passed
    over in silence. Verify runs as another user (root cannot be
    refused a read), on an archive where that user can reach it (/tmp)."""
    root = os.geteuid() == 0
    closed = 0o600 if root else 0o000  # root's file: unreadable to the other user
    with tempfile.TemporaryDirectory() as where:
        archive = Path(where)
        archive.chmod(0o755)
        for run_id in (1, 2, 3):
            (archive / f"{run_id}.ndjson").write_bytes(b'{"type":"metric","id":"a"}\n')
            assert seal(archive, run_id, 0o644)
        (archive / "1.ndjson").chmod(closed)
        manifest_path(archive, 2).chmod(closed)
        day = archive / "2026" / "01" / "02"
        day.mkdir(parents=True)
        for folder in (day.parent.parent, day.parent):
            folder.chmod(0o755)
        day.chmod(0o700 if root else 0o000)
        # A year it cannot list: the walk passed over its runs in silence.
        year = archive / "2025"
        (year / "12" / "31").mkdir(parents=True)
        (year / "12" / "31" / "4.ndjson").write_bytes(b'{"type":"metric","id":"a"}\n')
        year.chmod(0o700 if root else 0o000)
        work = "print(orjson.dumps(list(verify(archive, workers=2))).decode())"
        done = run_as_reader("import orjson\nfrom harvester.verify import verify", work, archive)
        day.chmod(0o755)
        year.chmod(0o755)
    # (stderr may hold coverage's complaint: nobody cannot write its data file)
    assert done.returncode == 0, done.stderr
    found = {row["file"]: (row["status"], row["detail"]) for row in orjson.loads(done.stdout)}
    assert found["1.ndjson"] == ("unreadable", "cannot read it: Permission denied")
    assert found["2.manifest.json"] == ("unreadable", "cannot read it: Permission denied")
    # Its data file is not unsealed ("missing: no manifest"): the manifest is there.
    assert found["2.ndjson"] == (
        "unverified",
        "its manifest (2.manifest.json) cannot be read: not checked",
    )
    assert found["2026/01/02"] == ("unreadable", "cannot list it: Permission denied")
    assert found["2025"] == ("unreadable", "cannot list it: Permission denied")
    assert found["3.ndjson"][0] == "ok"


@pytest.mark.timeout(30, method="thread")
@pytest.mark.parametrize("workers", [1, 2])
def test_a_fifo_in_a_files_place_is_a_row_and_never_opened(tmp_path: Path, workers: int) -> None:
    """A FIFO named like a run's data file was passed over in silence (listed only if a
    regular file); one a manifest names, or in a manifest's place, would have blocked the
    open() that reads it for ever. Each is now a row, and nothing waits on one."""
    archive = archive_of(tmp_path, 1, 2)
    (archive / "1.csv").write_bytes(b"a,b\n")  # named by run 1's manifest, then a FIFO
    found = manifest.read(manifest_path(archive, 1))
    found["files"].append(manifest.file_entry(archive / "1.csv"))
    manifest_path(archive, 1).write_bytes(orjson.dumps(found))
    (archive / "1.csv").unlink()
    os.mkfifo(archive / "1.csv")
    os.mkfifo(archive / "3.ndjson")  # a data file's name, no manifest
    manifest_path(archive, 2).unlink()
    os.mkfifo(manifest_path(archive, 2))  # a manifest's name
    found = {r["file"]: (r["status"], r["detail"]) for r in verify(archive, workers=workers)}
    assert found == {
        "1.manifest.json": ("ok", ""),
        "1.ndjson": ("ok", "27 bytes"),
        "1.csv": ("missing", "named by the manifest; a FIFO is there, not a file"),
        "2.manifest.json": ("unreadable", "cannot read it: a FIFO, not a regular file"),
        "2.ndjson": ("unverified", "its manifest (2.manifest.json) cannot be read: not checked"),
        "3.ndjson": ("orphan", "a FIFO, not a regular file: named by no manifest"),
    }


@pytest.mark.timeout(30, method="thread")
def test_a_fifo_is_not_opened_to_be_scanned(tmp_path: Path) -> None:
    """Put in a file's place after the listing, a FIFO is refused, not waited on."""
    os.mkfifo(tmp_path / "1.ndjson")
    with pytest.raises(OSError, match="a FIFO, not a regular file"):
        manifest.scan(tmp_path / "1.ndjson", ndjson=True)


def test_a_link_that_cannot_be_followed_is_its_own_row_not_the_directorys(
    tmp_path: Path,
) -> None:
    """A link to itself named like a data file: looking at it (ELOOP) made the whole
    directory "cannot list it", its sound runs unverified."""
    archive = archive_of(tmp_path, 1)
    os.symlink("2.ndjson", archive / "2.ndjson")
    assert rows(archive) == {
        "1.manifest.json": ("ok", ""),
        "1.ndjson": ("ok", "27 bytes"),
        "2.ndjson": (
            "orphan",
            "a name that cannot be looked at (Too many levels of symbolic links), not a "
            "regular file: named by no manifest",
        ),
    }
