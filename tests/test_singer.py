"""--format singer: Singer messages on stdout, piped into the real target-jsonl (from the
package index, in .venv-singer: scripts/test makes it), hold exactly the points of a
--format points harvest; the last STATE resumes with nothing harvested again. Outside CI
a missing target-jsonl skips the pipe tests; in CI (CI=true) it fails them."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from jsonschema import Draft4Validator

from harvester.cli import main
from harvester.formats.singer import STREAMS
from harvester.formats.singer_state import DoneRuns
from harvester.job import harvest_job
from harvester.scheduler import RunTarget
from harvester.simulator.faults import FaultPlan
from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator
from tests.harvest_helpers import parse_lines, settings_for
from tests.process_helpers import ROOT, cli_command, cli_env

METHODS = ["default", "mean", "max", "min", "p95", "0.99", "count", "rps", "last"]
TARGET = ROOT / ".venv-singer" / "bin" / "target-jsonl"
MISSING_RUN = 999_999


def target_jsonl() -> Path:
    if not TARGET.exists():
        reason = f"{TARGET} is missing (scripts/test installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}: CI needs it")
        pytest.skip(reason)
    return TARGET


def canonical_rows(rows: list[dict[str, Any]]) -> Counter[bytes]:
    return Counter(orjson.dumps(row, option=orjson.OPT_SORT_KEYS) for row in rows)


async def points_harvest(sim: Simulator, out: Path, **how: Any) -> Counter[bytes]:
    """The points of the simulator's runs by --format points, as a multiset of rows."""
    targets = [RunTarget(r) for r in sorted(sim.cloud.runs)]
    result = await harvest_job(settings_for(sim, out, format="points", **how), targets)
    assert not result.report.failed
    rows = [
        row
        for path in sorted(out.glob("*.points.ndjson"))
        for row in parse_lines(path.read_bytes())
    ]
    assert rows
    return canonical_rows(rows)


async def pipe_into_target(
    command: list[str], env: dict[str, str], dest: Path, tmp: Path
) -> tuple[int, int, list[dict[str, Any]]]:
    """`command | target-jsonl` through a real pipe: (harvester's exit status, target's,
    the states the target emitted). The target writes dest/<stream>.jsonl."""
    config = tmp / "target-config.json"
    config.write_bytes(orjson.dumps({"destination_path": str(dest), "do_timestamp_file": False}))
    read_end, write_end = os.pipe()
    with (
        open(tmp / "harvester.err", "wb") as harvester_err,
        open(tmp / "target.out", "wb") as target_out,
        open(tmp / "target.err", "wb") as target_err,
    ):
        harvester = await anyio.open_process(
            command, stdin=subprocess.DEVNULL, stdout=write_end, stderr=harvester_err,
            env=env, cwd=ROOT,
        )  # fmt: skip
        target = await anyio.open_process(
            [str(target_jsonl()), "-c", str(config)], stdin=read_end, stdout=target_out,
            stderr=target_err, cwd=tmp,
        )  # fmt: skip
        os.close(read_end)
        os.close(write_end)
        with anyio.fail_after(60):
            statuses = (await harvester.wait(), await target.wait())
    assert statuses[1] == 0, (tmp / "target.err").read_text()
    return statuses[0], statuses[1], parse_lines((tmp / "target.out").read_bytes())


def read_stream(dest: Path, stream: str) -> list[dict[str, Any]]:
    path = dest / f"{stream}.jsonl"
    return parse_lines(path.read_bytes()) if path.exists() else []


def snapshot(dest: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(dest.glob("*.jsonl"))}


