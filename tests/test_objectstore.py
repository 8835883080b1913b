"""`--out s3://BUCKET/PREFIX/` against a real S3-compatible server (moto's, on loopback):
exact records, objects visible only whole, create-only, resume, and one-line errors."""

from __future__ import annotations

import io
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import anyio
import anyio.from_thread
import pytest
from aiohttp import web

from harvester.cli import main
from harvester.config import load_settings
from harvester.errors import ConfigError
from harvester.objectstore import ObjectSink, default_state_path
from harvester.progress import Reporter
from harvester.simulator.generated import FIRST_PROJECT_ID, generate_cloud
from harvester.simulator.server import Simulator
from harvester.worker import Worker
from tests.harvest_helpers import (
    canonical,
    cli_args,
    expected_records,
    parse_lines,
    read_dir,
    settings_for,
)
from tests.process_helpers import ROOT, cli_command, cli_env, wait_for
from tests.s3_helpers import CREDENTIALS, S3Server, moto_server

pytest.importorskip("aiobotocore")
BUCKET = "archive"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with moto_server() as server:
        yield server


@pytest.fixture
def bucket(s3: S3Server, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """A new empty bucket per test; the harvester finds the credentials in the environment."""
    name = f"b-{abs(hash(request.node.nodeid)) % 10**10}"
    s3.client().create_bucket(Bucket=name)
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    return name


@pytest.fixture
def sim() -> Iterator[Simulator]:
    cloud = generate_cloud(runs=2, metrics=10, points=5)
    with anyio.from_thread.start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(Simulator(cloud, token="tok")) as simulator:
            yield simulator


def s3_args(sim: Simulator, s3: S3Server, out: str, state: Path, *extra: str) -> list[str]:
    return cli_args(sim, out, "--s3-endpoint-url", s3.url, "--state", str(state), *extra)


RUNS = ("--run", "100001", "--run", "100002")


def test_harvest_to_s3_writes_the_same_records_as_to_a_directory(
    sim: Simulator, s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    assert main(cli_args(sim, tmp_path / "dir", *RUNS)) == 0
    expected = read_dir(tmp_path / "dir")
    out = f"s3://{bucket}/nightly/"
    assert main(s3_args(sim, s3, out, tmp_path / "state.sqlite", *RUNS)) == 0
    objects = s3.objects(bucket)
    assert sorted(objects) == ["nightly/100001.ndjson", "nightly/100002.ndjson"]
    for run_id in (100001, 100002):
        got = parse_lines(objects[f"nightly/{run_id}.ndjson"])
        assert canonical(got) == canonical(expected[run_id])
        assert got[-1]["type"] == "summary"
    assert s3.uploads(bucket) == []


def test_a_run_whose_object_exists_is_not_fetched_again(
    sim: Simulator, s3: S3Server, bucket: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    out = f"s3://{bucket}/p"
    assert main(s3_args(sim, s3, out, tmp_path / "s1.sqlite", "--run", "100001")) == 0
    sim.log.clear()
    capfd.readouterr()
    # Another state file: the objects are the truth.
    assert main(s3_args(sim, s3, out, tmp_path / "s2.sqlite", *RUNS)) == 0
    assert "1 already done" in capfd.readouterr().err
    assert not [entry for entry in sim.log if "100001" in str(entry)]
    assert sorted(s3.objects(bucket)) == ["p/100001.ndjson", "p/100002.ndjson"]


async def test_after_a_sigkill_mid_upload_a_rerun_is_exact_and_leaves_no_upload(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    cloud = generate_cloud(runs=1, metrics=200, points=2000)  # ~20 MB: several parts
    (run_id,) = cloud.runs
    async with Simulator(cloud) as sim:
        env = {**cli_env(sim), **CREDENTIALS}
        args = ["--out", f"s3://{bucket}/k/", "--s3-endpoint-url", s3.url, "--run", str(run_id)]
        command = cli_command(sim, "harvest", *args, "--state", str(tmp_path / "s.sqlite"))
        process = await anyio.open_process(command, env=env, cwd=ROOT)
        async with process:
            uploading = False
            with anyio.fail_after(30):
                while not uploading and process.returncode is None:
                    uploading = bool(await anyio.to_thread.run_sync(s3.uploads, bucket))
            process.kill()
        assert uploading, "the job ended before an upload could be seen"
        assert s3.objects(bucket) == {}  # killed mid-upload: nothing visible
        done = await anyio.run_process(command, env=env, cwd=ROOT, check=False)
        assert done.returncode == 0, done.stderr
    records = parse_lines(s3.objects(bucket)[f"k/{run_id}.ndjson"])
    assert canonical(records) == canonical(expected_records(cloud, run_id))
    assert s3.uploads(bucket) == []


async def test_two_jobs_on_one_prefix_archive_every_run_exactly_once(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    cloud = generate_cloud(runs=6, metrics=10, points=5)
    codes: list[int] = []
    async with Simulator(cloud) as sim:
        env = {**cli_env(sim), **CREDENTIALS}
        runs = [arg for run_id in sorted(cloud.runs) for arg in ("--run", str(run_id))]
        out = ["--out", f"s3://{bucket}/both/", "--s3-endpoint-url", s3.url]

        async def job(name: str) -> None:
            state = ["--state", str(tmp_path / f"{name}.sqlite")]
            command = cli_command(sim, "harvest", *out, *state, *runs)
            with anyio.fail_after(60):
                done = await anyio.run_process(command, env=env, cwd=ROOT, check=False)
            codes.append(done.returncode)

        async with anyio.create_task_group() as tg:
            tg.start_soon(job, "a")
            tg.start_soon(job, "b")
    assert codes == [0, 0]
    objects = s3.objects(bucket)
    assert sorted(objects) == [f"both/{run_id}.ndjson" for run_id in sorted(cloud.runs)]
    for run_id in cloud.runs:
        records = parse_lines(objects[f"both/{run_id}.ndjson"])
        assert canonical(records) == canonical(expected_records(cloud, run_id))
    assert s3.uploads(bucket) == []


def _sink(s3: S3Server, bucket: str, **flags: str) -> ObjectSink:
    settings = load_settings(
        {"out": f"s3://{bucket}/pre/", "s3_endpoint_url": s3.url, "token": "t", **flags}
    )
    return ObjectSink(settings)


def test_a_large_run_goes_up_in_parts_and_appears_only_whole(s3: S3Server, bucket: str) -> None:
    line = b'{"type":"series","values":[' + b"1," * 500 + b"1]}\n"
    count = (13 << 20) // len(line)  # two full 5+ MiB parts and a small last one

    async def go() -> None:
        sink = _sink(s3, bucket)
        await sink.open()
        await sink.begin(7)
        for _ in range(count):
            await sink.write(7, line)
        assert s3.objects(bucket) == {}  # parts uploaded, nothing visible
        assert len(s3.uploads(bucket)) == 1
        assert await sink.commit(7) == f"s3://{bucket}/pre/7.ndjson"
        await sink.close()

    anyio.run(go)
    assert s3.objects(bucket) == {"pre/7.ndjson": line * count}
    assert s3.uploads(bucket) == []


def test_the_second_writer_of_a_run_keeps_the_first_object_and_counts_it_done(
    s3: S3Server, bucket: str
) -> None:
    async def go() -> None:
        first, second = _sink(s3, bucket), _sink(s3, bucket)
        for sink, data in ((first, b"first\n"), (second, b"second\n")):
            await sink.open()
            await sink.begin(9)
            await sink.write(9, data)
        await first.commit(9)
        assert await second.commit(9) == f"s3://{bucket}/pre/9.ndjson"
        await first.close()
        await second.close()

    anyio.run(go)
    assert s3.objects(bucket) == {"pre/9.ndjson": b"first\n"}


async def test_a_slowdown_answer_is_retried(s3: S3Server, bucket: str) -> None:
    """A proxy in front of moto answers the first PUT with 503 SlowDown, as S3 does."""
    puts: list[str] = []

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        if request.method == "PUT" and request.path.endswith("/3.ndjson"):
            puts.append(request.path)
            if len(puts) == 1:
                slow = b"<Error><Code>SlowDown</Code><Message>Reduce your rate</Message></Error>"
                return web.Response(status=503, body=slow, content_type="application/xml")
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with aiohttp.ClientSession() as session:
            async with session.request(
                request.method, s3.url + request.path_qs, headers=headers, data=body
            ) as answer:
                data = await answer.read()
                kept = {k: v for k, v in answer.headers.items() if k.lower() in PASSED}
                return web.Response(status=answer.status, body=data, headers=kept)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        settings = load_settings(
            {
                "out": f"s3://{bucket}/pre/",
                "s3_endpoint_url": f"http://127.0.0.1:{port}",
                "token": "t",
            }  # fmt: skip
        )
        sink = ObjectSink(settings)
        await sink.open()
        await sink.begin(3)
        await sink.write(3, b"line\n")
        await sink.commit(3)
        await sink.close()
    finally:
        await runner.cleanup()
    assert len(puts) == 2
    assert await anyio.to_thread.run_sync(s3.objects, bucket) == {"pre/3.ndjson": b"line\n"}


PASSED = {"content-type", "etag", "date", "x-amz-request-id", "last-modified"}


def test_force_replaces_the_object(s3: S3Server, bucket: str) -> None:
    async def go() -> None:
        for sink, data in ((_sink(s3, bucket), b"old\n"), (_sink(s3, bucket, force="1"), b"new\n")):
            await sink.open()
            await sink.begin(4)
            await sink.write(4, data)
            await sink.commit(4)
            await sink.close()

    anyio.run(go)
    assert s3.objects(bucket) == {"pre/4.ndjson": b"new\n"}


def test_the_state_lives_under_xdg_state_home_named_after_bucket_and_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    path = default_state_path("s3://arch/nightly/k6/")
    assert path == tmp_path / "harvester" / "arch-nightly_k6.sqlite"
    assert path.parent.is_dir()


def test_without_the_s3_extra_the_message_names_it(
    s3: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "aiobotocore.session", None)  # import fails
    with pytest.raises(ConfigError, match=r"pip install 'k6-harvester\[s3\]'"):
        anyio.run(_sink(s3, bucket).open)


def test_stale_uploads_of_the_runs_to_write_are_aborted_and_others_kept(
    s3: S3Server, bucket: str
) -> None:
    # (moto reports one fixed, old `Initiated` for every upload, so an upload begun
    # after the job opened the store cannot be told apart here: that part is unproven.)
    client = s3.client()
    client.create_multipart_upload(Bucket=bucket, Key="pre/5.ndjson")
    other = client.create_multipart_upload(Bucket=bucket, Key="pre/6.ndjson")["UploadId"]

    async def go() -> None:
        sink = _sink(s3, bucket)
        await sink.open()
        assert await sink.abort_stale([5]) == 1
        await sink.close()

    anyio.run(go)
    assert [u["UploadId"] for u in s3.uploads(bucket)] == [other]


def test_an_aborted_run_leaves_no_object_and_no_upload(s3: S3Server, bucket: str) -> None:
    async def go() -> None:
        sink = _sink(s3, bucket)
        await sink.open()
        await sink.begin(5)
        await sink.write(5, b"x" * (6 << 20))
        await sink.close()  # the job ends with the run unfinished

    anyio.run(go)
    assert s3.objects(bucket) == {}
    assert s3.uploads(bucket) == []


@pytest.mark.parametrize(
    ("out", "extra", "message"),
    [
        ("s3://no-such-bucket/p/", (), "bucket no-such-bucket does not exist"),
        ("s3:///p/", (), "names no bucket"),
    ],
)
def test_bad_bucket_is_one_line_exit_2(
    sim: Simulator,
    s3: S3Server,
    bucket: str,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    out: str,
    extra: tuple[str, ...],
    message: str,
) -> None:
    assert main(s3_args(sim, s3, out, tmp_path / "s.sqlite", "--run", "100001", *extra)) == 2
    err = capfd.readouterr().err
    assert message in err and "Traceback" not in err
    assert not sim.log  # nothing fetched


def test_wrong_endpoint_and_clear_text_endpoint_are_one_line_exit_2(
    sim: Simulator, bucket: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    state = str(tmp_path / "s.sqlite")
    base = cli_args(sim, f"s3://{bucket}/p/", "--state", state, "--run", "100001")
    assert main([*base, "--s3-endpoint-url", "http://127.0.0.1:9", "--max-attempts", "1"]) == 2
    assert "cannot reach the S3 endpoint http://127.0.0.1:9" in capfd.readouterr().err
    assert main([*base, "--s3-endpoint-url", "http://s3.example.com"]) == 2
    assert "refusing to send S3 credentials in clear text" in capfd.readouterr().err


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
    sim: Simulator,
    s3: S3Server,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    args = s3_args(sim, s3, f"s3://{bucket}/p/", tmp_path / "s.sqlite", "--run", "100001")
    assert main(args) == 2
    assert "no AWS credentials found" in capfd.readouterr().err


async def test_the_worker_archives_to_s3_and_takes_each_run_once(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    cloud = generate_cloud(runs=3, metrics=3, points=2, projects=1, tests=2)
    async with Simulator(cloud) as sim:
        settings = settings_for(
            sim,
            f"s3://{bucket}/w/",
            projects=[FIRST_PROJECT_ID],
            interval="0.1s",
            listen_port=0,
            state=str(tmp_path / "w.sqlite"),
            s3_endpoint_url=s3.url,
        )
        reporter = Reporter(io.StringIO(), json_lines=True, level="info")
        worker = Worker(settings, reporter=reporter, handle_signals=False, grace=1.0)
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            await wait_for(lambda: worker.status.cycles >= 3, within=30)
            worker.stop()
        asked = Counter(r.run_id for r in sim.requests_for("metrics"))
    assert worker.status.failed_cycles == 0
    runs = sorted(cloud.runs)
    assert sorted(s3.objects(bucket)) == [f"w/{run_id}.ndjson" for run_id in runs]
    assert asked == Counter(dict.fromkeys(runs, 1))
