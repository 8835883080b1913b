"""`--out s3://BUCKET/PREFIX/` against a real S3-compatible server (moto's, on loopback):
exact records in every format, objects visible only whole, resume, --force, the worker,
status and runs. (Jobs at once: test_objectstore_jobs; failures: test_objectstore_errors.)"""

from __future__ import annotations

import hashlib
import io
import sys
from collections import Counter
from pathlib import Path

import anyio
import anyio.from_thread
import orjson
import pytest

from harvester.cli import main
from harvester.errors import ConfigError
from harvester.objectstore import default_state_path
from harvester.objectstore.spool import Spool
from harvester.progress import Reporter
from harvester.simulator.generated import FIRST_PROJECT_ID, generate_cloud
from harvester.simulator.server import Simulator
from harvester.worker import Worker
from tests.harvest_helpers import (
    canonical,
    cli_args,
    parse_lines,
    read_dir,
    settings_for,
)
from tests.process_helpers import wait_for
from tests.s3_helpers import (
    CREDENTIALS,
    RUNS,
    S3Cli,
    S3Server,
    s3_args,
    sink_on,
)

pytest.importorskip("aiobotocore")

pytest.importorskip("aiobotocore")
#: Bounded hard (the thread method ends the session): a stalled store never holds the run.
pytestmark = pytest.mark.timeout(120, method="thread")


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


def test_a_large_run_goes_up_in_parts_and_appears_only_whole(s3: S3Server, bucket: str) -> None:
    line = b'{"type":"series","values":[' + b"1," * 500 + b"1]}\n"
    count = (13 << 20) // len(line)  # two full 5+ MiB parts and a small last one

    async def go() -> None:
        async with sink_on(s3, bucket) as sink:
            await sink.begin(7)
            for _ in range(count):
                await sink.write(7, line)
            await sink._runs[7].objects.uploads["ndjson"].settle()
            assert s3.objects(bucket, "pre/7") == {}  # parts uploaded, nothing visible
            assert len(s3.uploads(bucket)) == 1
            assert await sink.commit(7) == f"s3://{bucket}/pre/7.ndjson"

    anyio.run(go)
    assert s3.runs(bucket) == {"pre/7.ndjson": line * count}
    assert s3.uploads(bucket) == []


def test_the_second_writer_of_a_run_keeps_the_first_object_and_counts_it_done(
    s3: S3Server, bucket: str
) -> None:
    async def go() -> None:
        async with sink_on(s3, bucket) as first, sink_on(s3, bucket) as second:
            for sink, data in ((first, b"first\n"), (second, b"second\n")):
                await sink.begin(9)
                await sink.write(9, data)
            await first.commit(9)
            assert await second.commit(9) == f"s3://{bucket}/pre/9.ndjson"

    anyio.run(go)
    assert s3.runs(bucket) == {"pre/9.ndjson": b"first\n"}


def test_force_replaces_the_object(s3: S3Server, bucket: str) -> None:
    async def go() -> None:
        old, new = sink_on(s3, bucket), sink_on(s3, bucket, force="1")
        for sink, data in ((old, b"old\n"), (new, b"new\n")):
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
    assert path.parent == tmp_path / "harvester" and path.parent.is_dir()
    assert path.name.startswith("arch-nightly_k6-") and path.suffix == ".sqlite"
    # A character replaced adds a digest of bucket and prefix: a/b/ and a_b/ are apart.
    assert default_state_path("s3://arch/a/b/") != default_state_path("s3://arch/a_b/")
    assert default_state_path("s3://arch/a_b/").name == "arch-a_b.sqlite"
    # A prefix past a file name's 255 bytes: cut, with a digest of the whole (it was
    # "cannot use state file ...: File name too long", exit 2).
    long = [default_state_path(f"s3://arch/{'p' * 300}{end}/") for end in "ab"]
    assert long[0] != long[1] and all(len(p.name) <= 220 for p in long)
    long[0].touch()


def test_without_the_s3_extra_the_message_names_it(
    s3: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "aiobotocore.session", None)  # import fails
    with pytest.raises(ConfigError, match=r"pip install 'k6-harvester\[s3\]'"):
        anyio.run(sink_on(s3, bucket).__aenter__)


