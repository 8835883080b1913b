"""`--out s3://` with `--force`: two jobs replacing one run at once may leave one's data
object under the other's manifest; the job whose data object came last says so and keeps
its claim on the run, so the next job stores the run again."""

from __future__ import annotations

import hashlib
from pathlib import Path

import anyio
import orjson
import pytest
from aiohttp import web
from anyio.abc import Process

from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator
from tests.harvest_helpers import canonical, expected_records, parse_lines
from tests.process_helpers import ROOT, cli_command, cli_env
from tests.s3_helpers import CREDENTIALS, HeldStore, S3Server, harvest

pytest.importorskip("aiobotocore")
pytestmark = pytest.mark.timeout(120, method="thread")


async def test_two_force_jobs_replacing_one_run_at_once_leave_it_to_be_stored_again(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    """Each `--force` job writes the run's manifest, then its data object, unconditionally.
    Two jobs past their start (where a job waits for the claims it finds) claimed one run
    at once: the first held between its manifest and its data object while the second
    replaced the run whole, the first's data object then landed under the second's
    manifest (verify: corrupt), the jobs ended 0, and no claim was left for a later job
    to repair it. That job now fails, keeping its claim, and the next job repairs it."""
    cloud = generate_cloud(runs=1, metrics=5, points=5)
    (run_id,) = cloud.runs
    key = f"c/{run_id}.ndjson"

    def data_put(request: web.Request) -> bool:
        return request.method == "PUT" and request.path.endswith(f"/{key}")

    def force_claim(request: web.Request) -> bool:
        return request.method == "POST" and request.path.endswith(f"/{run_id}.force")

    held_data, held_claim = HeldStore(s3, data_put), HeldStore(s3, force_claim)
    async with (
        Simulator(cloud) as sim,
        held_data.serving() as data_url,
        held_claim.serving() as claim_url,
    ):
        args = ["--out", f"s3://{bucket}/c/", "--run", str(run_id), "--force"]
        first = await harvest(sim, *args, "--s3-endpoint-url", s3.url,
                              "--state", str(tmp_path / "0.sqlite"))  # fmt: skip
        assert first.returncode == 0, first.stderr
        env = {**cli_env(sim), **CREDENTIALS}
        # `later` claims the run second, once `earlier` is held before its data object.
        later = [*args, "--s3-endpoint-url", claim_url, "--state", str(tmp_path / "2.sqlite")]
        earlier = [*args, "--method", "p95", "--s3-endpoint-url", data_url,
                   "--state", str(tmp_path / "1.sqlite")]  # fmt: skip
        jobs: list[Process] = []
        try:
            jobs.append(await anyio.open_process(cli_command(sim, "harvest", *later), env=env,
                                                 cwd=ROOT))  # fmt: skip
            with anyio.fail_after(30):
                await held_claim.held.wait()  # past its start, about to claim the run
            jobs.append(await anyio.open_process(cli_command(sim, "harvest", *earlier), env=env,
                                                 cwd=ROOT))  # fmt: skip
            with anyio.fail_after(30):
                await held_data.held.wait()  # its manifest stored, its data object held
            held_claim.release()
            with anyio.fail_after(60):
                assert await jobs[0].wait() == 0  # it replaced the run whole meanwhile
                held_data.release()
                assert await jobs[1].wait() == 1
                assert jobs[1].stderr is not None
                said = (await jobs[1].stderr.receive()).decode()
            assert f"run {run_id} was replaced by another job at the same time" in said, said
            claims = s3.leases(bucket)
            assert len(claims) == 1 and claims[0].endswith(f"/{run_id}.force")
            again = await harvest(sim, *args[:-1], "--s3-endpoint-url", s3.url,
                                  "--state", str(tmp_path / "3.sqlite"))  # fmt: skip
            assert again.returncode == 0, again.stderr
        finally:
            held_claim.release()
            held_data.release()
            for job in jobs:
                if job.returncode is None:
                    job.kill()
                    await job.wait()
    stored = s3.objects(bucket, "c/")
    (entry,) = orjson.loads(stored[f"c/{run_id}.manifest.json"])["files"]
    assert entry["sha256"] == hashlib.sha256(stored[key]).hexdigest()
    # As the next job stored it: the run's default method, not p95.
    assert canonical(parse_lines(stored[key])) == canonical(expected_records(cloud, run_id))
    assert s3.leases(bucket) == []
