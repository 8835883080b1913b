"""`--out s3://BUCKET/PREFIX/` against a real S3-compatible server (moto's, on loopback):
exact records, objects visible only whole, create-only, resume, and one-line errors."""

from __future__ import annotations

import hashlib
import io
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from unittest.mock import ANY

import aiohttp
import anyio
import anyio.from_thread
import orjson
import pytest
from aiohttp import web
from anyio.abc import Process

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
    serve,
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
    for run_id in (100001, 100002):
        got = parse_lines(objects[f"nightly/{run_id}.ndjson"])
        assert canonical(got) == canonical(expected[run_id])
        assert got[-1]["type"] == "summary"
    assert s3.uploads(bucket) == []


@pytest.mark.parametrize(
    "flags",
    [
        (),
        ("--compress", "gzip"),
        ("--format", "points", "--compress", "zstd"),
        ("--format", "parquet"),
        ("--export-csv",),
        ("--layout", "date", "--format", "points", "--export-csv"),
    ],
)
def test_every_format_has_the_directory_s_names_and_a_manifest_true_to_the_objects(
    sim: Simulator, s3: S3Server, bucket: str, tmp_path: Path, flags: tuple[str, ...]
) -> None:
    if "parquet" in flags:
        pytest.importorskip("pyarrow")
    assert main(cli_args(sim, tmp_path / "dir", *RUNS, *flags)) == 0
    root = tmp_path / "dir"
    files = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
             if p.is_file() and not p.name.startswith(".")}  # fmt: skip
    out = f"s3://{bucket}/p/"
    assert main(s3_args(sim, s3, out, tmp_path / "state.sqlite", *RUNS, *flags)) == 0
    objects = {key.removeprefix("p/"): body for key, body in s3.objects(bucket).items()}
    assert sorted(objects) == sorted(files)
    for name in (n for n in objects if n.endswith(".manifest.json")):
        stored, local = orjson.loads(objects[name]), orjson.loads(files[name])
        where = name.rpartition("/")[0] + "/" if "/" in name else ""
        for entry, twin in zip(stored["files"], local["files"], strict=True):
            assert entry["name"] == twin["name"] and entry.get("counts") == twin.get("counts")
            body = objects[where + entry["name"]]
            assert entry["bytes"] == len(body)
            assert entry["sha256"] == hashlib.sha256(body).hexdigest()
        assert stored["counts"] == local["counts"] and stored["format"] == local["format"]
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
    assert sorted(s3.runs(bucket)) == ["p/100001.ndjson", "p/100002.ndjson"]


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
        args = ["--out", f"s3://{bucket}/k/", "--s3-endpoint-url", s3.url, "--run", str(run_id)]
        command = cli_command(sim, "harvest", *args, "--state", str(tmp_path / "s.sqlite"))
        process = await anyio.open_process(command, env=env, cwd=ROOT)
        async with process:
            uploading = await _upload_seen(process, s3, bucket)
            process.kill()
        assert uploading, "the job ended before an upload could be seen"
        assert s3.archive(bucket) == {}  # killed mid-upload: nothing visible
        await anyio.sleep(1.5)  # its lease (1 s here) goes stale: nobody renews it
        done = await anyio.run_process(command, env=env, cwd=ROOT, check=False)
        assert done.returncode == 0, done.stderr
    records = parse_lines(s3.objects(bucket)[f"k/{run_id}.ndjson"])
    assert canonical(records) == canonical(expected_records(cloud, run_id))
    assert s3.uploads(bucket) == []
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
                a = await anyio.run_process(
                    cli_command(sim, "harvest", *args, *a_state), env=env, cwd=ROOT, check=False
                )
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
    objects = s3.runs(bucket)
    assert sorted(objects) == [f"both/{run_id}.ndjson" for run_id in sorted(cloud.runs)]
    manifests = s3.archive(bucket)
    for run_id in cloud.runs:
        data = objects[f"both/{run_id}.ndjson"]
        assert canonical(parse_lines(data)) == canonical(expected_records(cloud, run_id))
        # The manifest describes the object stored (the loser's never replaced it).
        (entry,) = orjson.loads(manifests[f"both/{run_id}.manifest.json"])["files"]
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
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
        async with _sink(s3, bucket) as sink:
            await sink.begin(7)
            for _ in range(count):
                await sink.write(7, line)
            await sink._runs[7].uploads["ndjson"].settle()
            assert s3.archive(bucket, "pre/7") == {}  # parts uploaded, nothing visible
            assert len(s3.uploads(bucket)) == 1
            assert await sink.commit(7) == f"s3://{bucket}/pre/7.ndjson"

    anyio.run(go)
    assert s3.runs(bucket) == {"pre/7.ndjson": line * count}
    assert s3.uploads(bucket) == []