async def test_singer_into_target_jsonl_holds_the_points_of_a_points_harvest(
    tmp_path: Path,
) -> None:
    cloud = generate_cloud(runs=3, metrics=12, points=10)
    async with Simulator(cloud) as sim:
        expected = await points_harvest(sim, tmp_path / "points", methods=METHODS)
        runs = [str(r) for r in sorted(cloud.runs)]
        flags = [a for r in runs for a in ("--run", r)] + [
            a for m in METHODS for a in ("--method", m)
        ]
        command = cli_command(sim, "harvest", "--format", "singer", "--quiet", *flags)
        dest = tmp_path / "jsonl"
        status, _, states = await pipe_into_target(command, cli_env(sim), dest, tmp_path)
        assert status == 0, (tmp_path / "harvester.err").read_text()
        assert canonical_rows(read_stream(dest, "points")) == expected
        got_runs = read_stream(dest, "runs")
        assert sorted(r["test_run_id"] for r in got_runs) == sorted(cloud.runs)
        assert all(r["complete"] for r in got_runs)
        # The three runs (consecutive ids) as one range.
        assert states[-1] == {"bookmarks": {"runs": {"done": [[min(cloud.runs), max(cloud.runs)]]}}}
        for stream in ("metrics", "thresholds", "overviews"):
            assert {r["test_run_id"] for r in read_stream(dest, stream)} == set(cloud.runs), stream
        # Resuming from the last STATE harvests nothing: no record reaches the target.
        state = tmp_path / "state.json"
        state.write_bytes(orjson.dumps(states[-1]))
        before, asked = snapshot(dest), len(sim.requests_for("metrics", "series"))
        status, _, again = await pipe_into_target(
            [*command, "--singer-state", str(state)], cli_env(sim), dest, tmp_path
        )
        assert status == 0
        assert snapshot(dest) == before
        assert again == states[-1:]  # the state goes on, unchanged
        assert len(sim.requests_for("metrics", "series")) == asked  # no run fetched


async def test_tap_harvester_from_v6_into_target_jsonl_resumes_from_its_state(
    tmp_path: Path,
) -> None:
    """The Meltano calling convention (`tap-harvester --config JSON --state JSON`), v6:
    the same points as --format points, check records in `checks`, then a resume."""
    cloud = generate_cloud(runs=2, metrics=40, points=6)
    async with Simulator(cloud) as sim:
        how: dict[str, Any] = {"api": "v6", "stack_id": sim.stack_id, "step": 3}
        expected = await points_harvest(sim, tmp_path / "points", methods=["avg", "p95"], **how)
        config = {**how, "base_url": sim.base_url, "token": sim.token, "rate": 1000,
                  "runs": sorted(cloud.runs), "methods": ["avg", "p95"],
                  "log_level": "quiet"}  # fmt: skip
        config_path = tmp_path / "tap.config.json"
        config_path.write_bytes(orjson.dumps(config))
        env = {k: v for k, v in cli_env(sim).items() if k != "K6_CLOUD_TOKEN"}
        tap = [str(Path(sys.executable).parent / "tap-harvester"), "--config", str(config_path)]
        dest = tmp_path / "jsonl"
        status, _, states = await pipe_into_target(tap, env, dest, tmp_path)
        assert status == 0, (tmp_path / "harvester.err").read_text()
        assert canonical_rows(read_stream(dest, "points")) == expected
        checks = read_stream(dest, "checks")
        assert checks and {c["test_run_id"] for c in checks} == set(cloud.runs)
        assert all(c["passes"] + c["fails"] > 0 for c in checks)
        assert states[-1] == {"bookmarks": {"runs": {"done": sorted(cloud.runs)}}}
        state = tmp_path / "state.json"
        state.write_bytes(orjson.dumps(states[-1]))
        before = snapshot(dest)
        status, _, again = await pipe_into_target(
            [*tap, "--state", str(state)], env, dest, tmp_path
        )
        assert status == 0 and snapshot(dest) == before and again == states[-1:]


