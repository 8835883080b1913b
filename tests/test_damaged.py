"""A damaged compressed archive, read by every reader: verify, report, and the next job
(which reads a run's summary back when the state does not say it is archived). Each
names the file in one line; none ends in an internal error."""

from __future__ import annotations

from pathlib import Path

import pytest

from harvester.cli import main
from harvester.job import harvest_job
from harvester.scheduler import RunTarget
from harvester.simulator.cloud import SimCloud
from harvester.simulator.server import Simulator
from harvester.state import STATE_FILE_NAME
from harvester.verify import verify
from tests.harvest_helpers import settings_for
from tests.process_helpers import run_cli


def damage(path: Path) -> None:
    """Flip bytes inside the deflate stream: gzip's decoder raises zlib.error ("invalid
    distance too far back"), not BadGzipFile or EOFError."""
    data = bytearray(path.read_bytes())
    for at in range(200, 260):
        data[at] ^= 0x5A
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("fmt", "name"), [("raw", "ndjson"), ("points", "points.ndjson")])
async def test_a_damaged_gzip_file_is_named_by_verify_report_and_the_next_job(
    simulator: Simulator,
    cloud: SimCloud,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fmt: str,
    name: str,
) -> None:
    out = tmp_path / "archive"
    settings = settings_for(simulator, out, compress="gzip", format=fmt, layout="date")
    targets = [RunTarget(r, cloud.runs[r].run) for r in sorted(cloud.runs)]
    await harvest_job(settings, targets)
    [broken] = out.rglob(f"{min(cloud.runs)}.{name}.gz")
    damage(broken)
    [row] = [row for row in verify(out) if row["status"] != "ok"]
    assert row["status"] == "corrupt" and row["file"].endswith(broken.name)

    assert main(["report", str(out), "--out", str(tmp_path / "r.html")]) == 1
    err = capsys.readouterr().err
    assert "internal error" not in err
    assert f"cannot read {broken}" in err and len(err.splitlines()) == 1

    # The state gone, the next job reads each run's summary back from its file.
    (out / STATE_FILE_NAME).unlink()
    again = await run_cli(simulator, "harvest", "--out", str(out), "--layout", "date",
                          "--compress", "gzip", "--format", fmt, "--quiet",
                          *[f"--run={r}" for r in sorted(cloud.runs)])  # fmt: skip
    assert b"internal error" not in again.stderr, again.stderr.decode()
    assert again.returncode == 0, again.stderr.decode()


def test_report_on_a_directory_without_runs_says_so_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "2026").mkdir()
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert err == f"harvester: no archived run in {tmp_path}: give the --out DIR of a harvest\n"
