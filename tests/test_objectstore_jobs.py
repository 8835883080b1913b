"""`--out s3://`: jobs at once and jobs killed: nothing but whole runs is ever listed,
a live job's upload is never aborted, a killed job's is, two jobs on one prefix store
every run once, each with its own export spool."""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import anyio
import anyio.from_thread
import orjson
import pytest
from aiohttp import web
from anyio.abc import Process

from harvester.config import load_settings
from harvester.objectstore.listing import list_archive
from harvester.simulator.faults import FaultPlan
from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator
from harvester.status import read_status
from tests.harvest_helpers import (
    canonical,
    expected_records,
    parse_lines,
    serve,
)
from tests.process_helpers import ROOT, cli_command, cli_env, stderr_until
from tests.s3_helpers import CREDENTIALS, S3Server, harvest, moto_server, s3_proxy

pytest.importorskip("aiobotocore")
#: Bounded hard (the thread method ends the session): a stalled store never holds the run.
pytestmark = pytest.mark.timeout(120, method="thread")


async def _upload_seen(process: Process, s3: S3Server, bucket: str) -> bool:
    """Whether a multipart upload appeared while `process` ran."""
    with anyio.fail_after(30):
        while process.returncode is None:
            if await anyio.to_thread.run_sync(s3.uploads, bucket):
                return True
    return False