async def test_every_message_fits_its_schema_and_a_failed_run_is_never_done(
    tmp_path: Path,
) -> None:
    """SCHEMA before any RECORD of its stream, every record valid against it (draft 4),
    keys among the properties; a STATE after each finished run, listing the runs of the
    state given too; a run that failed gets a `runs` row (complete false) and is in no
    STATE; the last message is a STATE."""
    cloud = generate_cloud(runs=2, metrics=8, points=4)
    state = tmp_path / "state.json"
    state.write_bytes(orjson.dumps({"bookmarks": {"runs": {"done": [7]}}}))
    async with Simulator(cloud) as sim:
        out = io.BytesIO()
        targets = [RunTarget(r) for r in (*sorted(cloud.runs), MISSING_RUN)]
        settings = settings_for(sim, "-", format="singer", singer_state=str(state), details=True)
        result = await harvest_job(settings, targets, stdout=out)
    assert [o.run_id for o in result.report.failed] == [MISSING_RUN]
    messages = parse_lines(out.getvalue())
    validators: dict[str, Draft4Validator] = {}
    states, rows = [], Counter[str]()
    for message in messages:
        if message["type"] == "SCHEMA":
            Draft4Validator.check_schema(message["schema"])
            assert set(message["key_properties"]) <= set(message["schema"]["properties"])
            validators[message["stream"]] = Draft4Validator(message["schema"])
        elif message["type"] == "RECORD":
            validators[message["stream"]].validate(message["record"])
            rows[message["stream"]] += 1
        else:
            states.append(message["value"]["bookmarks"]["runs"]["done"])
    assert set(validators) == set(STREAMS)
    assert rows["points"] and rows["metrics"] and rows["overviews"] and rows["runs"] == 3
    done = sorted(cloud.runs)
    assert states[0] in ([7, done[0]], [7, done[1]])
    assert states[-2:] == [[7, *done], [7, *done]] and messages[-1]["type"] == "STATE"
    failed = [r for r in records_of(messages, "runs") if r["test_run_id"] == MISSING_RUN]
    assert failed and not failed[0]["complete"] and failed[0]["error"]
    metrics = Counter(r["record_type"] for r in records_of(messages, "metrics"))
    assert metrics["metric"] == metrics["metric_detail"] > 0 and metrics["threshold_metric"]


def records_of(messages: list[dict[str, Any]], stream: str) -> list[dict[str, Any]]:
    return [m["record"] for m in messages if m["type"] == "RECORD" and m["stream"] == stream]


@pytest.mark.parametrize(
    ("args", "files", "said"),
    [
        (["--format", "singer", "--out", "{tmp}/out"], {},
         "--format singer writes Singer messages to stdout"),
        (["--singer-state", "{tmp}/s.json"], {"s.json": b"{}"},
         "--singer-state and --singer-stream are for --format singer"),
        (["--format", "singer", "--singer-state", "{tmp}/none.json"], {}, "does not exist"),
        (["--format", "singer", "--singer-state", "{tmp}/s.json"], {"s.json": b"{not json"},
         "is not JSON"),
        (["--format", "singer", "--singer-state", "{tmp}/s.json"],
         {"s.json": b'{"bookmarks": {"runs": {"done": ["x"]}}}'}, "is not a harvester state"),
        (["--format", "singer", "--singer-state", "{tmp}"], {}, "cannot read"),
        (["--singer-stream", "points"], {}, "are for --format singer"),
        (["--format", "singer", "--singer-stream", "series"], {}, "--singer-stream 'series'"),
    ],
)  # fmt: skip
def test_bad_singer_input_is_one_line_and_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    files: dict[str, bytes],
    said: str,
) -> None:
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    argv = ["harvest", "--run", "1", "--token", "t", "--base-url", "http://127.0.0.1:9"]
    status = main([*argv, *(a.replace("{tmp}", str(tmp_path)) for a in args)])
    err = capsys.readouterr().err
    assert status == 2 and said in err and err.count("\n") == 1, err


