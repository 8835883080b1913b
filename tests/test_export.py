"""`--export-csv`: the run's CSV export fetched, kept byte for byte, published before the
NDJSON; never with the token; timeouts, failed downloads, expired URLs and a crash in
between. All against the simulator (its file server is another origin) over real sockets."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import math
import signal
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import aiohttp
import anyio
import orjson
import pytest
from aiohttp import web

from harvester.api import CloudApi
from harvester.config import load_settings
from harvester.export import CsvExporter
from harvester.job import harvest_job
from harvester.layout import Places
from harvester.ratelimit import RateGate
from harvester.simulator.cloud import SimCloud
from harvester.simulator.exports import EXPORT_DONE, EXPORT_IN_PROGRESS
from harvester.simulator.faults import FaultPlan
from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator
from harvester.stats import HarvestStats
from harvester.transport import Transport
from harvester.verify import intact, verify
from tests.harvest_helpers import assert_exact, read_dir, settings_for, targets
from tests.process_helpers import cli_command, cli_env, run_cli, wait_for

V2 = "/loadtests/v2"
RUN_A, RUN_B = 100001, 100002


def expected_rows(cloud: SimCloud, run_id: int) -> list[dict[str, str]]:
    """What `k6 run --out csv` would hold for the run: every point of every metric's
    default serie, with the metric's tags in their columns (empty where it has none)."""
    run = cloud.runs[run_id]
    tag_keys = {key for m in run.metrics() for key in m["tags"]}
    rows = []
    for metric in run.metrics():
        serie = run.serie(metric["id"], None)
        for point in serie["values"] if serie else []:
            row = {
                "metric_name": metric["name"],
                "timestamp": str(int(datetime.fromisoformat(point["timestamp"]).timestamp())),
                "metric_value": f"{point['value']:.6f}",
            }
            row.update({key: str(metric["tags"].get(key, "")) for key in tag_keys})
            rows.append(row)
    return rows


def csv_rows(data: bytes) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(data.decode()))
    return list(reader.fieldnames or []), list(reader)


async def post_export(sim: Simulator, run_id: int) -> str:
    """Have the run carry a finished export (as a run exported earlier does); its URL."""
    async with aiohttp.ClientSession(sim.base_url, headers=sim.headers) as client:
        async with client.post(f"{V2}/runs/{run_id}/export") as response:
            assert response.status == 200
        async with client.get(f"{V2}/runs/{run_id}") as response:
            url: str = (await response.json())["k6-run"]["export"]["export_file"]
    return url


@pytest.mark.parametrize("gzipped", [False, True])
async def test_each_run_gets_its_export_with_exactly_the_simulators_points(
    cloud: SimCloud, tmp_path: Path, gzipped: bool
) -> None:
    async with Simulator(cloud) as sim:
        sim.exports.knobs.gzip = gzipped
        sim.exports.knobs.delay = 0.05  # the first polls see the export in progress
        settings = settings_for(sim, tmp_path, export_csv=True)
        result = await harvest_job(settings, targets(cloud))
    assert not result.report.failed
    assert_exact(cloud, tmp_path)
    suffix = ".csv.gz" if gzipped else ".csv"
    assert sorted(p.name for p in tmp_path.glob("*.csv*")) == [f"{r}{suffix}" for r in cloud.runs]
    for run_id in cloud.runs:
        served = (tmp_path / f"{run_id}{suffix}").read_bytes()
        assert served.startswith(b"\x1f\x8b") is gzipped  # kept as served
        header, rows = csv_rows(gzip.decompress(served) if gzipped else served)
        assert header[:3] == ["metric_name", "timestamp", "metric_value"]
        assert header[3:] == sorted(header[3:]) and "status" in header
        assert rows == expected_rows(cloud, run_id)
        summary = read_dir(tmp_path)[run_id][-1]["data"]
        assert summary["export_file"] == f"{run_id}{suffix}"
        assert summary["export_bytes"] == len(served)
        assert cloud.runs[run_id].run["export"]["export_status"] == EXPORT_DONE
    posts = [r.run_id or 0 for r in sim.requests_for("export")]
    assert sorted(posts) == sorted(cloud.runs)  # one POST a run
    polls = [r.run_id for r in sim.requests_for("run")]
    assert all(polls.count(run_id) >= 2 for run_id in cloud.runs)  # read, then polled