async def test_after_a_sigkill_mid_upload_a_rerun_is_exact_and_leaves_no_upload(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    cloud = generate_cloud(runs=1, metrics=200, points=2000)  # ~20 MB: several parts
    (run_id,) = cloud.runs
    async with Simulator(cloud) as sim:
        env = {**cli_env(sim), **CREDENTIALS, "HARVESTER_S3_LEASE": "1"}
        args = ["--out", f"s3://{bucket}/k/", "--s3-endpoint-url", s3.url, "--run", str(run_id),
                "--state", str(tmp_path / "s.sqlite")]  # fmt: skip
        # The overview held back: the run cannot be committed before it comes, so the kill
        # lands mid-upload however fast the parts go (without it, the job had at times
        # published the run's manifest, its claim, before the kill).
        sim.faults = FaultPlan(
            p_delay=1.0, delay_seconds=20, fault_endpoints=frozenset({"overview"})
        )
        process = await anyio.open_process(cli_command(sim, "harvest", *args), env=env, cwd=ROOT)
        async with process:
            uploading = await _upload_seen(process, s3, bucket)
            process.kill()
        sim.faults = FaultPlan()
        assert uploading, "the job ended before an upload could be seen"
        assert s3.objects(bucket) == {}  # killed mid-upload: nothing visible
        assert s3.leases(bucket)  # its lease and its claim, left behind
        await anyio.sleep(1.5)  # its lease (1 s here) goes stale: nobody renews it
        done = await harvest(sim, *args, env={"HARVESTER_S3_LEASE": "1"})
        assert done.returncode == 0, done.stderr
    records = parse_lines(s3.objects(bucket)[f"k/{run_id}.ndjson"])
    assert canonical(records) == canonical(expected_records(cloud, run_id))
    assert s3.uploads(bucket) == [] and s3.leases(bucket) == []  # the dead job's aborted too
    assert sorted(s3.objects(bucket)) == [f"k/{run_id}.manifest.json", f"k/{run_id}.ndjson"]


async def test_a_job_killed_before_its_first_upload_leaves_no_lease_behind(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    """Killed while the API held every answer, the job had a lease and nothing else: the
    next job, with no upload of a run to abort, left that stale lease for ever."""
    cloud = generate_cloud(runs=1, metrics=5, points=5)
    (run_id,) = cloud.runs
    args = ["--out", f"s3://{bucket}/k/", "--s3-endpoint-url", s3.url, "--run", str(run_id),
            "--state", str(tmp_path / "s.sqlite")]  # fmt: skip
    lease = {"HARVESTER_S3_LEASE": "1"}
    async with Simulator(cloud) as sim:
        gate = Gate(sim.base_url, close_after=0)  # holds every request to the API
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", gate.forward)
        async with serve(app) as proxy:
            command = cli_command(sim, "harvest", *args)
            command[command.index(sim.base_url)] = proxy
            env = {**cli_env(sim), **CREDENTIALS, **lease}
            process = await anyio.open_process(command, env=env, cwd=ROOT)
            async with process, _killed_at_the_end(process):
                with anyio.fail_after(30):
                    while not await anyio.to_thread.run_sync(s3.leases, bucket):
                        assert process.returncode is None, "the job ended before its lease"
                        await anyio.sleep(0.02)
                process.kill()
            gate.opened.set()
        assert len(s3.leases(bucket)) == 1 and s3.uploads(bucket) == []  # its lease alone
        await anyio.sleep(1.5)  # the lease (1 s here) goes stale
        done = await harvest(sim, *args, env=lease)
        assert done.returncode == 0, done.stderr
    assert s3.leases(bucket) == [] and s3.uploads(bucket) == []
    assert sorted(s3.objects(bucket)) == [f"k/{run_id}.manifest.json", f"k/{run_id}.ndjson"]


@asynccontextmanager
async def _killed_at_the_end(process: Process) -> AsyncIterator[None]:
    """A failed assertion must not leave the test waiting for a process held at the gate."""
    try:
        yield
    finally:
        if process.returncode is None:
            process.kill()


class Gate:
    """A proxy in front of the simulator that closes once it has passed `close_after`
    bytes of answers, and then holds every request until `opened` is set."""

    def __init__(self, target: str, close_after: int) -> None:
        self.target = target
        self.left = close_after
        self.opened = anyio.Event()

    async def forward(self, request: web.Request) -> web.Response:
        if self.left <= 0:
            await self.opened.wait()
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with aiohttp.ClientSession() as session:
            async with session.request(
                request.method, self.target + request.path_qs, headers=headers,
                data=await request.read(),
            ) as answer:  # fmt: skip
                kept = {k: v for k, v in answer.headers.items() if k.lower() == "content-type"}
                body = await answer.read()
                self.left -= len(body)
                return web.Response(status=answer.status, body=body, headers=kept)


async def test_a_live_job_s_upload_is_never_aborted_by_a_later_job(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    """Job B waits for the API mid-upload (its lease renewed); job A harvests the same run
    meanwhile and must leave B's upload alone; B, let go, finds the run stored by A."""
    cloud = generate_cloud(runs=1, metrics=200, points=2000)  # ~20 MB
    (run_id,) = cloud.runs
    async with Simulator(cloud) as sim:
        gate = Gate(sim.base_url, close_after=10 << 20)  # past the first 8 MiB part
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", gate.forward)
        env = {**cli_env(sim), **CREDENTIALS}
        # Many small requests (a short URL cap): the gate holds some of them.
        args = ["--out", f"s3://{bucket}/l/", "--s3-endpoint-url", s3.url, "--run", str(run_id),
                "--max-url-length", "400"]  # fmt: skip
        async with serve(app) as proxy:
            b_command = cli_command(sim, "harvest", *args, "--state", str(tmp_path / "b.sqlite"))
            b_command[b_command.index(sim.base_url)] = proxy
            b = await anyio.open_process(b_command, env=env, cwd=ROOT)
            async with b, _killed_at_the_end(b):
                assert await _upload_seen(b, s3, bucket), "B ended before an upload was seen"
                (b_upload,) = await anyio.to_thread.run_sync(s3.uploads, bucket)
                a_state = ("--state", str(tmp_path / "a.sqlite"))
                a = await harvest(sim, *args, *a_state)
                assert a.returncode == 0, a.stderr
                uploads = await anyio.to_thread.run_sync(s3.uploads, bucket)
                assert [u["UploadId"] for u in uploads] == [b_upload["UploadId"]]
                gate.opened.set()
                with anyio.fail_after(30):
                    assert await b.wait() == 0
    records = parse_lines(s3.objects(bucket)[f"l/{run_id}.ndjson"])
    assert canonical(records) == canonical(expected_records(cloud, run_id))
    assert s3.uploads(bucket) == []
    assert sorted(s3.objects(bucket)) == [f"l/{run_id}.manifest.json", f"l/{run_id}.ndjson"]


async def test_two_jobs_on_one_prefix_archive_every_run_exactly_once_each_with_its_spool(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    """Two jobs at once on one host, with --export-csv: each downloads the exports into a
    spool of its own (a shared one let a job upload, then delete, the other's CSV)."""
    cloud = generate_cloud(runs=6, metrics=10, points=5)
    codes: list[int] = []
    state_home = tmp_path / "xdg-state"
    async with Simulator(cloud) as sim:
        runs = [arg for run_id in sorted(cloud.runs) for arg in ("--run", str(run_id))]
        out = ["--out", f"s3://{bucket}/both/", "--s3-endpoint-url", s3.url, "--export-csv"]

        async def job(name: str) -> None:
            state = ["--state", str(tmp_path / f"{name}.sqlite")]
            done = await harvest(sim, *out, *state, *runs, env={"XDG_STATE_HOME": str(state_home)})
            codes.append(done.returncode)
            assert done.returncode == 0, done.stderr

        async with anyio.create_task_group() as tg:
            tg.start_soon(job, "a")
            tg.start_soon(job, "b")
    assert codes == [0, 0]
    objects = s3.runs(bucket)
    assert sorted(objects) == sorted(
        f"both/{run_id}.{kind}" for run_id in cloud.runs for kind in ("ndjson", "csv")
    )
    manifests = s3.objects(bucket)
    for run_id in cloud.runs:
        data = objects[f"both/{run_id}.ndjson"]
        assert canonical(parse_lines(data)) == canonical(expected_records(cloud, run_id))
        # The manifest describes the objects stored (the loser's never replaced it).
        found = orjson.loads(manifests[f"both/{run_id}.manifest.json"])["files"]
        for entry in found:
            body = objects[f"both/{entry['name']}"]
            assert entry["sha256"] == hashlib.sha256(body).hexdigest()
        assert {entry["name"] for entry in found} == {f"{run_id}.ndjson", f"{run_id}.csv"}
    assert s3.uploads(bucket) == [] and s3.leases(bucket) == []
    # The loser of a run's race records it done, not failed (a run found stored when a
    # job began is skipped, and not recorded).
    for name in ("a", "b"):
        assert set(read_status(tmp_path / f"{name}.sqlite").counts) <= {"done"}
    # Each job's spool was its own, and is gone with it.
    assert [p.name for p in (state_home / "harvester").iterdir() if "spool" in p.name] == []


async def test_nothing_but_whole_runs_is_ever_listed_under_the_prefix(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    """The prefix listed again and again while a slow job uploads runs in parts: every
    object seen is one of the runs' final objects at its final size, a data object only
    beside its manifest, and nothing else (no lease, no temporary object)."""
    cloud = generate_cloud(runs=2, metrics=120, points=2000)  # ~12 MB a run: in parts
    slow = FaultPlan(p_delay=1.0, delay_seconds=0.05, fault_endpoints=frozenset({"series"}))
    listings: list[dict[str, int]] = []
    busy = 0  # listings taken while the job had uploads or leases open
    async with Simulator(cloud, faults=slow) as sim:
        runs = [arg for run_id in cloud.runs for arg in ("--run", str(run_id))]
        args = ["--out", f"s3://{bucket}/v/", "--s3-endpoint-url", s3.url, "--state",
                str(tmp_path / "s.sqlite"), *runs]  # fmt: skip
        finished = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(_harvested, sim, args, finished)
            while not finished.is_set():
                open_now = await anyio.to_thread.run_sync(s3.leases, bucket)
                listings.append(await anyio.to_thread.run_sync(s3.sizes, bucket, "v/"))
                busy += bool(open_now)
    final = s3.sizes(bucket, "v/")
    assert sorted(final) == sorted(
        f"v/{run_id}.{name}" for run_id in cloud.runs for name in ("ndjson", "manifest.json")
    )
    assert busy >= 3, "the job ended before the prefix could be listed while it ran"
    for listed in listings:
        assert all(final.get(key) == size for key, size in listed.items()), listed
        for key in listed:
            assert key.replace(".ndjson", ".manifest.json") in listed, listed


async def _harvested(sim: Simulator, args: list[str], finished: anyio.Event) -> None:
    done = await harvest(sim, *args)
    finished.set()
    assert done.returncode == 0, done.stderr


async def test_a_second_stop_signal_ends_a_job_whose_store_went_away_at_once(
    tmp_path: Path,
) -> None:
    """The store stops answering (moto's server stopped with SIGSTOP) while the job, an
    upload begun, waits on the API. Two SIGINTs then end the job within the few seconds
    its requests are given (`CUT_TIMEOUT`), one line, no traceback: not after botocore's
    timeouts (60 s a try, `--max-attempts` tries) for the commit and the aborts, and 30 s
    for the lease's end. What it left, the next job aborts."""
    cloud = generate_cloud(runs=1, metrics=200, points=2000)  # ~20 MB: several parts
    (run_id,) = cloud.runs
    with moto_server() as s3:
        await anyio.to_thread.run_sync(lambda: s3.client().create_bucket(Bucket="gone"))
        async with Simulator(cloud) as sim:
            gate = Gate(sim.base_url, close_after=10 << 20)  # past the first 8 MiB part
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", gate.forward)
            args = ["--out", "s3://gone/p/", "--s3-endpoint-url", s3.url, "--run", str(run_id),
                    "--max-url-length", "400", "--state", str(tmp_path / "s.sqlite")]  # fmt: skip
            async with serve(app) as proxy:
                command = cli_command(sim, "harvest", *args)
                command[command.index(sim.base_url)] = proxy
                env = {**cli_env(sim), **CREDENTIALS}
                job = await anyio.open_process(command, env=env, cwd=ROOT)
                async with job, _killed_at_the_end(job):
                    assert await _upload_seen(job, s3, "gone"), "ended before an upload"
                    os.kill(s3.process.pid, signal.SIGSTOP)
                    try:
                        job.send_signal(signal.SIGINT)
                        said = await stderr_until(job, b"stopping")  # (two would merge)
                        job.send_signal(signal.SIGINT)
                        with anyio.fail_after(20):  # before: minutes
                            code = await job.wait()
                        said += await stderr_until(job, b"")
                    finally:
                        os.kill(s3.process.pid, signal.SIGCONT)
                    gate.opened.set()
    # Stopped (130), whichever request the cut ended: a part, a commit, the sink's close
    # (`StoreCut`: `test_objectstore_stop` goes through the start and the commit).
    assert code == 130, said.decode()
    assert b"Traceback" not in said and CREDENTIALS["AWS_SECRET_ACCESS_KEY"].encode() not in said


async def test_an_upload_under_the_live_folder_named_by_no_run_id_is_left_alone(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    """Another client's upload at `.harvester-live/JOB/²`: str.isdigit() took '²' for a run's
    claim and int() failed the job (ValueError, an internal error) at its first listing."""
    client = s3.client()
    planted = "n/.harvester-live/someone/\N{SUPERSCRIPT TWO}"
    client.create_multipart_upload(Bucket=bucket, Key=planted)
    cloud = generate_cloud(runs=1, metrics=3, points=10)
    (run_id,) = cloud.runs
    async with Simulator(cloud) as sim:
        args = ["--out", f"s3://{bucket}/n/", "--s3-endpoint-url", s3.url, "--run", str(run_id),
                "--state", str(tmp_path / "s.sqlite")]  # fmt: skip
        done = await harvest(sim, *args)
    assert done.returncode == 0, done.stderr
    records = parse_lines(s3.objects(bucket)[f"n/{run_id}.ndjson"])
    assert canonical(records) == canonical(expected_records(cloud, run_id))


async def test_a_rerun_at_once_stores_a_run_whose_job_was_killed_after_its_manifest(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    """A job killed between a run's manifest (its claim) and its data object leaves a lease
    still fresh for up to `s3_lease`: a job started at once took the claim for a live
    job's, counted the run done and ended 0 with the run not archived."""
    cloud = generate_cloud(runs=2, metrics=10, points=5)
    killed, other = sorted(cloud.runs)
    async with Simulator(cloud) as sim:
        runs = ["--run", str(killed), "--run", str(other)]
        args = ["--out", f"s3://{bucket}/k/", "--s3-endpoint-url", s3.url, *runs,
                "--state", str(tmp_path / "s.sqlite")]  # fmt: skip
        first = await harvest(sim, *args)
        assert first.returncode == 0, first.stderr
        # What the kill leaves: the manifest, no data object, the job's lease fresh.
        client = s3.client()
        client.delete_object(Bucket=bucket, Key=f"k/{killed}.ndjson")
        head = client.head_object(Bucket=bucket, Key=f"k/{killed}.manifest.json")
        lease = f"k/.harvester-live/{head['Metadata']['harvester-job']}"
        upload = client.create_multipart_upload(Bucket=bucket, Key=lease)["UploadId"]
        client.upload_part(Bucket=bucket, Key=lease, UploadId=upload, PartNumber=1, Body=b"live\n")
        again = await harvest(sim, *args, env={"HARVESTER_S3_LEASE": "2"})
        assert again.returncode == 0, again.stderr
    records = parse_lines(s3.objects(bucket)[f"k/{killed}.ndjson"])
    assert canonical(records) == canonical(expected_records(cloud, killed))
    manifest = orjson.loads(s3.objects(bucket)[f"k/{killed}.manifest.json"])
    (entry,) = manifest["files"]
    assert entry["sha256"] == hashlib.sha256(s3.objects(bucket)[f"k/{killed}.ndjson"]).hexdigest()
    # (The dead job's lease is aborted by the first job that finds it stale: not always this one.)
    assert s3.uploads(bucket) == []


@pytest.mark.parametrize("killed", [False, True], ids=["ended", "killed"])
async def test_a_run_left_half_replaced_by_a_force_job_is_stored_again(
    s3: S3Server, bucket: str, tmp_path: Path, killed: bool
) -> None:
    """`--force` replaces a run's manifest, then its data object: a job cut between the two
    (here the store refused the data object) left the run's old data object under its new
    manifest, and later jobs without --force counted the run archived: verify said it
    was corrupt for ever. Its claim on the run, left behind, has the next job store it.
    `killed`: the job's lease left fresh too, as a kill leaves it for up to `s3_lease`;
    a job started at once took it for a live job replacing the run and ended 0 (now it
    waits until the claim goes or is stale)."""
    cloud = generate_cloud(runs=1, metrics=5, points=5)
    (run_id,) = cloud.runs
    key = f"t/{run_id}.ndjson"

    def data_put(request: web.Request) -> bool:
        return request.method == "PUT" and request.path.endswith(f"/{key}")

    async with Simulator(cloud) as sim:
        args = ["--out", f"s3://{bucket}/t/", "--run", str(run_id), "--max-attempts", "1",
                "--state", str(tmp_path / "s.sqlite")]  # fmt: skip
        first = await harvest(sim, *args, "--s3-endpoint-url", s3.url)
        assert first.returncode == 0, first.stderr
        async with s3_proxy(s3, data_put) as url:
            cut = await harvest(sim, *args, "--force", "--method", "p95", "--s3-endpoint-url", url)
        assert cut.returncode == 1 and b"SlowDown" in cut.stderr
        stored = s3.objects(bucket, "t/")
        (entry,) = orjson.loads(stored[f"t/{run_id}.manifest.json"])["files"]
        assert entry["sha256"] != hashlib.sha256(stored[key]).hexdigest()  # half replaced
        (claim,) = s3.leases(bucket)
        assert claim.endswith(f"/{run_id}.force")
        settings = load_settings({"out": f"s3://{bucket}/t/", "s3_endpoint_url": s3.url})
        if killed:
            lease, client = claim.rpartition("/")[0], s3.client()
            upload = client.create_multipart_upload(Bucket=bucket, Key=lease)["UploadId"]
            client.upload_part(Bucket=bucket, Key=lease, UploadId=upload, PartNumber=1,
                               Body=b"live\n")  # fmt: skip
        else:  # `harvester runs` and `status` say it is not archived, as the harvest finds it.
            assert run_id not in await anyio.to_thread.run_sync(list_archive, settings)
        env = {"HARVESTER_S3_LEASE": "2"}
        again = await harvest(sim, *args, "--s3-endpoint-url", s3.url, env=env)
        assert again.returncode == 0, again.stderr
        assert run_id in await anyio.to_thread.run_sync(list_archive, settings)
    stored = s3.objects(bucket, "t/")
    assert canonical(parse_lines(stored[key])) == canonical(expected_records(cloud, run_id))
    (entry,) = orjson.loads(stored[f"t/{run_id}.manifest.json"])["files"]
    assert entry["sha256"] == hashlib.sha256(stored[key]).hexdigest()
    assert claim not in s3.leases(bucket)  # it went once the run was stored whole
    if not killed:  # (a dead job's lease goes with the first job that finds it stale)
        assert s3.leases(bucket) == []