def test_meltano_snippet_is_the_readme_s_and_its_settings_are_real_flags(tmp_path: Path) -> None:
    """config/meltano.yml is the README's snippet; its extractor runs the console script
    `tap-harvester`, each of its settings is a harvester setting with a `harvest` flag,
    and its config, made into a command line by the tap, parses; the loader is the
    target-jsonl the tests use."""
    import tomllib

    import yaml

    from harvester.cli import build_parser
    from harvester.singer_tap import harvest_argv
    from harvester.sources import flag_name

    text = (ROOT / "config" / "meltano.yml").read_text()
    assert f"```yaml\n{text}```" in (ROOT / "README.md").read_text()
    project = yaml.safe_load(text)
    (tap,) = project["plugins"]["extractors"]
    (loader,) = project["plugins"]["loaders"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert tap["executable"] in pyproject["project"]["scripts"]
    assert tap["capabilities"] == ["state", "catalog", "discover"]
    flags = build_parser("harvest").known_options  # type: ignore[attr-defined]
    names = [setting["name"] for setting in tap["settings"]]
    assert all(flag_name(name) in flags for name in names), names
    assert set(tap["config"]) <= set(names)
    config = tmp_path / "config.json"
    config.write_bytes(orjson.dumps({**tap["config"], "token": "t", "details": True}))
    env: dict[str, str] = {}
    state = tmp_path / "s.json"  # the last STATE's value, as Meltano hands it over
    state.write_bytes(b'{"bookmarks": {"runs": {"done": [1]}}}')
    argv = harvest_argv(["--config", str(config), "--state", str(state)], env)
    assert env == {"K6_CLOUD_TOKEN": "t"} and "t" not in argv
    ns = build_parser("harvest").parse_args(argv)
    assert (ns.format, ns.out, ns.singer_state, ns.since) == ("singer", "-", str(state), "7d")
    assert ns.projects == [str(p) for p in tap["config"]["projects"]] and ns.details
    assert [loader["name"], loader["pip_url"]] == [
        "target-jsonl",
        *pyproject["project"]["optional-dependencies"]["singer-target"],
    ]


@pytest.mark.parametrize(
    ("config", "said"),
    [
        (b"[1]", "is not a JSON object of settings"),
        (b"{oops", "is not JSON"),
        (b'{"out": "dir"}', "tap-harvester sets 'out' itself"),
        (b'{"colour": "blue"}', "unknown setting 'colour'"),
        (b'{"project": 1}', "unknown setting 'project' (did you mean projects?)"),
        # A bad value is named by the key written, not by the flag it becomes (--project).
        (b'{"projects": ["abc"]}', "config.json: projects = 'abc' is not a project id"),
        (b'{"projects": {"a": 1}}', "config.json: projects = {'a': 1} is not a project id"),
        (b'{"rate": "nan"}', "config.json: rate = 'nan' is not a number"),
        (b'{"since": "yesterday"}', "config.json: since = 'yesterday' is not a date"),
        (b'{"runs": [1], "methods": ["x"]}', "config.json: methods = 'x' is not an aggregation"),
        (
            b'{"runs": [1], "api": "v6", "stack_id": 1, "methods": ["x"]}',
            "config.json: methods = 'x' fits no metric type of the v6 API",
        ),
    ],
)
def test_tap_harvester_bad_config_is_one_line_and_exit_2(
    tmp_path: Path, config: bytes, said: str
) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(config)
    tap = Path(sys.executable).parent / "tap-harvester"
    done = subprocess.run([tap, "--config", path], capture_output=True, check=False, timeout=30)
    err = done.stderr.decode()
    assert done.returncode == 2 and said in err and err.count("\n") == 1, err
    assert "--" not in err.replace("the tap's --config", ""), err  # the flags are ours
    missing = subprocess.run(
        [tap, "--config", tmp_path / "none.json"], capture_output=True, check=False, timeout=30
    )
    assert missing.returncode == 2 and b"cannot read the tap's --config" in missing.stderr


@pytest.mark.parametrize(
    ("state", "said"),
    [(b"garbage", "is not JSON"), (None, "does not exist"), (b'{"bookmarks": 1}', "is not a")],
)
def test_tap_harvester_bad_state_is_named_by_the_taps_own_flag(
    tmp_path: Path, state: bytes | None, said: str
) -> None:
    config, path = tmp_path / "config.json", tmp_path / "state.json"
    config.write_bytes(b'{"runs": [1]}')
    if state is not None:
        path.write_bytes(state)
    tap = Path(sys.executable).parent / "tap-harvester"
    done = subprocess.run(
        [tap, "--config", config, "--state", path], capture_output=True, check=False, timeout=30
    )
    err = done.stderr.decode()
    assert done.returncode == 2 and err.count("\n") == 1, err
    assert f"the tap's --state {path} {said}" in err and "--singer-state" not in err, err


def test_tap_config_switches_take_what_the_toml_file_takes(tmp_path: Path) -> None:
    from harvester.singer_tap import harvest_argv

    config = tmp_path / "config.json"
    config.write_bytes(b'{"runs": [1], "details": "yes", "force": false, "run_record": "off"}')
    argv = harvest_argv(["--config", str(config)], {})
    assert "--details" in argv and "yes" not in argv
    assert "--force" not in argv and "--run-record" not in argv


V6_METHODS = ["default", "avg", "min", "max", "last", "p95", "histogram_quantile(0.99)",
              "histogram_count_increase", "histogram_stddev", "increase", "rate", "value",
              "cumrate", "ratio", "increase_nz", "increase_z", "rate_total"]  # fmt: skip


@pytest.mark.parametrize(("api", "methods"), [("v2", METHODS), ("v6", V6_METHODS)])
async def test_singer_points_are_the_points_format_s_for_every_method(
    tmp_path: Path, api: str, methods: list[str]
) -> None:
    cloud = generate_cloud(runs=2, metrics=16, points=5)
    async with Simulator(cloud) as sim:
        how: dict[str, Any] = {"methods": methods}
        if api == "v6":
            how.update(api="v6", stack_id=sim.stack_id, step=3)
        expected = await points_harvest(sim, tmp_path / "points", **how)
        out = io.BytesIO()
        targets = [RunTarget(r) for r in sorted(cloud.runs)]
        await harvest_job(settings_for(sim, "-", format="singer", **how), targets, stdout=out)
    messages = parse_lines(out.getvalue())
    assert canonical_rows(records_of(messages, "points")) == expected
    assert {row["method"] for row in records_of(messages, "points")} >= set(methods) - {
        "default",
        "p95",
        "histogram_quantile(0.99)",
        "mean",
        "0.99",
    }


MELTANO = ROOT / ".venv-meltano" / "bin" / "meltano"


@pytest.mark.timeout(400)
async def test_meltano_runs_the_snippet_and_resumes_from_its_state(tmp_path: Path) -> None:
    """The real Meltano on config/meltano.yml (the plugin installed from this checkout):
    `meltano run tap-harvester target-jsonl` loads the project's runs of the last 7 days,
    the same points as --format points; run again, Meltano hands the tap its state and
    nothing more is loaded."""
    if not MELTANO.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{MELTANO} is missing: CI needs it (scripts/test installs it)")
        pytest.skip(f"{MELTANO} is missing (scripts/test installs it)")
    import yaml

    project = tmp_path / "project"
    project.mkdir()
    text = (ROOT / "config" / "meltano.yml").read_text()
    (project / "meltano.yml").write_text(text.replace("-e ../harvester", f"-e {ROOT}"))
    config = yaml.safe_load(text)["plugins"]["extractors"][0]["config"]
    cloud = generate_cloud(runs=3, metrics=8, points=5, anchor=datetime.now(UTC))
    async with Simulator(cloud) as sim:
        chosen = [r for r, run in sorted(cloud.runs.items())
                  if run.run["project_id"] in config["projects"]]  # fmt: skip
        settings = settings_for(sim, tmp_path / "points", format="points",
                                methods=config["methods"], run_record=True)  # fmt: skip
        assert not (await harvest_job(settings, [RunTarget(r) for r in chosen])).report.failed
        expected = canonical_rows(
            [row for p in (tmp_path / "points").glob("*.points.ndjson")
             for row in parse_lines(p.read_bytes())]
        )  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("HARVESTER_")}
        env.update(MELTANO_SEND_ANONYMOUS_USAGE_STATS="false", TAP_HARVESTER_RATE="1000",
                   TAP_HARVESTER_BASE_URL=sim.base_url, TAP_HARVESTER_TOKEN=sim.token)  # fmt: skip

        async def meltano(*args: str) -> str:
            with anyio.fail_after(300):
                done = await anyio.run_process([str(MELTANO), *args], env=env, cwd=project,
                                               check=False)  # fmt: skip
            assert done.returncode == 0, done.stderr.decode()[-3000:]
            return done.stdout.decode()

        await meltano("install")
        await meltano("run", "tap-harvester", "target-jsonl")
        output = project / "output"
        assert canonical_rows(read_stream(output, "points")) == expected
        assert sorted(r["test_run_id"] for r in read_stream(output, "runs")) == chosen
        state = await meltano("state", "get", "dev:tap-harvester-to-target-jsonl")
        done = DoneRuns([(r, r) for r in chosen])  # (three or more consecutive: a range)
        assert orjson.loads(state.strip().splitlines()[-1]) == {"singer_state": done.value()}
        before, asked = snapshot(output), len(sim.requests_for("metrics", "series"))
        await meltano("run", "tap-harvester", "target-jsonl")
        assert snapshot(output) == before
        assert len(sim.requests_for("metrics", "series")) == asked