async def test_the_token_never_reaches_the_files_origin_even_through_a_redirect(
    tmp_path: Path,
) -> None:
    cloud = generate_cloud(runs=1, metrics=5, points=3)
    async with Simulator(cloud, token="tok-5ecret-NEVER-ON-STORAGE") as sim:
        sim.exports.knobs.redirect = True
        result = await harvest_job(settings_for(sim, tmp_path, export_csv=True), targets(cloud))
        file_port = int(sim.exports.file_base.rsplit(":", 1)[1])
    assert not result.report.failed
    assert file_port != sim.port  # another origin
    hops = sim.exports.requests
    assert [(r.path, r.status) for r in hops] == [
        (f"/exports/{RUN_A}.csv", 302),
        (f"/files/{RUN_A}.csv", 200),
    ]
    for hop in hops:
        assert "Authorization" not in hop.headers
        assert not any(sim.token in value for value in hop.headers.values())
    assert csv_rows((tmp_path / f"{RUN_A}.csv").read_bytes())[1] == expected_rows(cloud, RUN_A)


async def test_the_file_server_refuses_a_request_carrying_a_token(simulator: Simulator) -> None:
    url = await post_export(simulator, RUN_A)
    async with aiohttp.ClientSession() as client:
        async with client.get(url, headers=simulator.headers) as response:
            assert response.status == 403
        async with client.get(url) as response:
            assert response.status == 200
    run = simulator.cloud.runs[RUN_A].run
    assert run["export"] == {"export_status": EXPORT_DONE, "export_file": url}


async def test_the_simulated_export_is_in_progress_until_its_delay_passes(
    simulator: Simulator,
) -> None:
    simulator.exports.knobs.delay = math.inf
    async with aiohttp.ClientSession(simulator.base_url, headers=simulator.headers) as client:
        async with client.post(f"{V2}/runs/{RUN_A}/export") as response:
            assert (await response.json())["exports"][0]["export_status"] == EXPORT_IN_PROGRESS
        async with client.get(f"{V2}/runs/{RUN_A}") as response:
            export = (await response.json())["k6-run"]["export"]
    assert export == {"export_status": EXPORT_IN_PROGRESS, "export_file": None}


async def test_an_export_that_never_finishes_fails_its_run_loudly_and_the_others_complete(
    simulator: Simulator, tmp_path: Path
) -> None:
    await post_export(simulator, RUN_B)  # B already has its file; A will wait forever
    simulator.exports.knobs.delay = math.inf
    result = await run_cli(
        simulator, "harvest", "--run", str(RUN_A), "--run", str(RUN_B), "--out", str(tmp_path),
        "--export-csv", "--export-timeout", "0.5",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr.decode()
    err = result.stderr.decode()
    assert str(RUN_A) in err and "not ready after 0.5s (--export-timeout)" in err
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        f"{RUN_B}.csv",
        f"{RUN_B}.manifest.json",
        f"{RUN_B}.ndjson",
    ]
    assert not list(tmp_path.glob(".*.partial"))
    assert [r.run_id for r in simulator.requests_for("export")] == [RUN_B, RUN_A]  # B: earlier
    # The manifest names the export beside the NDJSON, with its exact bytes.
    files = orjson.loads((tmp_path / f"{RUN_B}.manifest.json").read_bytes())["files"]
    csv = tmp_path / f"{RUN_B}.csv"
    assert [f["name"] for f in files] == [f"{RUN_B}.ndjson", csv.name]
    assert files[1]["sha256"] == hashlib.sha256(csv.read_bytes()).hexdigest()


async def test_a_download_that_keeps_failing_fails_the_run_and_publishes_nothing(
    simulator: Simulator, tmp_path: Path
) -> None:
    simulator.exports.knobs.file_status = 503
    settings = settings_for(simulator, tmp_path, export_csv=True, max_attempts=3)
    result = await harvest_job(settings, targets(simulator.cloud)[:1])
    (failed,) = result.report.failed
    assert failed.run_id == RUN_A and "gave up after 3 tries" in str(failed.reason)
    assert "export_file" in str(failed.reason) and "signature" not in str(failed.reason)
    assert [r.status for r in simulator.exports.requests] == [503, 503, 503]
    assert not [p for p in tmp_path.iterdir() if ".csv" in p.name or ".ndjson" in p.name]


