"""`harvester verify` on archives someone tampered with: a manifest standing for another
run (a copy, or a link to it) passed as `ok` and vouched for that run's files a second
time while its own run's data was called "no manifest"; a manifest of gigabytes was read
into memory whole (`verify s3://` refused past 16 MiB already)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harvester import manifest
from harvester.manifest import manifest_path, seal
from harvester.verify import verify


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
