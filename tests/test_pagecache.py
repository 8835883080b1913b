"""An archive's pages leave the page cache once its run is fsynced (`pagecache`): an
archive is not read back by the job that writes it, and pages kept meant the next runs'
writes took fresh ones (slow where a VM gives free memory back to its host)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from harvester.job import harvest_job
from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator
from tests.harvest_helpers import settings_for, targets


def _resident_bytes(path: Path) -> int:
    """Bytes of `path` in the page cache (util-linux's fincore)."""
    shown = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return int(shown.strip())


def _file_system(path: Path) -> str:
    return subprocess.run(
        ["stat", "--file-system", "--format", "%T", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


@pytest.mark.parametrize("fmt", ["raw", "points"])
async def test_a_published_run_leaves_none_of_its_pages_in_the_page_cache(
    tmp_path: Path, fmt: str
) -> None:
    if shutil.which("fincore") is None:
        pytest.skip("fincore (util-linux) is not installed")
    if _file_system(tmp_path) == "tmpfs":  # its pages are the files themselves
        pytest.skip("the test directory is on tmpfs")
    cloud = generate_cloud(runs=2, metrics=80, points=240)
    async with Simulator(cloud) as sim:
        settings = settings_for(sim, tmp_path, format=fmt)
        assert not (await harvest_job(settings, targets(cloud))).report.failed
    data = [path for path in tmp_path.iterdir() if ".ndjson" in path.name]
    assert len(data) == 2 * (2 if fmt == "points" else 1)  # points: a sidecar each
    assert sum(path.stat().st_size for path in data) > 1 << 20  # pages were written
    assert {path.name: _resident_bytes(path) for path in data} == {p.name: 0 for p in data}
    # The manifests are small and read by `verify`: only the data files are dropped.
    manifests = list(tmp_path.glob("*.manifest.json"))
    assert len(manifests) == 2