def test_the_second_writer_of_a_run_keeps_the_first_object_and_counts_it_done(
    s3: S3Server, bucket: str
) -> None:
    async def go() -> None:
        async with _sink(s3, bucket) as first, _sink(s3, bucket) as second:
            for sink, data in ((first, b"first\n"), (second, b"second\n")):
                await sink.begin(9)
                await sink.write(9, data)
            await first.commit(9)
            assert await second.commit(9) == f"s3://{bucket}/pre/9.ndjson"

    anyio.run(go)
    assert s3.runs(bucket) == {"pre/9.ndjson": b"first\n"}


PASSED = {"content-type", "etag", "date", "x-amz-request-id", "last-modified"}
SLOW_DOWN = b"<Error><Code>SlowDown</Code><Message>Reduce your rate</Message></Error>"


@asynccontextmanager
async def s3_proxy(s3: S3Server, refuse: Callable[[web.Request], bool]) -> AsyncIterator[str]:
    """A proxy in front of moto that answers 503 SlowDown, as S3 does, to the requests
    `refuse` picks, and passes the others on; yields its URL."""

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        if refuse(request):
            return web.Response(status=503, body=SLOW_DOWN, content_type="application/xml")
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
    async with serve(app) as url:
        yield url


async def test_a_slowdown_answer_is_retried(s3: S3Server, bucket: str) -> None:
    puts: list[str] = []

    def first_put(request: web.Request) -> bool:
        if request.method == "PUT" and request.path.endswith("/3.ndjson"):
            puts.append(request.path)
            return len(puts) == 1
        return False

    async with s3_proxy(s3, first_put) as url:
        settings = load_settings(
            {"out": f"s3://{bucket}/pre/", "s3_endpoint_url": url, "token": "t"}
        )
        async with ObjectSink(settings) as sink:
            await sink.begin(3)
            await sink.write(3, b"line\n")
            await sink.commit(3)
    assert len(puts) == 2
    assert await anyio.to_thread.run_sync(s3.runs, bucket) == {"pre/3.ndjson": b"line\n"}


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
        command = cli_command(sim, "harvest", *args, "--state", str(tmp_path / "s.sqlite"))
        env = {**cli_env(sim), **CREDENTIALS}
        done = await anyio.run_process(command, env=env, cwd=ROOT, check=False)
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
        env = {**cli_env(sim), **CREDENTIALS}
        args = ["--out", f"s3://{bucket}/f/", "--run", str(run_id), "--max-attempts", "2"]
        state = ("--state", str(tmp_path / "s.sqlite"))
        failing = cli_command(sim, "harvest", *args, *state, "--s3-endpoint-url", url)
        done = await anyio.run_process(failing, env=env, cwd=ROOT, check=False)
        assert done.returncode == 1 and b"SlowDown" in done.stderr
        assert await anyio.to_thread.run_sync(s3.archive, bucket, "f/") == {
            f"f/{run_id}.manifest.json": ANY
        }  # its claim, but no data object: the run is not archived
        working = cli_command(sim, "harvest", *args, *state, "--s3-endpoint-url", s3.url)
        done = await anyio.run_process(working, env=env, cwd=ROOT, check=False)
        assert done.returncode == 0, done.stderr
    stored = s3.objects(bucket, "f/")
    data = stored[f"f/{run_id}.ndjson"]
    assert canonical(parse_lines(data)) == canonical(expected_records(cloud, run_id))
    # The dead job's manifest was replaced by this job's, which names these bytes.
    (entry,) = orjson.loads(stored[f"f/{run_id}.manifest.json"])["files"]
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()


def test_force_replaces_the_object(s3: S3Server, bucket: str) -> None:
    async def go() -> None:
        for sink, data in ((_sink(s3, bucket), b"old\n"), (_sink(s3, bucket, force="1"), b"new\n")):
            async with sink:
                await sink.begin(4)
                await sink.write(4, data)
                await sink.commit(4)

    anyio.run(go)
    assert s3.runs(bucket) == {"pre/4.ndjson": b"new\n"}


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
        anyio.run(_sink(s3, bucket).__aenter__)