async def test_a_storage_hosts_503_with_retry_after_does_not_pause_the_api(
    simulator: Simulator, tmp_path: Path
) -> None:
    """The file's host is not the API: its Retry-After is this download's wait (from the
    run's budget), not a pause of every API request."""
    simulator.exports.knobs.file_status = 503
    simulator.exports.knobs.file_retry_after = 0.05
    settings = settings_for(simulator, tmp_path, export_csv=True, max_attempts=3)
    result = await harvest_job(settings, targets(simulator.cloud)[:1])
    assert [r.status for r in simulator.exports.requests] == [503, 503, 503]
    assert result.stats.throttled == 0 and "gave up after 3 tries" in str(
        result.report.failed[0].reason
    )


async def test_a_download_not_allowed_fails_the_run_at_once(
    simulator: Simulator, tmp_path: Path
) -> None:
    simulator.exports.knobs.file_status = 404
    settings = settings_for(simulator, tmp_path, export_csv=True)
    result = await harvest_job(settings, targets(simulator.cloud)[:1])
    (failed,) = result.report.failed
    assert "answered HTTP 404" in str(failed.reason)
    assert [r.status for r in simulator.exports.requests] == [404]  # fresh URL: no new POST
    assert not list(tmp_path.glob("*.ndjson")) and not list(tmp_path.glob("*.csv*"))


async def test_an_expired_stored_export_file_leads_to_one_new_post(
    simulator: Simulator, tmp_path: Path
) -> None:
    await post_export(simulator, RUN_A)
    simulator.exports.expire()
    simulator.log.clear()
    settings = settings_for(simulator, tmp_path, export_csv=True)
    result = await harvest_job(settings, targets(simulator.cloud)[:1])
    assert not result.report.failed
    assert [r.endpoint for r in simulator.log if r.endpoint in ("run", "export")][:3] == [
        "run",
        "export",
        "run",
    ]
    assert len(simulator.requests_for("export")) == 1
    assert [r.status for r in simulator.exports.requests] == [403, 200]
    rows = csv_rows((tmp_path / f"{RUN_A}.csv").read_bytes())[1]
    assert rows == expected_rows(simulator.cloud, RUN_A)


