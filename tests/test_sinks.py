"""The output directory's publication guarantees (issue 14, points 1 and 15): with any
number of writers no final file is ever torn, a second job is refused, leftovers of dead
writers go and those of live ones stay, and a full disk or a closed stderr loses nothing."""

from __future__ import annotations

import errno
import os
import threading
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web
from anyio.abc import Process

from harvester import job, outdir
from harvester.cli import main
from harvester.errors import OutputError
from harvester.job import harvest_job, remove_leftovers
from harvester.outdir import LOCK_FILE_NAME, DirectoryLock
from harvester.runfiles import KINDS, RunFiles
from harvester.scheduler import RunOutcome
from harvester.simulator.cloud import SimCloud
from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator
from harvester.sinks import DirectorySink
from harvester.state import STATE_FILE_NAME, HarvestState
from harvester.verify import intact, verify
from harvester.writeproc import ChildRunFiles
from tests.fs_helpers import fill
from tests.harvest_helpers import assert_exact, parse_lines, settings_for, targets
from tests.process_helpers import ROOT, cli_command, cli_env, wait_for

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HeldOverviews:
    """Counts the overview requests the simulator holds until `release` is set."""

    def __init__(self) -> None:
        self.waiting = 0
        self.release = anyio.Event()


@asynccontextmanager
async def holding_overviews(cloud: SimCloud) -> AsyncIterator[tuple[Simulator, HeldOverviews]]:
    """The simulator, holding every overview answer until released: the runs of every
    harvester are then all mid-way, their temporary files open, none published."""
    sim, held = Simulator(cloud), HeldOverviews()

    @web.middleware
    async def hold(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.match_info.route.name == "overview":
            held.waiting += 1
            await held.release.wait()
        return await handler(request)

    sim.app.middlewares.append(hold)  # before the app starts (then it is frozen)
    async with sim:
        try:
            yield sim, held
        finally:
            held.release.set()  # a failed test must not leave answers hanging


@asynccontextmanager
async def started(sim: Simulator, *args: str) -> AsyncIterator[Process]:
    """`harvester harvest ARGS` as a child process, killed if still running at the end."""
    process = await anyio.open_process(
        cli_command(sim, "harvest", *args), env=cli_env(sim), cwd=ROOT
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        await process.aclose()


def flocked(path: Path) -> bool:
    """Whether some process holds a flock on `path` (Linux's /proc/locks, by inode)."""
    try:
        inode = os.stat(path).st_ino
    except FileNotFoundError:
        return False
    locks = Path("/proc/locks").read_text().splitlines()
    return any(
        line.split()[5].rsplit(":", 1)[-1] == str(inode) for line in locks if "FLOCK" in line
    )


def partials(out: Path) -> list[Path]:
    return sorted(out.glob(".*.partial"))


def harvest_args(out: Path, state: Path, cloud: SimCloud) -> list[str]:
    runs = [arg for run_id in sorted(cloud.runs) for arg in ("--run", str(run_id))]
    return ["--out", str(out), "--state", str(state), "--runs-in-flight", str(len(cloud.runs)),
            *runs]  # fmt: skip


async def test_two_harvesters_on_one_directory_never_tear_a_file(tmp_path: Path) -> None:
    cloud = generate_cloud(runs=4, metrics=30, points=20)
    out = tmp_path / "out"
    async with holding_overviews(cloud) as (sim, held):
        async with started(sim, *harvest_args(out, tmp_path / "a.db", cloud)) as first:
            await wait_for(lambda: held.waiting == 4 and len(partials(out)) == 4, within=30)
            # A second job on the directory, with a state file of its own, is refused.
            refused = await anyio.run_process(
                cli_command(sim, "harvest", *harvest_args(out, tmp_path / "b.db", cloud)),
                env=cli_env(sim), cwd=ROOT, check=False,
            )  # fmt: skip
            assert refused.returncode == 2
            [error] = [e for e in parse_lines(refused.stderr) if e["event"] == "error"]
            assert error["message"] == (
                f"another harvester is writing to {out}; wait for it to finish, "
                "or give this one its own --out"
            )
            # With the lock file deleted under the first job the second gets in: now only
            # unique temporary files and a publication that never replaces stand between
            # the two writers of every run.
            (out / LOCK_FILE_NAME).unlink()
            async with started(sim, *harvest_args(out, tmp_path / "c.db", cloud)) as second:
                await wait_for(lambda: held.waiting == 8 and len(partials(out)) == 8, within=30)
                held.release.set()
                with anyio.fail_after(30):
                    assert await first.wait() == 0
                    assert await second.wait() == 0
        # Every run was fetched and written by both, and published by one of them.
        fetched = Counter(r.run_id for r in sim.requests_for("metrics"))
        assert fetched == dict.fromkeys(cloud.runs, 2)
    assert_exact(cloud, out)  # whole files, every record exactly once, no partial left
    for state_file in ("a.db", "c.db"):  # the loser knows the run is done: the file is whole
        with HarvestState.open(tmp_path / state_file) as state:
            assert state.done_runs(cloud.runs) == set(cloud.runs)


def test_a_second_job_on_a_locked_directory_is_refused(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with DirectoryLock(tmp_path):
        code = main(["harvest", "--token", "t", "--base-url", "http://127.0.0.1:9", "--run", "1",
                     "--out", str(tmp_path), "--state", str(tmp_path / "other.db")])  # fmt: skip
    assert code == 2
    assert f"another harvester is writing to {tmp_path}" in capfd.readouterr().err
    # Released: the directory can be locked again.
    DirectoryLock(tmp_path).release()


@pytest.mark.parametrize(
    "fmt", [("raw",), ("points", "--compress", "zstd"), ("parquet",)], ids=lambda f: f[0]
)
async def test_leftovers_of_a_dead_writer_are_removed_and_a_live_writers_are_not(
    tmp_path: Path, fmt: tuple[str, ...]
) -> None:
    if fmt[0] == "parquet":
        pytest.importorskip("pyarrow")
    cloud = generate_cloud(runs=2, metrics=10, points=5)
    out = tmp_path / "out"
    files = 2 * len(KINDS[fmt[0]])  # each run's temporary files: points and meta, ...
    args = [*harvest_args(out, tmp_path / "a.db", cloud), "--format", *fmt]
    async with holding_overviews(cloud) as (sim, held):
        async with started(sim, *args) as writer:
            await wait_for(lambda: held.waiting == 2 and len(partials(out)) == files, within=30)
            # ... and both flocked: between its mkstemp and its flock a writer's file is
            # fair game for a cleaner (the writer then takes another name), which is not
            # what this test is about. Read from /proc/locks, which takes no lock.
            await wait_for(lambda: all(flocked(p) for p in partials(out)), within=30)
            live = partials(out)
            # Even the cleanup of a job whose default state lock would guard `out`
            # leaves a live writer's files alone.
            assert remove_leftovers(settings_for(sim, out)) == 0
            assert partials(out) == live
            writer.kill()
            await writer.wait()
        assert partials(out) == live  # a dead writer's files stay until a job cleans up
        # ... and verify knows them for the harvester's own, not orphans.
        assert not [row for row in verify(out) if row["status"] == "orphan"]
        # ... and any job cleans up, whatever its --state.
        elsewhere = settings_for(sim, out, state=str(tmp_path / "elsewhere.db"), format=fmt[0])
        assert remove_leftovers(elsewhere) == files
        assert partials(out) == []
        held.release.set()
        result = await harvest_job(elsewhere, targets(cloud))
    assert not result.report.failed
    if fmt[0] == "raw":
        assert_exact(cloud, out)
    assert partials(out) == [] and intact(list(verify(out)))


async def test_a_run_another_writer_published_is_kept_and_counts_as_done(tmp_path: Path) -> None:
    first, second = DirectorySink(tmp_path), DirectorySink(tmp_path)
    await first.begin(7)
    await second.begin(7)
    assert len(partials(tmp_path)) == 2  # one temporary file each, never a shared one
    await first.write(7, b'{"n": 1}\n')
    await second.write(7, b'{"n": 2, "longer": true}\n')
    assert await first.commit(7) == str(tmp_path / "7.ndjson")
    assert await second.commit(7) == str(tmp_path / "7.ndjson")  # done: the file is whole
    assert (tmp_path / "7.ndjson").read_bytes() == b'{"n": 1}\n'
    assert partials(tmp_path) == []
    # --force replaces on purpose, atomically.
    forced = DirectorySink(tmp_path, replace=True)
    await forced.begin(7)
    await forced.write(7, b'{"n": 3}\n')
    await forced.commit(7)
    assert (tmp_path / "7.ndjson").read_bytes() == b'{"n": 3}\n'
    assert partials(tmp_path) == []


def test_without_hard_links_publication_checks_then_renames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(src: object, dst: object) -> None:  # as on FAT: EPERM
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    final = tmp_path / "1.ndjson"
    for content, published in ((b"first\n", True), (b"second\n", False)):
        fd, temp = outdir.create_temp(tmp_path, 1)
        os.write(fd, content)
        assert outdir.publish(temp, final) is published
        os.close(fd)
    assert final.read_bytes() == b"first\n" and partials(tmp_path) == []
    monkeypatch.setattr(os, "link", lambda src, dst: (_ for _ in ()).throw(OSError(errno.EIO)))
    fd, temp = outdir.create_temp(tmp_path, 2)
    with pytest.raises(OSError):
        outdir.publish(temp, tmp_path / "2.ndjson")  # any other error is not swallowed
    os.close(fd)


async def test_a_commit_that_fails_on_a_full_disk_leaves_no_partial_file(
    tiny_fs: Path, tmp_path: Path
) -> None:
    fill(tiny_fs)  # the run's lines wait in the write buffer: the commit's flush finds it full
    cloud = generate_cloud(runs=1, metrics=5, points=3)
    async with Simulator(cloud) as sim:
        settings = settings_for(sim, tiny_fs, state=str(tmp_path / "state.db"))
        with pytest.raises(OutputError, match="No space left on device"):
            await harvest_job(settings, targets(cloud))
    assert partials(tiny_fs) == [] and list(tiny_fs.glob("*.ndjson")) == []


async def test_a_run_published_before_stderr_closed_is_recorded_in_the_state(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # whoever read the messages is gone: every write to stderr fails
    try:
        runs = [arg for run_id in sorted(cloud.runs) for arg in ("--run", str(run_id))]
        cmd = cli_command(simulator, "harvest", "--out", str(tmp_path), "--runs-in-flight", "1",
                          *runs)  # fmt: skip
        with anyio.fail_after(30):
            await anyio.run_process(
                cmd, stderr=write_end, env=cli_env(simulator), cwd=ROOT, check=False
            )
    finally:
        os.close(write_end)
    published = {int(path.stem) for path in tmp_path.glob("*.ndjson")}
    assert published  # the first run was published before its line could not be written
    with HarvestState.open(tmp_path / STATE_FILE_NAME) as state:
        assert state.done_runs(cloud.runs) == published
    assert partials(tmp_path) == []


async def test_a_harvest_started_with_stderr_closed_publishes_and_records_every_run(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    runs = [arg for run_id in sorted(cloud.runs) for arg in ("--run", str(run_id))]
    # `2>&-`: descriptor 2 is closed when the harvester starts (sys.stderr is None).
    cmd = ["sh", "-c", 'exec "$@" 2>&-', "sh",
           *cli_command(simulator, "harvest", "--out", str(tmp_path), *runs)]  # fmt: skip
    with anyio.fail_after(30):
        done = await anyio.run_process(cmd, env=cli_env(simulator), cwd=ROOT, check=False)
    assert done.returncode == 0 and done.stdout == b""  # no message strays onto stdout
    assert sorted(int(p.stem) for p in tmp_path.glob("*.ndjson")) == sorted(cloud.runs)
    with HarvestState.open(tmp_path / STATE_FILE_NAME) as state:
        assert state.done_runs(cloud.runs) == set(cloud.runs)


@pytest.mark.parametrize(("fmt", "codec"), [("raw", "none"), ("raw", "zstd")])
async def test_splitting_compressing_and_hashing_never_run_on_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str, codec: str
) -> None:
    """Every call into a run's write stack (compress, hash, write) happens in a worker
    thread: the loop keeps fetching meanwhile."""
    loop_thread, seen = threading.get_ident(), Counter[str]()
    for name in ("write", "finish"):
        real = getattr(RunFiles, name)

        def spy(self: RunFiles, *args: object, _real: Any = real, _name: str = name) -> None:
            seen[f"{_name} {'loop' if threading.get_ident() == loop_thread else 'thread'}"] += 1
            _real(self, *args)

        monkeypatch.setattr(RunFiles, name, spy)
    cloud = generate_cloud(runs=2, metrics=5, points=3)
    async with Simulator(cloud) as sim:
        settings = settings_for(sim, tmp_path, format=fmt, compress=codec)
        assert not (await harvest_job(settings, targets(cloud))).report.failed
    assert seen["write thread"] >= 2 * 3 and seen["finish thread"] == 2
    assert seen["write loop"] == seen["finish loop"] == 0


@pytest.mark.parametrize(("fmt", "codec", "data"), [("points", "gzip", "points.ndjson.gz"),
                                                     ("parquet", "zstd", "parquet")])  # fmt: skip
async def test_points_are_split_compressed_and_hashed_in_the_writer_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str, codec: str, data: str
) -> None:
    """--format points and parquet: the write stack (split, build the lines or the
    Parquet columns, compress, hash, write) runs in a child process (`writeproc`), never
    in this one; here a run's files are only opened, waited for in a worker thread, and
    published."""
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    loop_thread, seen = threading.get_ident(), Counter[str]()
    monkeypatch.setattr(RunFiles, "write", lambda *args: seen.update(["RunFiles here"]))
    real_finish = ChildRunFiles.finish

    def finish(self: ChildRunFiles) -> None:
        seen["finish " + ("loop" if threading.get_ident() == loop_thread else "thread")] += 1
        real_finish(self)

    monkeypatch.setattr(ChildRunFiles, "finish", finish)
    cloud = generate_cloud(runs=2, metrics=5, points=3)
    async with Simulator(cloud) as sim:
        settings = settings_for(sim, tmp_path, format=fmt, compress=codec)
        assert not (await harvest_job(settings, targets(cloud))).report.failed
    assert seen == {"finish thread": 2}
    assert intact(list(verify(tmp_path)))
    assert sorted(p.name for p in tmp_path.glob(f"*.{data}")) == [
        f"{r}.{data}" for r in sorted(cloud.runs)
    ]


class SlowFirstCommit:
    """Around the job's sink: the first run's commit waits until another run's commit
    has begun (so it fails, after a while, if commits go one at a time)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.begun: list[int] = []
        self.another_began = anyio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def commit(self, run_id: int, *args: Any) -> Any:
        self.begun.append(run_id)
        if len(self.begun) == 1:
            with anyio.fail_after(10):
                await self.another_began.wait()
        else:
            self.another_began.set()
        return await self.inner.commit(run_id, *args)


class EndOrder:
    def __init__(self) -> None:
        self.ended: list[int] = []

    def run_started(self, run_id: int) -> None:
        pass

    def run_ended(self, outcome: RunOutcome) -> None:
        self.ended.append(outcome.run_id)


async def test_runs_commit_side_by_side_and_are_told_in_the_order_they_ended(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A commit waits on fsyncs: one at a time, a busy disk made the publisher fall behind.
    wrapped: list[SlowFirstCommit] = []
    make_sink = job.make_sink

    @contextmanager
    def slow_first(*args: Any, **kwargs: Any) -> Iterator[Any]:
        with make_sink(*args, **kwargs) as sink:
            wrapped.append(SlowFirstCommit(sink))
            yield wrapped[0]

    monkeypatch.setattr(job, "make_sink", slow_first)
    order = EndOrder()
    settings = settings_for(simulator, tmp_path, state=str(tmp_path / "state.db"))
    result = await harvest_job(settings, targets(cloud), observers=[order])
    assert not result.report.failed and len(cloud.runs) > 1
    # The first run waited for another's commit, and was still told of first.
    assert order.ended == wrapped[0].begun and sorted(order.ended) == sorted(cloud.runs)
    assert_exact(cloud, tmp_path)
