"""Manifests (`<id>.manifest.json`, published last, sealed later after a crash) and
`harvester verify DIR`: every kind of damage found and named."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import anyio
import orjson
import pytest

from harvester import __version__
from harvester.cli import main
from harvester.job import harvest_job
from harvester.manifest import manifest_path, seal
from harvester.scheduler import RunTarget
from harvester.simulator.cloud import SimCloud
from harvester.simulator.server import Simulator
from harvester.verify import intact, verify
from tests.harvest_helpers import settings_for


async def harvest(sim: Simulator, cloud: SimCloud, out: Path, **overrides: object) -> None:
    settings = settings_for(sim, out, **overrides)
    result = await harvest_job(settings, [RunTarget(r) for r in sorted(cloud.runs)])
    assert not result.report.failed


def problems(out: Path) -> dict[str, str]:
    return {row["file"]: row["status"] for row in verify(out) if row["status"] != "ok"}


@pytest.mark.parametrize("codec", ["none", "zstd"])
async def test_each_published_run_has_a_manifest_naming_its_file_exactly(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path, codec: str
) -> None:
    await harvest(simulator, cloud, tmp_path, compress=codec, methods=["mean", "max"])
    ending = ".ndjson" if codec == "none" else ".ndjson.zst"
    for run_id in cloud.runs:
        found = orjson.loads(manifest_path(tmp_path, run_id).read_bytes())
        data = tmp_path / f"{run_id}{ending}"
        assert found["test_run_id"] == run_id
        assert found["harvester"] == __version__
        assert found["api"] == "v2" and found["base_url"] == simulator.base_url
        assert found["methods"] == ["mean", "max"]
        assert found["format"] == "raw" and found["compression"] == codec
        assert found["time"].endswith("Z")
        [entry] = found["files"]
        assert entry["name"] == data.name
        assert entry["bytes"] == data.stat().st_size
        assert entry["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
        metrics = len(cloud.runs[run_id].metrics())
        assert found["counts"]["metric"] == metrics and found["counts"]["summary"] == 1
        assert found["counts"]["series"] == 2 * metrics
        assert found["missing_series"] == []
    rows = list(verify(tmp_path))
    assert intact(rows)
    assert len(rows) == 2 * len(cloud.runs)  # a manifest and a data file per run


async def test_verify_names_a_corrupt_a_truncated_a_missing_file_and_an_orphan(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    await harvest(simulator, cloud, tmp_path, compress="gzip")
    first, second, third = sorted(cloud.runs)
    flipped = tmp_path / f"{first}.ndjson.gz"
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one byte
    flipped.write_bytes(bytes(data))
    cut = tmp_path / f"{second}.ndjson.gz"
    cut.write_bytes(cut.read_bytes()[:-100])
    (tmp_path / f"{third}.ndjson.gz").unlink()
    (tmp_path / "notes.txt").write_text("mine")
    assert problems(tmp_path) == {
        flipped.name: "corrupt",
        cut.name: "truncated",
        f"{third}.ndjson.gz": "missing",
        "notes.txt": "orphan",
    }
    # The command scans ahead in one worker per CPU: the same rows, in the same order.
    argv = [sys.executable, "-m", "harvester", "verify", str(tmp_path), "--output", "json"]
    with anyio.fail_after(60):
        done = await anyio.run_process(argv, check=False)
    assert done.returncode == 1, done.stderr.decode()
    assert [orjson.loads(line) for line in done.stdout.splitlines()] == list(verify(tmp_path))


async def test_a_line_that_no_longer_parses_is_corrupt_even_with_a_matching_size(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    await harvest(simulator, cloud, tmp_path)
    run_id = min(cloud.runs)
    path = tmp_path / f"{run_id}.ndjson"
    path.write_bytes(
        path.read_bytes().replace(b'{"type":"metric"', b'{"type":"metric"'[:-1] + b"?", 1)
    )
    [row] = [row for row in verify(tmp_path) if row["status"] != "ok"]
    assert row["file"] == path.name and row["status"] == "corrupt"


async def test_a_run_left_without_its_manifest_is_reported_then_sealed_by_the_next_job(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    await harvest(simulator, cloud, tmp_path)
    run_id = min(cloud.runs)
    manifest_path(tmp_path, run_id).unlink()  # as a crash between data file and manifest
    assert problems(tmp_path) == {f"{run_id}.ndjson": "missing"}
    before = len(simulator.requests_for("metrics", "series"))
    await harvest(simulator, cloud, tmp_path)
    assert (
        len(simulator.requests_for("metrics", "series")) == before
    )  # archived: nothing fetched again
    assert problems(tmp_path) == {}
    sealed = orjson.loads(manifest_path(tmp_path, run_id).read_bytes())
    assert sealed["sealed_later"] is True and sealed["methods"] == ["default"]


async def test_the_harvesters_own_files_are_not_orphans_and_the_cli_exits_by_intactness(
    simulator: Simulator,
    cloud: SimCloud,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await harvest(simulator, cloud, tmp_path)
    (tmp_path / ".7.abc123.ndjson.partial").write_bytes(b"")
    assert (tmp_path / ".harvester-state.sqlite").exists()
    assert (tmp_path / ".harvester.lock").exists()
    assert main(["verify", str(tmp_path)]) == 0
    lines = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {line["status"] for line in lines} == {"ok"}
    (tmp_path / "stray.ndjson").write_text("{}\n")
    (tmp_path / f"notes-someone-else-keeps-beside-the-runs-{'x' * 30}.txt").write_text("")
    cut = tmp_path / f"{min(cloud.runs)}.ndjson"
    cut.write_bytes(cut.read_bytes()[:-1])
    assert main(["verify", str(tmp_path), "--output", "table"]) == 1
    out = capsys.readouterr().out
    assert "stray.ndjson" in out and "orphan" in out
    assert " truncated " in out  # a status is never cut in two to fit 80 columns
    # ... and the orphan, no run's file, is not counted as a run.
    assert out.splitlines()[-1] == f"5 of 8 files intact ({len(cloud.runs)} runs)"
    assert main(["verify", str(tmp_path / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err
    # A file whose name is not UTF-8 is an orphan shown with its byte escaped (it was an
    # internal error: JSON holds text only).
    (tmp_path / os.fsdecode(b"x\xff.ndjson")).write_text("")
    assert main(["verify", str(tmp_path), "--output", "json"]) == 1
    rows = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {"test_run_id": None, "file": "x\\xff.ndjson", "status": "orphan",
            "detail": "named by no manifest"} in rows  # fmt: skip


def test_verify_starts_without_the_http_stack_or_package_metadata(tmp_path: Path) -> None:
    """Start-up is part of verify's MB/s: it loads neither aiohttp/anyio (the harvest's) nor
    importlib.metadata (~50 ms reading every installed package's metadata)."""
    (tmp_path / "1.ndjson").write_bytes(b'{"type": "metric", "id": "a"}\n')
    assert seal(tmp_path, 1, 0o600)  # a run sealed by hand: verify has a file to read
    probe = (
        "import sys\nfrom harvester.cli import main\n"
        f"assert main(['verify', {str(tmp_path)!r}, '--output', 'json']) == 0\n"
        "print(sorted(m for m in ('aiohttp', 'anyio', 'importlib.metadata') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, timeout=20, check=True
    )
    assert done.stdout.decode().splitlines()[-1] == "[]"


@pytest.mark.parametrize("output", ["json", "table"])
@pytest.mark.parametrize("holding", [[], [".harvester-state.sqlite", ".harvester.lock"]])
def test_a_directory_with_nothing_to_verify_is_exit_1_and_one_line(
    tmp_path: Path, output: str, holding: list[str], capfd: pytest.CaptureFixture[str]
) -> None:
    """An empty directory, or one holding only the harvester's own files, is most likely a
    wrong path: a nightly `harvester verify` of it printed nothing and exited 0."""
    for name in holding:
        (tmp_path / name).write_bytes(b"")
    assert main(["verify", str(tmp_path), "--output", output]) == 1
    out, err = capfd.readouterr()
    assert out == ""
    assert err == (
        f"harvester: nothing to verify in {tmp_path}: no run's manifest or data file there; "
        "give the --out directory (or s3:// prefix) of a harvest\n"
    )


def test_names_whose_id_is_no_run_id_are_orphans(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Past int64 (no JSON row could hold it: verify was an internal error) or with a
    leading zero (the harvester never writes one), a name is no run's."""
    (tmp_path / "1.ndjson").write_bytes(b'{"type": "metric", "id": "a"}\n')
    assert seal(tmp_path, 1, 0o600)
    strays = ["99999999999999999999999.ndjson", "99999999999999999999998.manifest.json",
              "9223372036854775808.ndjson", "01.ndjson"]  # fmt: skip
    for name in strays:
        (tmp_path / name).write_bytes(b"{}\n")
    assert main(["verify", str(tmp_path), "--output", "json"]) == 1
    rows = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted((r["file"], r["status"], r["test_run_id"]) for r in rows) == sorted(
        [("1.manifest.json", "ok", 1), ("1.ndjson", "ok", 1)]
        + [(name, "orphan", None) for name in strays]
    )
    assert main(["verify", str(tmp_path), "--output", "table"]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "2 of 6 files intact (1 run)"


def test_a_manifest_naming_a_path_is_corrupt_and_nothing_elsewhere_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tampered manifest naming `../x` or an absolute path: verify read that file."""
    archive = tmp_path / "archive"
    archive.mkdir()
    (tmp_path / "outside.ndjson").write_bytes(b"{}\n")
    (archive / "1.ndjson").write_bytes(b'{"type": "metric", "id": "a"}\n')
    assert seal(archive, 1, 0o600)
    found = orjson.loads(manifest_path(archive, 1).read_bytes())
    for name in ("../outside.ndjson", str(tmp_path / "outside.ndjson")):
        found["files"][0]["name"] = name
        manifest_path(archive, 1).write_bytes(orjson.dumps(found))
        assert main(["verify", str(archive), "--output", "json"]) == 1
        rows = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert {(r["file"], r["status"]) for r in rows} == {
            ("1.manifest.json", "corrupt"),
            ("1.ndjson", "unverified"),  # its manifest is there: not "no manifest"
        }
        assert not any("outside" in r["file"] for r in rows)
        assert any(name in r["detail"] for r in rows)