@pytest.fixture
async def flaky_file_server() -> AsyncIterator[tuple[str, list[int]]]:
    """A storage host that cuts the first answer short, then serves gzip bytes with
    `Content-Encoding: gzip` (which must not be decoded: bytes are kept as served)."""
    body = gzip.compress(b"metric_name,timestamp,metric_value\nvus,1,1.000000\n", mtime=0)
    served: list[int] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        served.append(len(served))
        if len(served) == 1:
            response = web.StreamResponse(headers={"Content-Length": str(len(body))})
            await response.prepare(request)
            await response.write(body[:5])
            assert request.transport is not None
            request.transport.close()
            return response
        return web.Response(body=body, headers={"Content-Encoding": "gzip"})

    app = web.Application()
    app.router.add_get("/f.csv", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/f.csv?sig=x", served
    finally:
        await runner.cleanup()


async def test_a_cut_download_is_retried_and_gzip_bytes_are_kept_as_served(
    simulator: Simulator, tmp_path: Path, flaky_file_server: tuple[str, list[int]]
) -> None:
    url, served = flaky_file_server
    simulator.cloud.update_run(RUN_A, export={"export_status": 2, "export_file": url})
    settings = settings_for(simulator, tmp_path, export_csv=True)
    result = await harvest_job(settings, targets(simulator.cloud)[:1])
    assert not result.report.failed
    assert len(served) == 2  # the cut answer, then the whole one
    saved = (tmp_path / f"{RUN_A}.csv.gz").read_bytes()
    assert gzip.decompress(saved).startswith(b"metric_name,")
    assert simulator.requests_for("export") == []  # the stored file answered: no POST


async def test_export_csv_with_stdout_is_refused_in_one_line(simulator: Simulator) -> None:
    result = await run_cli(simulator, "harvest", "--run", "1", "--export-csv", "--out", "-")
    assert result.returncode == 2
    assert result.stderr.decode().count("\n") == 1 and b"--out DIR" in result.stderr
    assert result.stdout == b""


async def test_a_run_archived_without_its_export_is_harvested_again_with_it(
    simulator: Simulator, tmp_path: Path
) -> None:
    first = await harvest_job(settings_for(simulator, tmp_path), targets(simulator.cloud))
    assert len(first.report.succeeded) == 3
    second = await harvest_job(
        settings_for(simulator, tmp_path, export_csv=True), targets(simulator.cloud)
    )
    assert len(second.report.succeeded) == 3 and second.skipped == []
    assert len(list(tmp_path.glob("*.csv"))) == 3
    third = await harvest_job(
        settings_for(simulator, tmp_path, export_csv=True), targets(simulator.cloud)
    )
    assert sorted(third.skipped) == sorted(simulator.cloud.runs)


async def test_after_sigkill_between_the_csv_and_the_ndjson_the_next_job_completes_the_run(
    tmp_path: Path,
) -> None:
    cloud = generate_cloud(runs=1, metrics=10, points=5)
    slow_overview = FaultPlan(
        p_delay=1.0, delay_seconds=30.0, fault_endpoints=frozenset({"overview"})
    )
    async with Simulator(cloud, faults=slow_overview) as sim:
        args = ["--run", str(RUN_A), "--out", str(tmp_path), "--export-csv"]
        process = await anyio.open_process(cli_command(sim, "harvest", *args), env=cli_env(sim))
        async with process:
            await wait_for(lambda: (tmp_path / f"{RUN_A}.csv").exists(), within=20)
            process.send_signal(signal.SIGKILL)
            await process.wait()
        assert not (tmp_path / f"{RUN_A}.ndjson").exists()
        csv_before = (tmp_path / f"{RUN_A}.csv").read_bytes()
        sim.faults = FaultPlan()
        sim.log.clear()
        downloads = len(sim.exports.requests)
        rerun = await run_cli(sim, "harvest", *args)
        assert rerun.returncode == 0, rerun.stderr.decode()
    assert_exact(cloud, tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.csv*")) == [f"{RUN_A}.csv"]
    assert (tmp_path / f"{RUN_A}.csv").read_bytes() == csv_before
    assert len(sim.exports.requests) == downloads  # not fetched again
    assert sim.requests_for("export", "run") == []
    summary = read_dir(tmp_path)[RUN_A][-1]["data"]
    assert summary["export_file"] == f"{RUN_A}.csv" and summary["export_bytes"] == len(csv_before)


async def test_force_replaces_the_published_export_keeping_one_file(
    simulator: Simulator, tmp_path: Path
) -> None:
    runs = targets(simulator.cloud)[:1]
    await harvest_job(settings_for(simulator, tmp_path, export_csv=True), runs)
    assert (tmp_path / f"{RUN_A}.csv").exists()
    simulator.exports.knobs.gzip = True
    result = await harvest_job(settings_for(simulator, tmp_path, export_csv=True, force=True), runs)
    assert not result.report.failed
    assert sorted(p.name for p in tmp_path.glob("*.csv*")) == [f"{RUN_A}.csv.gz"]
    assert read_dir(tmp_path)[RUN_A][-1]["data"]["export_file"] == f"{RUN_A}.csv.gz"


async def test_force_without_export_csv_keeps_the_export_named_and_moves_it_with_the_run(
    simulator: Simulator, tmp_path: Path
) -> None:
    """--force re-harvests the run's data; its export was not asked about. It stays, named
    by the new manifest (it was left named by none: an orphan to verify), and moves with
    the run to another --layout (it was deleted)."""
    runs = targets(simulator.cloud)[:1]
    await harvest_job(settings_for(simulator, tmp_path, export_csv=True), runs)
    exported = (tmp_path / f"{RUN_A}.csv").read_bytes()
    for layout in ("flat", "date"):
        settings = settings_for(simulator, tmp_path, force=True, layout=layout)
        assert not (await harvest_job(settings, runs)).report.failed
        [kept] = tmp_path.rglob(f"{RUN_A}.csv*")
        assert kept.read_bytes() == exported and kept.parent == manifest_path_of(tmp_path)
        rows = list(verify(tmp_path))
        assert intact(rows) and kept.name in {row["file"].rpartition("/")[2] for row in rows}


def manifest_path_of(root: Path) -> Path:
    """The directory of the archive's one manifest."""
    [found] = root.rglob("*.manifest.json")
    return found.parent


@pytest.mark.parametrize("export_file", ["ftp://storage.example/f.csv", "http://[::1"])
async def test_an_export_file_that_is_no_http_url_fails_the_run_with_a_reason(
    simulator: Simulator, tmp_path: Path, export_file: str
) -> None:
    simulator.cloud.update_run(RUN_A, export={"export_status": 2, "export_file": export_file})
    settings = settings_for(simulator, tmp_path, export_csv=True)
    result = await harvest_job(settings, targets(simulator.cloud)[:1])
    (failed,) = result.report.failed
    assert "export_file is not an http(s) URL" in str(failed.reason)


async def test_a_relative_export_file_is_fetched_from_the_api_host_without_the_token(
    tmp_path: Path,
) -> None:
    """A tiny API whose POST answers 204 with no body and whose run object names a path."""
    seen: list[dict[str, str]] = []

    async def run(request: web.Request) -> web.Response:
        export = {"export_status": 2, "export_file": "/files/9.csv"} if posted else None
        return web.json_response({"k6-run": {"id": 9, "export": export}})

    async def post(request: web.Request) -> web.Response:
        posted.append(True)
        return web.Response(status=204)

    async def file(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.Response(body=b"metric_name,timestamp,metric_value\n")

    posted: list[bool] = []
    app = web.Application()
    app.router.add_get(f"{V2}/runs/9", run)
    app.router.add_post(f"{V2}/runs/9/export", post)
    app.router.add_get("/files/9.csv", file)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        settings = load_settings(
            {"base_url": base, "token": "t0ken", "out": str(tmp_path), "export_csv": True,
             "backoff_base": 0.001, "backoff_cap": 0.01},
            environ={},
        )  # fmt: skip
        async with Transport(
            settings, gate=RateGate.for_settings(settings), stats=HarvestStats()
        ) as transport:
            exporter = CsvExporter(CloudApi(transport), tmp_path, timeout=5)
            exported = await exporter.export(9)
    finally:
        await runner.cleanup()
    assert exported.path == tmp_path / "9.csv" and exported.size == 35
    assert posted == [True] and len(seen) == 1 and "Authorization" not in seen[0]


async def test_leftovers_of_a_download_cut_by_a_crash_are_removed_by_the_next_job(
    simulator: Simulator, tmp_path: Path
) -> None:
    leftover = tmp_path / f".{RUN_A}.csv.x1y2z3.partial"
    leftover.write_bytes(b"metric_name,timest")
    settings = settings_for(simulator, tmp_path, export_csv=True)
    result = await harvest_job(settings, targets(simulator.cloud)[:1])
    assert not result.report.failed and not leftover.exists()
    assert (tmp_path / f"{RUN_A}.csv").exists()


async def test_an_export_ready_before_its_run_is_opened_makes_the_runs_directory(
    simulator: Simulator, tmp_path: Path
) -> None:
    # The export runs beside the run's fetch: a busy writer may not have opened the run
    # (and made its day directory) when the download begins.
    settings = settings_for(simulator, tmp_path, export_csv=True, layout="date")
    run = simulator.cloud.runs[RUN_A].run
    places = Places("date", tmp_path)
    day = tmp_path / places.decide(RUN_A, run)
    async with Transport(
        settings, gate=RateGate.for_settings(settings), stats=HarvestStats()
    ) as transport:
        exporter = CsvExporter(CloudApi(transport), tmp_path, timeout=5, places=places)
        exported = await exporter.export(RUN_A)
    assert exported.path.parent == day and exported.path.exists()