def test_stale_uploads_of_the_runs_to_write_are_aborted_and_others_kept(
    s3: S3Server, bucket: str
) -> None:
    # (moto reports one fixed, old `Initiated` for every upload, so an upload begun
    # after the job opened the store cannot be told apart here: that part is unproven.)
    client = s3.client()
    client.create_multipart_upload(Bucket=bucket, Key="pre/5.ndjson")
    other = client.create_multipart_upload(Bucket=bucket, Key="pre/6.ndjson")["UploadId"]

    async def go() -> None:
        async with _sink(s3, bucket) as sink:
            assert await sink.abort_stale([5]) == 1

    anyio.run(go)
    assert [u["UploadId"] for u in s3.uploads(bucket)] == [other]


def test_an_aborted_run_leaves_no_object_and_no_upload(s3: S3Server, bucket: str) -> None:
    async def go() -> None:
        async with _sink(s3, bucket) as sink:
            await sink.begin(5)
            await sink.write(5, b"x" * (6 << 20))
            # the job ends with the run unfinished

    anyio.run(go)
    assert s3.archive(bucket) == {}
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
    assert sorted(s3.runs(bucket)) == [f"w/{run_id}.ndjson" for run_id in runs]
    assert asked == Counter(dict.fromkeys(runs, 1))


def test_aws_endpoint_url_alone_points_at_the_store_and_the_flag_wins_over_it(
    sim: Simulator,
    s3: S3Server,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = ("--state", str(tmp_path / "s.sqlite"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.url)
    assert main(cli_args(sim, f"s3://{bucket}/env/", *state, "--run", "100001")) == 0
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    args = cli_args(sim, f"s3://{bucket}/flag/", *state, "--run", "100001", "--max-attempts", "1")
    assert main([*args, "--s3-endpoint-url", s3.url]) == 0
    assert sorted(s3.runs(bucket)) == ["env/100001.ndjson", "flag/100001.ndjson"]
    assert main(args) == 2  # without the flag: the variable's endpoint, unreachable


def test_no_credential_reaches_the_logs_the_state_or_the_objects(
    sim: Simulator,
    s3: S3Server,
    bucket: str,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    state = tmp_path / "s.sqlite"
    out = f"s3://{bucket}/secret/"
    assert main([*s3_args(sim, s3, out, state, *RUNS), "--verbose"]) == 0
    assert main(s3_args(sim, s3, f"s3://{bucket}-missing/p/", state, *RUNS)) == 2
    captured = capfd.readouterr()
    stored = b"".join(s3.objects(bucket).values())
    secret, key_id = CREDENTIALS["AWS_SECRET_ACCESS_KEY"], CREDENTIALS["AWS_ACCESS_KEY_ID"]
    assert "run_done" in captured.err  # the logs were written, at debug level
    for where in (
        captured.out + captured.err,
        state.read_bytes().decode("latin-1"),
        stored.decode(),
    ):
        assert secret not in where and key_id not in where


def test_status_and_runs_read_the_archive_from_the_bucket(
    sim: Simulator,
    s3: S3Server,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))  # the default state: this test's
    out = f"s3://{bucket}/st/"
    args = cli_args(sim, out, "--s3-endpoint-url", s3.url, "--run", "100001")
    assert main([*args, "--layout", "date"]) == 0
    capfd.readouterr()
    assert main(["status", "--out", out, "--s3-endpoint-url", s3.url, "--output", "json"]) == 0
    report = orjson.loads(capfd.readouterr().out)
    assert [row["run_id"] for row in report["archive"]["runs"]] == [100001]
    assert report["archive"]["runs"][0]["key"].endswith("/100001.ndjson")
    assert report["counts"] == {"done": 1}  # the local state, beside the store's truth
    assert main(["status", "--out", out, "--s3-endpoint-url", s3.url, "--output", "table"]) == 0
    assert f"{out}: 1 run archived" in capfd.readouterr().out
    runs = ["runs", "--base-url", sim.base_url, "--token", "tok", "--all-projects"]
    assert main([*runs, "--out", out, "--s3-endpoint-url", s3.url, "--output", "json"]) == 0
    actions = {
        row["test_run_id"]: row["action"] for row in parse_lines(capfd.readouterr().out.encode())
    }
    assert actions == {100001: "skip", 100002: "harvest"}
    assert main(["status", "--out", f"s3://{bucket}-none/", "--s3-endpoint-url", s3.url]) == 2
    assert "does not exist" in capfd.readouterr().err
