"""`--out s3://`: what goes wrong at the store is retried (SlowDown) or said in one line
with the right exit status, loses nothing, and never shows a credential."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from unittest.mock import ANY

import anyio
import anyio.from_thread
import orjson
import pytest
from aiohttp import web

from harvester.cli import main
from harvester.config import load_settings
from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator
from tests.harvest_helpers import (
    canonical,
    cli_args,
    expected_records,
    parse_lines,
    serve,
)
from tests.s3_helpers import (
    CREDENTIALS,
    RUNS,
    S3Cli,
    S3Server,
    harvest,
    moto_server,
    s3_args,
    s3_proxy,
    store_run,
)

pytest.importorskip("aiobotocore")

pytest.importorskip("aiobotocore")
#: Bounded hard (the thread method ends the session): a stalled store never holds the run.
pytestmark = pytest.mark.timeout(120, method="thread")


async def test_a_slowdown_answer_is_retried(s3: S3Server, bucket: str) -> None:
    """The body sent again whole (`PartBody`: longer than its first write)."""
    puts: list[str] = []
    lines = b"line\n" * 1000

    def first_put(request: web.Request) -> bool:
        if request.method == "PUT" and request.path.endswith("/3.ndjson"):
            puts.append(request.path)
            return len(puts) == 1
        return False

    async with s3_proxy(s3, first_put) as url:
        await store_run(url, bucket, 3, lines)
    assert len(puts) == 2
    assert await anyio.to_thread.run_sync(s3.runs, bucket) == {"pre/3.ndjson": lines}


async def test_the_data_object_is_stored_last_after_the_manifest_and_the_export(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    """The order of the writes as the store sees them (a proxy records them)."""
    cloud = generate_cloud(runs=1, metrics=5, points=5)
    (run_id,) = cloud.runs
    writes: list[str] = []

    def record(request: web.Request) -> bool:
        if request.method in ("PUT", "POST") and ".harvester-live/" not in request.path:
            writes.append(request.path.rpartition("/")[2])
        return False

    async with Simulator(cloud) as sim, s3_proxy(s3, record) as url:
        args = ["--out", f"s3://{bucket}/o/", "--s3-endpoint-url", url, "--run", str(run_id),
                "--format", "points", "--export-csv"]  # fmt: skip
        done = await harvest(sim, *args, "--state", str(tmp_path / "s.sqlite"))
        assert done.returncode == 0, done.stderr
    csv = next(name for name in writes if ".csv" in name)
    assert writes == [f"{run_id}.manifest.json", csv, f"{run_id}.points.ndjson",
                      f"{run_id}.meta.ndjson"]  # fmt: skip


async def test_an_upload_that_fails_for_good_fails_the_job_and_the_next_job_archives_the_run(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    cloud = generate_cloud(runs=1, metrics=5, points=5)
    (run_id,) = cloud.runs

    def data_puts(request: web.Request) -> bool:
        return request.method == "PUT" and request.path.endswith(f"/{run_id}.ndjson")

    async with Simulator(cloud) as sim, s3_proxy(s3, data_puts) as url:
        args = ["--out", f"s3://{bucket}/f/", "--run", str(run_id), "--max-attempts", "2"]
        state = ("--state", str(tmp_path / "s.sqlite"))
        done = await harvest(sim, *args, *state, "--s3-endpoint-url", url)
        assert done.returncode == 1 and b"SlowDown" in done.stderr
        assert await anyio.to_thread.run_sync(s3.objects, bucket, "f/") == {
            f"f/{run_id}.manifest.json": ANY
        }  # its claim, but no data object: the run is not archived
        done = await harvest(sim, *args, *state, "--s3-endpoint-url", s3.url)
        assert done.returncode == 0, done.stderr
    stored = s3.objects(bucket, "f/")
    data = stored[f"f/{run_id}.ndjson"]
    assert canonical(parse_lines(data)) == canonical(expected_records(cloud, run_id))
    # The dead job's manifest was replaced by this job's, which names these bytes.
    (entry,) = orjson.loads(stored[f"f/{run_id}.manifest.json"])["files"]
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()


async def test_a_lease_that_cannot_be_taken_fails_the_job_before_any_run_is_fetched(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    """The lease is taken while the job lists the prefix; its failure still comes first."""
    cloud = generate_cloud(runs=1, metrics=5, points=5)
    flags = ["--max-attempts", "1", "--state", str(tmp_path / "s.sqlite"), "--run", "100001"]
    async with Simulator(cloud) as sim, s3_proxy(s3, lambda r: "harvester-live" in r.path) as url:
        done = await harvest(sim, "--out", f"s3://{bucket}/l/", "--s3-endpoint-url", url, *flags)
        assert done.returncode == 1 and b"SlowDown" in done.stderr
        assert not sim.log  # nothing fetched
    assert await anyio.to_thread.run_sync(s3.objects, bucket, "l/") == {}


async def test_a_lease_whose_first_beat_is_refused_fails_the_job_with_nothing_stored(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    """The first beat is awaited before a run's first write (the first API request goes
    with the lease's upload made): refused, the job fails and stores nothing."""
    cloud = generate_cloud(runs=1, metrics=5, points=5)
    flags = ["--max-attempts", "1", "--state", str(tmp_path / "s.sqlite"), "--run", "100001"]

    def beats(request: web.Request) -> bool:
        return "harvester-live" in request.path and "partNumber" in request.query

    async with Simulator(cloud) as sim, s3_proxy(s3, beats) as url:
        done = await harvest(sim, "--out", f"s3://{bucket}/b/", "--s3-endpoint-url", url, *flags)
        assert done.returncode == 1 and b"SlowDown" in done.stderr
    assert await anyio.to_thread.run_sync(s3.objects, bucket, "b/") == {}
    assert await anyio.to_thread.run_sync(s3.leases, bucket) == []  # its upload aborted


