"""The command line: exit statuses, one-line messages, and the token kept out of everything."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio.from_thread
import orjson
import pytest
from aiohttp import web

from harvester.cli import main
from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator
from tests.harvest_helpers import cli_args, read_dir
from tests.process_helpers import cli_command, cli_env

SECRET = "tok-5ecret-DO-NOT-LEAK"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A simulator on its own event loop thread, so `main()` can run its own loop."""
    cloud = generate_cloud(runs=2, metrics=10, points=5)
    with anyio.from_thread.start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(Simulator(cloud, token=SECRET)) as simulator:
            yield simulator


def test_version_prints_and_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("harvester ")


def test_harvest_to_a_directory_exits_zero_and_names_where(
    sim: Simulator, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert main(cli_args(sim, tmp_path, "--run", "100001", "--run", "100002")) == 0
    assert sorted(read_dir(tmp_path)) == [100001, 100002]
    err = capfd.readouterr().err
    assert "2 runs harvested, 0 failed" in err
    assert str(tmp_path / "100001.ndjson") in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--run", "abc"], "--run 'abc' is not a run id"),
        (["--rate", "fast"], "--rate 'fast' is not a number"),
        (
            ["--config", "/nonexistent/h.toml", "--run", "1"],
            "config file /nonexistent/h.toml does not exist",
        ),
        ([], "no runs to harvest"),
        (["--run", "1", "--bogus"], "unrecognized arguments: --bogus"),
        (["--run", "1", "--out", "gs://b/p"], "--out 'gs://b/p' is a URL of scheme gs,"),
        (["--run", "1", "--out", "FTP://h/x"], "give a directory, s3://BUCKET/PREFIX/, or - for"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    args: list[str], message: str, capfd: pytest.CaptureFixture[str]
) -> None:
    assert main(["harvest", "--token", "t", "--base-url", "http://127.0.0.1:9", *args]) == 2
    err = capfd.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_missing_token_is_exit_2(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("K6_CLOUD_TOKEN", raising=False)
    assert main(["harvest", "--run", "1"]) == 2
    assert "no API token: set K6_CLOUD_TOKEN" in capfd.readouterr().err


def test_output_path_that_is_a_file_is_exit_2(
    sim: Simulator, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "afile"
    target.write_text("x")
    assert main(cli_args(sim, target, "--run", "100001")) == 2
    assert "is a file; give a directory" in capfd.readouterr().err
    assert not sim.log  # nothing was fetched


def test_rejected_token_stops_at_once_without_retrying(
    sim: Simulator, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    args = cli_args(sim, tmp_path, "--run", "100001", "--run", "100002", "--runs-in-flight", "1")
    args[args.index(SECRET)] = "wrong-token"
    assert main(args) == 2
    err = capfd.readouterr().err
    # Not a terminal: the error is a JSON line, and the summary after it is the last line.
    error, summary = (orjson.loads(line) for line in err.splitlines())
    assert (error["event"], error["level"], error["exit_status"]) == ("error", "error", 2)
    assert "rejected the token" in error["message"] and SECRET not in err
    said = "the API rejected the token (metrics /loadtests/v2/metrics?test_run_id=100001: HTTP 401"
    assert error["message"].startswith(said)
    assert summary["event"] == "summary" and summary["requests"] == 1
    assert len(sim.log) == 1 and sim.log[0].status == 401
    assert not list(tmp_path.glob("*.ndjson")) and not list(tmp_path.glob(".*.partial"))


def test_unknown_run_fails_it_with_exit_1_and_keeps_the_others(
    sim: Simulator, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert main(cli_args(sim, tmp_path, "--run", "100001", "--run", "4242")) == 1
    err = capfd.readouterr().err
    assert "run 4242 failed: not found" in err
    assert sorted(read_dir(tmp_path)) == [100001]


def test_unreachable_base_url_is_one_line_and_exit_2(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["harvest", "--token", "t", "--base-url", "http://127.0.0.1:9", "--run", "1",
            "--out", str(tmp_path), "--max-attempts", "2", "--rate", "1000"]  # fmt: skip
    monkeypatch.setenv("HARVESTER_BACKOFF_BASE", "0.001")
    assert main(args) == 2
    err = capfd.readouterr().err
    assert "cannot reach the API at http://127.0.0.1:9" in err and "check --base-url" in err


def test_state_of_another_version_is_exit_2(
    sim: Simulator, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / ".harvester-state.sqlite"
    with sqlite3.connect(state) as db:
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('schema_version', '99')")
    db.close()
    assert main(cli_args(sim, tmp_path, "--run", "100001")) == 2
    assert "schema version 99" in capfd.readouterr().err


def test_the_token_appears_in_no_output_log_or_state(
    sim: Simulator, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(cli_args(sim, out, "--run", "100001", "--run", "4242", "--verbose")) == 1
    assert main(cli_args(sim, "-", "--run", "100001")) == 0
    captured = capfd.readouterr()
    assert SECRET not in captured.out and SECRET not in captured.err
    for path in out.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


async def test_redirect_to_another_host_never_carries_the_token(tmp_path: Path) -> None:
    from harvester.job import harvest_job
    from harvester.scheduler import RunTarget
    from tests.harvest_helpers import settings_for

    seen: list[str | None] = []

    async def elsewhere(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"k6-metrics": []})

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://localhost:{other_port}/loadtests/v2/metrics")

    other = web.Application()
    other.router.add_get("/loadtests/v2/metrics", elsewhere)
    origin = web.Application()
    origin.router.add_get("/loadtests/v2/metrics", redirect)
    runners = [web.AppRunner(other), web.AppRunner(origin)]
    for runner in runners:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
    other_port = runners[0].addresses[0][1]
    try:
        sim_like = Simulator(generate_cloud(runs=1), token=SECRET)
        sim_like.port = runners[1].addresses[0][1]
        result = await harvest_job(settings_for(sim_like, tmp_path), [RunTarget(1)])
    finally:
        for runner in runners:
            await runner.cleanup()
    assert seen == []
    said = "metrics /loadtests/v2/metrics?test_run_id=1: the API redirected to another host"
    assert said in (result.report.failed[0].reason or "")


def test_flags_are_never_abbreviated(capfd: pytest.CaptureFixture[str]) -> None:
    # With prefix matching, `worker --run 5` would have meant `--runs-in-flight 5`.
    assert main(["worker", "--project", "1", "--run", "5"]) == 2
    assert "unrecognized arguments: --run 5" in capfd.readouterr().err
    assert main(["harvest", "--token", "t", "--run", "1", "--runs-in", "2"]) == 2
    assert "unrecognized arguments: --runs-in 2" in capfd.readouterr().err


def _closed_port() -> int:
    """A loopback port where nothing listens (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize(
    "selector",
    [
        ["harvest", "--test", "1"],
        ["harvest", "--project", "1"],
        ["runs", "--test", "1"],
        ["harvest", "--test", "1", "--progress", "on"],
    ],  # fmt: skip
    ids=["harvest-test", "harvest-project", "runs", "harvest-live-display"],
)
def test_an_unreachable_api_during_discovery_is_one_line_and_exit_2(
    selector: list[str], capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARVESTER_BACKOFF_BASE", "0.001")
    base = f"http://127.0.0.1:{_closed_port()}"
    args = [*selector, "--token", "t", "--base-url", base, "--max-attempts", "2"]
    assert main([*args, "--rate", "1000"]) == 2
    err = capfd.readouterr().err
    if selector[0] == "harvest" and "--progress" not in selector:
        # Not a terminal: a JSON line for the error, then the summary as the last line.
        *_, error, summary = map(orjson.loads, err.splitlines())
        assert error["message"].startswith(f"cannot reach the API at {base}")
        assert summary["event"] == "summary"
    else:
        assert f"harvester: cannot reach the API at {base}" in err
    assert "ExceptionGroup" not in err and "internal error" not in err


def test_an_exception_group_that_reaches_the_exit_point_shows_its_error(
    capfd: pytest.CaptureFixture[str],
) -> None:
    from harvester.cli import report_error
    from harvester.errors import ConfigError

    group = ExceptionGroup("unhandled errors in a TaskGroup", [ConfigError("bad thing")])
    assert report_error(ExceptionGroup("outer", [group]), debug=False) == 2
    assert capfd.readouterr().err == "harvester: bad thing\n"


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_a_proxy_from_the_environment_is_used_and_no_proxy_bypasses_it(
    variable: str,
    sim: Simulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # The simulator stands in for the proxy: it answers the absolute-form requests a proxy
    # receives. api.k6.test does not resolve, so only a proxied request can succeed.
    monkeypatch.setenv(variable, sim.base_url)
    netrc = tmp_path / "netrc"
    netrc.write_text("default login someone password elsewhere\n")
    monkeypatch.setenv("NETRC", str(netrc))  # never sent, never in the way of the token
    args = cli_args(sim, tmp_path / "out", "--run", "100001", "--allow-insecure")
    args[args.index(sim.base_url)] = "http://api.k6.test"
    assert main(args) == 0
    assert sorted(read_dir(tmp_path / "out")) == [100001]
    assert all(entry.status == 200 for entry in sim.log)
    monkeypatch.setenv("NO_PROXY", "api.k6.test")
    assert main([*args, "--max-attempts", "1", "--force"]) == 2
    assert "cannot reach the API at http://api.k6.test" in capfd.readouterr().err


@pytest.mark.parametrize("command", [["config", "show"], ["config", "init", "-"]])
def test_a_reader_of_stdout_gone_is_one_line_and_exit_1_not_an_internal_error(
    command: list[str],
) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `| head -0`: the listing has nowhere to go
    try:
        done = subprocess.run(
            [sys.executable, "-m", "harvester", *command],
            stdout=write_end,
            stderr=subprocess.PIPE,
            check=False,
            timeout=30,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 1
    assert done.stderr.decode() == "harvester: cannot write to stdout: Broken pipe\n"


@pytest.mark.parametrize("command", [["runs", "--all-projects"], ["projects"]])
async def test_a_listing_to_a_full_stdout_is_one_line_and_exit_1_as_a_harvest_s(
    simulator: Simulator, command: list[str]
) -> None:
    """`harvester runs > /dev/full` said "internal error ... please report it"."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    with open("/dev/full", "wb") as full, anyio.fail_after(30):
        done = await anyio.run_process(
            cli_command(simulator, command[0], *command[1:]),
            env=cli_env(simulator),
            stdout=full,
            check=False,
        )
    assert done.returncode == 1
    assert done.stderr.decode().splitlines()[-1] == (
        "harvester: cannot write to stdout: No space left on device"
    )


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--format", "singer"], {}, "invalid choice 'singer'; choose from raw, points, parquet"),
        (["--singer-state", "s.json"], {}, "unrecognized arguments: --singer-state"),
        # From the environment (or a config file): the line says where Singer goes.
        ([], {"HARVESTER_FORMAT": "singer"}, "`harvester harvest --format singer` without --out"),
    ],
)
def test_the_worker_refuses_singer_which_writes_no_archive(
    args: list[str],
    env: dict[str, str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    worker = ["worker", "--token", "t", "--base-url", "http://127.0.0.1:9", "--project", "1"]
    assert main([*worker, "--out", str(tmp_path), *args]) == 2
    err = capfd.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_the_worker_s_help_offers_only_what_a_worker_writes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["worker", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "{raw,points,parquet}" in shown and "singer" not in shown
    assert "or s3://BUCKET/PREFIX/" in shown and "for stdout" not in shown