async def test_a_stopped_job_ends_with_a_state_naming_no_run_it_cut(tmp_path: Path) -> None:
    """Stopped (a signal, the worker's stop) while every run waits on its overview: the
    runs are cut, their records already out are in no STATE, and the last message is the
    STATE of the runs done before (the Singer state given)."""
    cloud = generate_cloud(runs=2, metrics=4, points=3)
    state = tmp_path / "state.json"
    state.write_bytes(orjson.dumps({"bookmarks": {"runs": {"done": [7]}}}))
    plan = FaultPlan(p_delay=1.0, delay_seconds=60.0, fault_endpoints=frozenset({"overview"}))
    async with Simulator(cloud, faults=plan) as sim:
        stop, out = anyio.Event(), io.BytesIO()
        settings = settings_for(sim, "-", format="singer", singer_state=str(state))
        targets = [RunTarget(r) for r in sorted(cloud.runs)]
        async with anyio.create_task_group() as tg:

            async def stop_when_stuck() -> None:
                while sim.fault_counts["delay"] < len(cloud.runs):
                    await anyio.sleep(0.02)
                stop.set()

            tg.start_soon(stop_when_stuck)
            with anyio.fail_after(30):
                result = await harvest_job(settings, targets, stdout=out, stop=stop, grace=0)
    assert sorted(result.not_done) == sorted(cloud.runs)
    messages = parse_lines(out.getvalue())
    assert records_of(messages, "metrics")  # the cut runs' records are out ...
    states = [m["value"] for m in messages if m["type"] == "STATE"]
    assert states == [{"bookmarks": {"runs": {"done": [7]}}}]  # ... but named by no STATE
    assert messages[-1]["type"] == "STATE"


