"""`--out s3://`: a second stop signal while the store has gone away ends the job as
stopped (exit 130), wherever the job was (its start's listings, a run's commit), since
the requests it then cuts failed only because of the cut; a store that answers with an
error meanwhile still fails the job (exit 1)."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from aiohttp import web

from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator
from tests.process_helpers import ROOT, cli_command, cli_env, stderr_until, wait_for
from tests.s3_helpers import ACCESS_DENIED, CREDENTIALS, GoneStore, S3Server

pytest.importorskip("aiobotocore")
pytestmark = pytest.mark.timeout(120, method="thread")


def _first(request: web.Request) -> bool:
    return True  # the job's first request: its start's listings and lease


def _manifest_put(request: web.Request) -> bool:
    return request.method == "PUT" and request.path.endswith(".manifest.json")  # a commit


async def _stopped_twice(
    s3: S3Server,
    bucket: str,
    at: Callable[[web.Request], bool],
    state: Path,
    *,
    then: tuple[int, bytes] | None = None,
) -> tuple[int, str]:
    """A job whose store goes away `at` a request gets SIGINT twice; `then`: the answer
    the store sends to the requests held, once the job said it stops now. Returns the
    job's exit status and what it said."""
    cloud = generate_cloud(runs=1, metrics=20, points=100)  # one PUT: below a part
    store = GoneStore(s3, at)
    async with Simulator(cloud) as sim, store.serving() as endpoint:
        args = ["--out", f"s3://{bucket}/stop/", "--s3-endpoint-url", endpoint,
                "--run", str(*cloud.runs), "--state", str(state)]  # fmt: skip
        env = {**cli_env(sim), **CREDENTIALS}
        job = await anyio.open_process(cli_command(sim, "harvest", *args), env=env, cwd=ROOT)
        async with job:
            try:
                with anyio.fail_after(30):
                    await store.went.wait()
                job.send_signal(signal.SIGINT)
                said = await stderr_until(job, b"stopping")
                job.send_signal(signal.SIGINT)
                said += await stderr_until(job, b"stopping now")
                if then is not None:
                    store.answer(*then)
                with anyio.fail_after(20):  # the cut's few seconds, not botocore's minutes
                    code = await job.wait()
                said += await stderr_until(job, b"")
            finally:
                if job.returncode is None:
                    job.kill()
                store.answer(500, b"")  # the held requests end (the proxy's shutdown waits)
    assert b"Traceback" not in said and CREDENTIALS["AWS_SECRET_ACCESS_KEY"].encode() not in said
    return code, said.decode()


@pytest.mark.parametrize("at", [_first, _manifest_put], ids=["start", "commit"])
async def test_a_second_signal_while_the_store_is_gone_ends_the_job_as_stopped(
    s3: S3Server, bucket: str, at: Callable[[web.Request], bool], tmp_path: Path
) -> None:
    """Before: the start's cut listing was said as the store refusing the job (exit 2),
    and a commit's cut request as a failed job (exit 1)."""
    code, said = await _stopped_twice(s3, bucket, at, tmp_path / "s.sqlite")
    assert code == 130, said
    assert "stopped by SIGINT" in said, said


async def test_a_store_that_answers_an_error_after_the_second_signal_fails_the_job(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    """The commit's request answered AccessDenied within the cut's seconds: a failure of
    the store, not of the stop."""
    code, said = await _stopped_twice(
        s3, bucket, _manifest_put, tmp_path / "s.sqlite", then=(403, ACCESS_DENIED)
    )
    assert code == 1, said
    assert "denied" in said, said


async def test_a_signal_ends_the_wait_for_a_live_force_job_at_once(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    """A job that finds a live `--force` job's claim on a run it wants waits until the
    claim goes or is stale, up to `s3_lease` (60 s): a first SIGINT meanwhile said
    "stopping: nothing in flight" and the job went on waiting."""
    cloud = generate_cloud(runs=1, metrics=5, points=5)
    (run_id,) = cloud.runs
    client = s3.client()
    lease = "w/.harvester-live/otherjob"
    upload = client.create_multipart_upload(Bucket=bucket, Key=lease)["UploadId"]
    client.upload_part(Bucket=bucket, Key=lease, UploadId=upload, PartNumber=1, Body=b"live\n")
    client.create_multipart_upload(Bucket=bucket, Key=f"{lease}/{run_id}.force")
    async with Simulator(cloud) as sim:
        args = ["--out", f"s3://{bucket}/w/", "--s3-endpoint-url", s3.url, "--run", str(run_id),
                "--state", str(tmp_path / "s.sqlite")]  # fmt: skip
        env = {**cli_env(sim), **CREDENTIALS, "HARVESTER_S3_LEASE": "60"}
        job = await anyio.open_process(cli_command(sim, "harvest", *args), env=env, cwd=ROOT)
        async with job:
            try:
                # Its own lease made (as it lists the prefix), it is waiting by then.
                await wait_for(lambda: len(s3.leases(bucket)) == 3, within=30)
                await anyio.sleep(0.5)
                job.send_signal(signal.SIGINT)
                with anyio.fail_after(15):
                    code = await job.wait()
                said = (await stderr_until(job, b"")).decode()
            finally:
                if job.returncode is None:
                    job.kill()
        assert not sim.requests_for("series")
    assert code == 130, said
    assert "1 runs not harvested" in said or "1 run not harvested" in said, said
