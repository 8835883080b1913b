"""The directory sink's write-behind thread: writes done in order, a full queue holds the
writer, a failed write is said by the run's next write or commit, an aborted run's
writes are skipped; and a disk that fills mid-run still fails the job in one line with
no partial file."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from harvester.errors import OutputError
from harvester.job import harvest_job
from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator
from harvester.writebehind import Lane, WriteBehind
from tests.harvest_helpers import settings_for, targets


def test_writes_are_done_in_order_and_a_full_queue_says_so() -> None:
    behind = WriteBehind(limit=10)
    lane = Lane()
    done: list[int] = []
    gate = threading.Event()
    assert behind.submit(lane, gate.wait, 4)  # holds the thread until the gate opens
    assert behind.submit(lane, lambda: done.append(1), 4)
    assert not behind.submit(lane, lambda: done.append(2), 4)  # 12 bytes queued: full
    gate.set()
    behind.wait_room()
    behind.settle(lane)
    assert done == [1, 2] and lane.queued == 0
    behind.close()


def test_a_failed_write_is_kept_for_the_run_and_its_later_writes_are_skipped() -> None:
    behind = WriteBehind()
    failing, other = Lane(), Lane()
    done: list[str] = []

    def fail() -> None:
        raise OSError(28, "No space left on device")

    behind.submit(failing, fail, 1)
    behind.submit(failing, lambda: done.append("after the failure"), 1)
    behind.submit(other, lambda: done.append("other run"), 1)
    behind.settle(failing)
    behind.settle(other)
    assert done == ["other run"]
    with pytest.raises(OSError, match="No space left"):
        failing.raise_failed()
    other.raise_failed()  # nothing failed there
    behind.close()


def test_an_aborted_run_s_queued_writes_are_skipped() -> None:
    behind = WriteBehind()
    lane = Lane()
    gate = threading.Event()
    done: list[int] = []
    behind.submit(Lane(), gate.wait, 1)
    behind.submit(lane, lambda: done.append(1), 1)
    lane.dropped = True
    gate.set()
    behind.settle(lane)
    assert done == [] and lane.queued == 0
    behind.close()


async def test_a_disk_that_fills_mid_run_fails_the_job_with_no_partial_file(
    tiny_fs: Path, tmp_path: Path
) -> None:
    """The 1 MB filesystem fills while the run's series are written (in the write-behind
    thread): the job ends with the one line of a full disk, nothing published, no
    temporary file left."""
    cloud = generate_cloud(runs=1, metrics=60, points=2000)  # ~6 MB of lines
    async with Simulator(cloud) as sim:
        settings = settings_for(sim, tiny_fs, state=str(tmp_path / "state.db"))
        with pytest.raises(OutputError, match="No space left on device"):
            await harvest_job(settings, targets(cloud))
    assert sorted(p.name for p in tiny_fs.iterdir()) == [".harvester.lock"]