def test_stale_uploads_of_the_runs_asked_for_are_aborted_and_others_kept(
    s3: S3Server, bucket: str
) -> None:
    # Uploads no live job claims (left by a job that is gone): those of the runs asked
    # for are aborted, archived (7) or not (5); of a run not asked for (6), kept (the job
    # that asks for it aborts it). A live job's claimed upload is kept:
    # test_objectstore_jobs.
    client = s3.client()
    client.put_object(Bucket=bucket, Key="pre/7.ndjson", Body=b"{}\n")
    client.create_multipart_upload(Bucket=bucket, Key="pre/5.ndjson")
    client.create_multipart_upload(Bucket=bucket, Key="pre/5.points.ndjson")
    client.create_multipart_upload(Bucket=bucket, Key="pre/7.ndjson")
    kept = [client.create_multipart_upload(Bucket=bucket, Key="pre/6.ndjson")["UploadId"]]

    async def go() -> None:
        async with sink_on(s3, bucket) as sink:
            assert await sink.survey([5, 7]) == {7}

    anyio.run(go)
    assert sorted(u["UploadId"] for u in s3.uploads(bucket)) == sorted(kept)


def test_a_lease_is_an_upload_renewed_and_made_again_when_aborted_and_gone_at_the_end(
    s3: S3Server, bucket: str
) -> None:
    """A bucket's lifecycle rule (or a job that found the lease stale) may abort a lease:
    the next beat makes another, so the job is seen live again."""
    from harvester.objectstore.leases import is_live

    client = s3.client()

    async def go() -> None:
        # moto answers a part of an aborted upload with a 500, which botocore tries again
        # with growing pauses (10-17 s at the default --max-attempts); a real store says
        # NoSuchUpload at once. Two tries: the lease is then found gone and made again.
        async with sink_on(s3, bucket, max_attempts="2") as sink:
            lease = sink.lease
            await sink.leased()  # taken while the job lists the prefix
            (first,) = client.list_multipart_uploads(Bucket=bucket)["Uploads"]
            assert first["Key"] == f"pre/.harvester-live/{lease.job}"
            assert await is_live(sink.store, lease.job, lease.seconds)
            client.abort_multipart_upload(
                Bucket=bucket, Key=first["Key"], UploadId=first["UploadId"]
            )
            assert not await is_live(sink.store, lease.job, lease.seconds)
            await lease.renew()
            # A new upload (two when moto, slow under load, had botocore send the create
            # again: the one without its part does not make the job look dead).
            again = client.list_multipart_uploads(Bucket=bucket)["Uploads"]
            assert {up["Key"] for up in again} == {first["Key"]}
            assert first["UploadId"] not in {up["UploadId"] for up in again}
            assert await is_live(sink.store, lease.job, lease.seconds)
            await lease.claim(8)
            assert set(s3.leases(bucket)) == {first["Key"], f"{first['Key']}/8"}
        assert s3.objects(bucket) == {}

    anyio.run(go)
    assert s3.leases(bucket) == []


def test_an_aborted_run_leaves_no_object_and_no_upload(s3: S3Server, bucket: str) -> None:
    async def go() -> None:
        async with sink_on(s3, bucket) as sink:
            await sink.begin(5)
            await sink.write(5, b"x" * (6 << 20))
            # the job ends with the run unfinished

    anyio.run(go)
    assert s3.objects(bucket) == {}
    assert s3.uploads(bucket) == []


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
    s3cli: S3Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim, s3, bucket = s3cli.sim, s3cli.s3, s3cli.bucket
    state = ("--state", str(s3cli.state))
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.url)
    assert main(cli_args(sim, f"s3://{bucket}/env/", *state, "--run", "100001")) == 0
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    args = cli_args(sim, f"s3://{bucket}/flag/", *state, "--run", "100001", "--max-attempts", "1")
    assert main([*args, "--s3-endpoint-url", s3.url]) == 0
    assert sorted(s3.runs(bucket)) == ["env/100001.ndjson", "flag/100001.ndjson"]
    assert main(args) == 2  # without the flag: the variable's endpoint, unreachable


def test_a_profile_that_assumes_a_role_gets_its_credentials_from_sts(
    s3cli: S3Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The credential chain makes an STS client of its own (roles, web identity): the
    # loader, asked only for S3 at first, must still know STS (moto's server serves both).
    config = s3cli.tmp_path / "aws-config"
    config.write_text(
        "[profile archiver]\nrole_arn = arn:aws:iam::123456789012:role/archiver\n"
        "source_profile = base\n[profile base]\n"
        f"aws_access_key_id = {CREDENTIALS['AWS_ACCESS_KEY_ID']}\n"
        f"aws_secret_access_key = {CREDENTIALS['AWS_SECRET_ACCESS_KEY']}\n"
    )
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(s3cli.tmp_path / "none"))
    monkeypatch.setenv("AWS_PROFILE", "archiver")
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", s3cli.s3.url)
    code, err = s3cli.main(s3cli.args(f"s3://{s3cli.bucket}/role/", "--run", "100001"))
    assert code == 0, err
    assert sorted(s3cli.s3.runs(s3cli.bucket)) == ["role/100001.ndjson"]


