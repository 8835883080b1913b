"""The writer processes of a points harvest (`writerpool`): two on two CPUs, each run
on the one with the fewest runs open, a dead one given no new run while another lives;
every run's files the same, whichever wrote them; a writer killed mid-harvest stops the
job as a write error does, and loses nothing."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process

from harvester import writerpool
from harvester.job import harvest_job
from harvester.simulator.cloud import SimCloud
from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator
from harvester.sinks import DirectorySink
from harvester.verify import intact, verify
from harvester.writeproc import ChildRunFiles, WriterProcess
from harvester.writerpool import WriterPool, pool_size
from tests.harvest_helpers import settings_for, targets
from tests.process_helpers import ROOT, cli_command, cli_env, stderr_until, wait_for
from tests.test_writeproc import run_lines, temp_paths


@pytest.mark.parametrize(
    ("fmt", "cpus", "size"),
    [("points", 1, 1), ("points", 2, 2), ("points", 16, 2), ("parquet", 16, 1)],
)
def test_points_get_two_writers_when_two_cpus_are_usable(
    monkeypatch: pytest.MonkeyPatch, fmt: str, cpus: int, size: int
) -> None:
    monkeypatch.setattr(writerpool, "usable_cpus", lambda: cpus)
    assert pool_size(fmt) == size


def open_run(pool: WriterPool, tmp_path: Path, run_id: int) -> ChildRunFiles:
    return ChildRunFiles(
        pool.for_run(), run_id, "points", "none", None, temp_paths(tmp_path, run_id)
    )


def test_each_run_goes_to_the_writer_with_the_fewest_runs_open(tmp_path: Path) -> None:
    pool = WriterPool(2)
    try:
        first, second, third = (open_run(pool, tmp_path, run_id) for run_id in (1, 2, 3))
        writers = pool.writers
        assert [first._child, second._child, third._child] == [writers[0], writers[1], writers[0]]
        assert [w.open_runs for w in writers] == [2, 1]
        for files in (first, third):
            files.write(run_lines()[0])
            files.finish()
        assert [w.open_runs for w in writers] == [0, 1]
        fourth = open_run(pool, tmp_path, 4)
        assert fourth._child is writers[0]
        fourth.discard()
        second.discard()
        assert [w.open_runs for w in writers] == [0, 0]
    finally:
        pool.close()


def test_a_second_writer_starts_only_when_a_run_opens_beside_another(tmp_path: Path) -> None:
    """Runs one after the other (a job of one run, `--runs-in-flight 1`) keep one writer."""
    pool = WriterPool(2)
    try:
        for run_id in (1, 2):
            files = open_run(pool, tmp_path, run_id)
            files.write(run_lines(run_id)[0])
            files.finish()
        assert len(pool.writers) == 1
        beside = [open_run(pool, tmp_path, run_id) for run_id in (3, 4, 5)]
        assert len(pool.writers) == 2
        assert [f._child for f in beside] == [pool.writers[0], pool.writers[1], pool.writers[0]]
        for files in beside:
            files.discard()
    finally:
        pool.close()


def killed(writer: WriterProcess) -> WriterProcess:
    """`writer` killed (as the OOM killer does), once this side has seen its answers close."""
    writer._proc.kill()
    writer._proc.wait()
    deadline = time.monotonic() + 10
    while writer.failed is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return writer


def test_a_dead_writer_fails_its_runs_and_the_next_runs_go_to_the_live_one(
    tmp_path: Path,
) -> None:
    pool = WriterPool(2)
    try:
        doomed = open_run(pool, tmp_path, 1)
        dead = killed(doomed._child)
        with pytest.raises(OSError, match="the writer process stopped: killed by SIGKILL"):
            doomed.finish()
        for run_id in (2, 3):  # each on the live writer, though it has more runs open
            files = open_run(pool, tmp_path, run_id)
            assert files._child is not dead
            for data in run_lines(run_id):
                files.write(data)
            files.finish()
            assert files.written("points.ndjson")[0] > 0
    finally:
        pool.close()


def test_a_pool_of_dead_writers_says_why_when_a_run_opens(tmp_path: Path) -> None:
    pool = WriterPool(1)
    try:
        killed(pool.writers[0])
        with pytest.raises(OSError, match="killed by SIGKILL"):
            open_run(pool, tmp_path, 1)
    finally:
        pool.close()


async def harvest_points(tmp_path: Path, cloud: SimCloud) -> None:
    """A points harvest of every run of `cloud`: each published, intact."""
    async with Simulator(cloud) as sim:
        settings = settings_for(sim, tmp_path, format="points")
        with anyio.fail_after(60):
            assert not (await harvest_job(settings, targets(cloud))).report.failed
    assert intact(list(verify(tmp_path)))
    assert sorted(p.name for p in tmp_path.glob("*.points.ndjson")) == [
        f"{r}.points.ndjson" for r in sorted(cloud.runs)
    ]


@pytest.mark.parametrize("cpus", [1, 2])
async def test_a_points_harvest_spreads_its_runs_over_its_writers_and_each_is_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpus: int
) -> None:
    monkeypatch.setattr(writerpool, "usable_cpus", lambda: cpus)
    chosen: list[int] = []
    real_for_run = WriterPool.for_run

    def for_run(self: WriterPool) -> WriterProcess:
        writer = real_for_run(self)
        chosen.append(self.writers.index(writer))
        return writer

    monkeypatch.setattr(WriterPool, "for_run", for_run)
    await harvest_points(tmp_path, generate_cloud(runs=6, metrics=5, points=40))
    assert len(chosen) == 6 and set(chosen) == set(range(cpus))


async def test_a_points_job_of_one_run_starts_one_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writerpool, "usable_cpus", lambda: 2)
    pools: list[WriterPool] = []
    real_close = WriterPool.close

    def close(self: WriterPool) -> None:
        pools.append(self)
        real_close(self)

    monkeypatch.setattr(WriterPool, "close", close)
    await harvest_points(tmp_path, generate_cloud(runs=1, metrics=5, points=40))
    assert [len(pool.writers) for pool in pools] == [1]


def writer_pids(pid: int) -> list[int]:
    """The writer processes a harvester (`pid`) started, from any of its threads."""
    children: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            children += map(int, Path(f"/proc/{pid}/task/{task}/children").read_text().split())
    found = []
    for child in children:
        with contextlib.suppress(OSError):
            if b"harvester.writechild" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
    return found


def points_job(sim: Simulator, tmp_path: Path, cloud: SimCloud) -> tuple[Path, list[str]]:
    """Where a points harvest of every run of `cloud` writes, and its command."""
    out = tmp_path / "out"
    runs_file = tmp_path / "runs.txt"
    runs_file.write_text("".join(f"{r}\n" for r in sorted(cloud.runs)))
    command = cli_command(sim, "harvest", "--runs-file", str(runs_file), "--out", str(out),
                          "--format", "points")  # fmt: skip
    return out, command


async def writers_at_work(process: Process, out: Path) -> list[int]:
    """Both writers' pids, once they run and a run is published (at 15 requests/s the
    job lasts seconds)."""
    await wait_for(lambda: len(writer_pids(process.pid)) == 2, within=20)
    await wait_for(lambda: any(out.glob("*.points.ndjson")), within=20)
    return writer_pids(process.pid)


async def ended(process: Process) -> str:
    """What the job said on stderr, once it has ended."""
    said = await stderr_until(process, b"")
    with anyio.fail_after(60):
        await process.wait()
    return said.decode(errors="replace")


def published(out: Path) -> set[int]:
    return {int(p.name.split(".")[0]) for p in out.glob("*.points.ndjson")}


async def completed_again(sim: Simulator, command: list[str], out: Path, runs: int) -> None:
    """The same command again harvests what is missing: every run published, intact."""
    rerun = await anyio.run_process(command, env=cli_env(sim), cwd=ROOT, check=False)
    assert rerun.returncode == 0, rerun.stderr.decode()
    rows = list(verify(out))
    assert len(published(out)) == runs and intact(rows) and len(rows) == 3 * runs


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="Linux's /proc")
async def test_a_writer_killed_mid_harvest_stops_the_job_and_a_rerun_completes_it(
    tmp_path: Path,
) -> None:
    """One of a points harvest's two writers killed (as the OOM killer does): the job
    stops as on any write error, saying why (`cannot write to DIR`) with status 1; the
    runs published before are whole, and the next job harvests the rest."""
    cloud = generate_cloud(runs=8, metrics=30, points=200)
    async with Simulator(cloud) as sim:
        out, command = points_job(sim, tmp_path, cloud)
        process = await anyio.open_process([*command, "--rate", "15"], env=cli_env(sim), cwd=ROOT)
        async with process:
            os.kill((await writers_at_work(process, out))[0], signal.SIGKILL)
            said = await ended(process)
        assert process.returncode == 1, said
        assert f"cannot write to {out}: the writer process stopped: killed by SIGKILL" in said
        assert 1 <= len(published(out)) < len(cloud.runs)
        assert intact(list(verify(out)))
        await completed_again(sim, command, out, len(cloud.runs))


async def test_runs_opened_side_by_side_share_one_pool_each_counted_in_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sink opens its runs on worker threads at once: one pool starts (its start slowed
    here, as a busy machine slows it), and the runs are spread over its writers."""
    monkeypatch.setattr(writerpool, "usable_cpus", lambda: 2)
    pools: list[WriterPool] = []
    real_init = WriterPool.__init__

    def slow_init(self: WriterPool, size: int) -> None:
        time.sleep(0.2)
        real_init(self, size)
        pools.append(self)

    monkeypatch.setattr(WriterPool, "__init__", slow_init)
    sink = DirectorySink(tmp_path, output_format="points")
    try:
        async with anyio.create_task_group() as group:
            for run_id in range(1, 7):
                group.start_soon(sink.begin, run_id)
        assert len(pools) == 1
        assert sorted(w.open_runs for w in pools[0].writers) == [3, 3]
    finally:
        await sink.close()


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="Linux's /proc")
async def test_ctrl_c_in_a_points_harvest_ends_both_writers_and_loses_nothing(
    tmp_path: Path,
) -> None:
    """^C reaches the whole process group, the writers too: they ignore it, the harvester
    stops its runs and closes their pipes; it exits 130 without a traceback, no writer is
    left running, no temporary file is left, and the next job completes the archive."""
    cloud = generate_cloud(runs=8, metrics=30, points=200)
    async with Simulator(cloud) as sim:
        out, command = points_job(sim, tmp_path, cloud)
        process = await anyio.open_process(
            [*command, "--rate", "15"], env=cli_env(sim), cwd=ROOT, start_new_session=True
        )
        async with process:
            writers = await writers_at_work(process, out)
            os.killpg(process.pid, signal.SIGINT)  # what ^C sends: the whole group
            said = await ended(process)
        assert process.returncode == 130, said
        assert "Traceback" not in said
        # Both ended with the job, not orphaned.
        await wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in writers))
        hidden = [p.name for p in out.iterdir() if p.name.startswith(".")]
        assert all(name.startswith(".harvester") for name in hidden), hidden
        assert intact(list(verify(out)))
        await completed_again(sim, command, out, len(cloud.runs))