@pytest.mark.parametrize(
    ("out", "extra", "message"),
    [
        ("s3://no-such-bucket/p/", (), "bucket no-such-bucket does not exist"),
        ("s3://no-such-bucket/p/", ("--export-csv",), "bucket no-such-bucket does not exist"),
        ("s3:///p/", (), "names no bucket"),
        # botocore refuses the name before sending (it said "failed: ParamValidationError")
        ("s3://Bad_Bucket!/p/", (), "bucket name 'Bad_Bucket!' is not one S3 takes"),
    ],
)
def test_bad_bucket_is_one_line_exit_2(
    s3cli: S3Cli, out: str, extra: tuple[str, ...], message: str
) -> None:
    code, err = s3cli.main(s3cli.args(out, "--run", "100001", *extra))
    assert code == 2 and err.count(message) == 1 and "Traceback" not in err
    assert not s3cli.sim.log  # nothing fetched
    spools = Path(os.environ["XDG_STATE_HOME"]).glob("harvester/*.spool-*")
    assert list(spools) == []  # the job's export spool, made first, is gone with it


def test_wrong_endpoint_and_clear_text_endpoint_are_one_line_exit_2(
    sim: Simulator, bucket: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    state = str(tmp_path / "s.sqlite")
    base = cli_args(sim, f"s3://{bucket}/p/", "--state", state, "--run", "100001")
    assert main([*base, "--s3-endpoint-url", "http://127.0.0.1:9", "--max-attempts", "1"]) == 2
    assert "cannot reach the S3 endpoint http://127.0.0.1:9" in capfd.readouterr().err
    assert main([*base, "--s3-endpoint-url", "http://s3.example.invalid"]) == 2
    assert "refusing to send S3 credentials in clear text" in capfd.readouterr().err
    # With --allow-insecure the endpoint is tried (`.invalid` never resolves: unreachable).
    insecure = ["--s3-endpoint-url", "http://s3.example.invalid", "--allow-insecure"]
    assert main([*base, *insecure, "--max-attempts", "1"]) == 2
    err = capfd.readouterr().err
    assert "cannot reach the S3 endpoint http://s3.example.invalid" in err
    assert "clear text" not in err


@pytest.mark.parametrize(
    "command",
    [["status", "--out", "s3://b/p/"], ["verify", "s3://b/p/"], ["report", "s3://b/p/"]],
)
def test_the_commands_reading_a_store_take_allow_insecure_as_their_refusal_says(
    bucket: str,
    command: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HARVESTER_MAX_ATTEMPTS", "1")
    insecure = ["--s3-endpoint-url", "http://s3.example.invalid"]
    assert main([*command, *insecure]) == 2
    assert "or pass --allow-insecure if you really mean it" in capfd.readouterr().err
    # It was refused by argparse as an unknown flag: the store is tried now.
    assert main([*command, *insecure, "--allow-insecure"]) == 2
    err = capfd.readouterr().err
    assert "cannot reach the S3 endpoint http://s3.example.invalid" in err and "clear" not in err


def test_rejected_credentials_are_one_line_exit_2_without_the_secret(
    sim: Simulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # A server that checks signatures against its IAM users: ours are unknown to it.
    with moto_server(authenticate=True) as strict:
        for key, value in CREDENTIALS.items():
            monkeypatch.setenv(key, value)
        args = s3_args(sim, strict, "s3://any/p/", tmp_path / "s.sqlite", "--run", "100001")
        assert main(args) == 2
    err = capfd.readouterr().err
    assert "access to s3://any denied" in err
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in err


def test_no_credentials_at_all_is_one_line_exit_2(
    s3cli: S3Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(s3cli.tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(s3cli.tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    code, err = s3cli.main(s3cli.args(f"s3://{s3cli.bucket}/p/", "--run", "100001"))
    assert code == 2 and err.count("no AWS credentials found") == 1 and "Traceback" not in err


def test_no_credential_reaches_the_logs_the_state_or_the_objects(s3cli: S3Cli) -> None:
    bucket = s3cli.bucket
    logged, err = s3cli.main([*s3cli.args(f"s3://{bucket}/secret/", *RUNS), "--verbose"])
    missing, said = s3cli.main(s3cli.args(f"s3://{bucket}-missing/p/", *RUNS))
    assert (logged, missing) == (0, 2)
    stored = b"".join(s3cli.s3.objects(bucket).values())
    secret, key_id = CREDENTIALS["AWS_SECRET_ACCESS_KEY"], CREDENTIALS["AWS_ACCESS_KEY_ID"]
    assert "run_done" in err  # the logs were written, at debug level
    for where in (err + said, s3cli.state.read_bytes().decode("latin-1"), stored.decode()):
        assert secret not in where and key_id not in where


@contextlib.asynccontextmanager
async def silent_store(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[str, anyio.Event, list[str]]]:
    """A store that takes each request and never answers it, until the event is set:
    (its URL, that event, the paths asked)."""
    done = anyio.Event()
    asked: list[str] = []

    async def never(request: web.Request) -> web.Response:
        asked.append(request.path)
        await done.wait()
        return web.Response(status=500)

    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", never)
    async with serve(app) as url:
        yield url, done, asked


async def test_a_hurried_store_cuts_its_requests_under_way_and_to_come(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A store that never answers: once hurried, the request under way and the next ones
    (a listing's pages too) each end as a `StoreError` (code `Cut`) by the deadline, not
    by botocore's timeouts."""
    from harvester.objectstore.failures import StoreError
    from harvester.objectstore.store import CUT, Store

    async with silent_store(monkeypatch) as (url, done, _):
        store = Store(load_settings({"out": "s3://b/p/", "s3_endpoint_url": url, "token": "t"}))
        await store.open(check=False)
        failed: list[StoreError] = []

        async def put() -> None:
            try:
                await store.put("p/1.ndjson", b"x", create_only=True)
            except StoreError as exc:
                failed.append(exc)

        try:
            with anyio.fail_after(30):  # (botocore alone would wait 60 s a try)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(put)
                    await anyio.sleep(0.2)  # under way
                    store.hurry(0.1)
                with pytest.raises(StoreError) as later:
                    await store.call("head_object", Key="p/1.ndjson")
                with pytest.raises(StoreError) as listed:
                    _ = [page async for page in store.pages("list_objects_v2")]
        finally:
            done.set()
            await store.close()
    assert [exc.code for exc in failed] == [CUT] and later.value.code == listed.value.code == CUT
    assert "did not answer before the job was stopped" in str(later.value)


async def test_a_store_that_stops_answering_times_out_as_the_api_would(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`--read-timeout` (and `--connect-timeout`) bound each store request as they bound
    the API's, and `--max-attempts` its tries: not botocore's 60 s a try."""
    from harvester.objectstore.failures import StoreError
    from harvester.objectstore.store import Store

    async with silent_store(monkeypatch) as (url, done, asked):
        flags = {"s3_endpoint_url": url, "read_timeout": 0.3, "max_attempts": 2}
        store = Store(load_settings({"out": "s3://b/p/", "token": "t", **flags}))
        await store.open(check=False)
        try:
            with anyio.fail_after(20), pytest.raises(StoreError) as failed:
                await store.call("head_object", Key="p/1.ndjson")
        finally:
            done.set()
            await store.close()
    assert len(asked) == 2
    assert str(failed.value) == (
        f"the S3 store at {url} did not answer a request on s3://b within --read-timeout, "
        "on any try (--max-attempts): is it overloaded or stuck?"
    )


def test_the_summary_counts_the_bytes_of_the_runs_kept_in_the_bucket(s3cli: S3Cli) -> None:
    """A job with a failed run counts the bytes of the runs it kept: each run's lines, as
    a whole job does; it stat()ed a local file of that name, so on s3:// it said 0.0 MB."""
    out = f"s3://{s3cli.bucket}/b/"
    code, err = s3cli.main(s3cli.args(out, *RUNS, "--run", "999999"))  # no such run: fails
    assert code == 1
    summary = orjson.loads(err.splitlines()[-1])
    stored = s3cli.s3.sizes(s3cli.bucket, "b/")
    kept = sum(size for key, size in stored.items() if key.endswith(".ndjson"))
    assert summary["event"] == "summary" and summary["runs_failed"] == 1
    assert kept > 0 and summary["bytes"] == kept  # raw, uncompressed: the objects are the lines