def test_discover_prints_the_catalog_and_a_catalog_chooses_the_streams(tmp_path: Path) -> None:
    from harvester.config import SINGER_STREAMS
    from harvester.singer_tap import harvest_argv

    assert tuple(STREAMS) == SINGER_STREAMS
    tap = Path(sys.executable).parent / "tap-harvester"
    config = tmp_path / "config.json"
    config.write_bytes(b"{}")
    done = subprocess.run([tap, "--config", config, "--discover"], capture_output=True,
                          check=True, timeout=30)  # fmt: skip
    catalog = orjson.loads(done.stdout)
    assert [s["tap_stream_id"] for s in catalog["streams"]] == list(STREAMS)
    assert all(s["schema"] == STREAMS[s["stream"]][0] for s in catalog["streams"])
    # Meltano's `select`: the chosen streams marked selected, the others not.
    for stream in catalog["streams"]:
        stream["metadata"][0]["metadata"]["selected"] = stream["stream"] in ("runs", "points")
    chosen = tmp_path / "catalog.json"
    chosen.write_bytes(orjson.dumps(catalog))
    argv = harvest_argv(["--config", str(config), "--catalog", str(chosen)], {})
    assert argv[-4:] == ["--singer-stream", "runs", "--singer-stream", "points"]
    for stream in catalog["streams"]:
        stream["metadata"][0]["metadata"]["selected"] = False
    chosen.write_bytes(orjson.dumps(catalog))
    refused = subprocess.run([tap, "--config", config, "--properties", chosen],
                             capture_output=True, check=False, timeout=30)  # fmt: skip
    assert refused.returncode == 2 and b"selects none of the streams" in refused.stderr


async def test_singer_stream_sends_only_those_streams(tmp_path: Path) -> None:
    cloud = generate_cloud(runs=1, metrics=4, points=3)
    async with Simulator(cloud) as sim:
        out = io.BytesIO()
        settings = settings_for(sim, "-", format="singer", singer_streams=["points", "runs"])
        await harvest_job(settings, [RunTarget(r) for r in cloud.runs], stdout=out)
    messages = parse_lines(out.getvalue())
    assert {m["stream"] for m in messages if m["type"] == "SCHEMA"} == {"points", "runs"}
    assert {m["stream"] for m in messages if m["type"] == "RECORD"} == {"points", "runs"}
    assert messages[-1]["type"] == "STATE"