def test_status_and_runs_read_the_archive_from_the_bucket(
    s3cli: S3Cli, capfd: pytest.CaptureFixture[str]
) -> None:
    sim, s3, bucket = s3cli.sim, s3cli.s3, s3cli.bucket
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


def test_a_killed_job_s_export_spool_is_removed_by_the_next_job_and_a_live_one_kept() -> None:
    out = "s3://arch/sp/"
    live = Spool(out)
    abandoned = live.path.with_name(live.path.name[:-4] + "dead")  # a killed job's: no flock
    (abandoned / "1.csv").parent.mkdir()
    (abandoned / "1.csv").write_bytes(b"a,b\n")
    (live.path / "2.csv").write_bytes(b"a,b\n")
    later = Spool(out)
    assert later.remove_abandoned() == 1
    assert not abandoned.exists() and (live.path / "2.csv").exists()
    live.close()
    later.close()
    assert not live.path.exists() and not later.path.exists()


def test_force_with_another_layout_leaves_each_run_once_in_the_archive(s3cli: S3Cli) -> None:
    """As with --out DIR: a re-harvest with --force and another --layout (or --export-csv)
    moves the run; its objects where it was are removed (also those of a run archived
    under --export-csv but without its CSV, which a listing does not count as archived).
    Its CSV export, not asked about without --export-csv, moves with it (it was deleted)
    and stays named by its manifest (it was left an orphan)."""
    out, day = f"s3://{s3cli.bucket}/n/", "2024/06/03"
    flat = [f"n/{run}.{name}" for run in (100001, 100002) for name in ("manifest.json", "ndjson")]
    dated = [key.replace("n/", f"n/{day}/") for key in flat]
    csvs = sorted([*flat, *(f"n/{run}.csv" for run in (100001, 100002))])
    for flags, keys in (
        (("--layout", "flat"), flat),
        (("--layout", "date", "--force"), dated),
        (("--layout", "flat", "--force", "--export-csv"), csvs),
        (("--layout", "flat", "--force"), csvs),
        (("--layout", "date", "--force"), [key.replace("n/", f"n/{day}/") for key in csvs]),
    ):
        assert s3cli.main([*s3cli.args(out, *RUNS), *flags])[0] == 0
        assert sorted(s3cli.s3.objects(s3cli.bucket)) == keys, flags
        assert s3cli.main(["verify", out, "--s3-endpoint-url", s3cli.s3.url])[0] == 0, flags


@pytest.mark.parametrize(
    ("endpoint", "verified"), [("http://127.0.0.1:9", False), ("https://127.0.0.1:9", True)]
)
async def test_tls_is_verified_except_on_a_plain_http_endpoint(
    endpoint: str, verified: bool
) -> None:
    """Over http there is no certificate to check (and no CA bundle is loaded for it);
    over https the store's certificate is always verified."""
    from harvester.config import load_settings
    from harvester.objectstore.store import Store

    store = Store(load_settings({"out": "s3://b/p/", "s3_endpoint_url": endpoint, "token": "t"}))
    await store.open(check=False)  # (no request: nothing listens there)
    try:
        assert bool(store._client._endpoint.http_session._verify) is verified
    finally:
        await store.close()


def test_a_live_force_jobs_runs_are_not_taken_for_torn_and_a_dead_ones_are(
    s3: S3Server, bucket: str
) -> None:
    """A --force job's claim on a run it is replacing says the run is torn only once the
    job is no longer live: while it lives, it is replacing the run now."""
    from harvester.objectstore.leases import torn_runs

    client = s3.client()

    async def go() -> None:
        async with sink_on(s3, bucket) as sink:
            lease = sink.lease
            await sink.leased()
            await lease.claim(5, forcing=True)
            assert await torn_runs(sink.store, lease.seconds, "another job") == {}
            assert await torn_runs(sink.store, lease.seconds, lease.job) == {}  # (its own)
            (live,) = [u for u in client.list_multipart_uploads(Bucket=bucket)["Uploads"]
                       if u["Key"] == f"pre/.harvester-live/{lease.job}"]  # fmt: skip
            client.abort_multipart_upload(Bucket=bucket, Key=live["Key"], UploadId=live["UploadId"])
            torn = await torn_runs(sink.store, lease.seconds, "another job")
            assert list(torn) == [5] and torn[5][0][0] == f"{live['Key']}/5.force"

    anyio.run(go)
    # Its end let the lease go, not the claim: the run was never replaced whole.
    assert [key.rpartition("/")[2] for key in s3.leases(bucket)] == ["5.force"]
