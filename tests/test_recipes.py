"""The README's recipes, run exactly as written on an archive harvested from the
simulator the way the README says, and their answers checked against the files."""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from harvester.simulator import command
from harvester.simulator.server import Simulator
from tests.process_helpers import ROOT

README = (ROOT / "README.md").read_text()
RECIPES: dict[str, str] = dict(
    re.findall(r"<!-- recipe: (\S+) -->\n```\w+\n(.*?)```", README, re.S)
)


def harvest_line() -> list[str]:
    """The README's harvest command for the recipes' archive, as arguments."""
    section = README.split("## Recipes", 1)[1]
    line = next(
        line for line in section.splitlines() if line.startswith("K6_CLOUD_TOKEN=sim-token ")
    )
    args = shlex.split(line)[1:]
    assert args[:2] == ["harvester", "harvest"]
    return args[1:]


def records(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.fixture(scope="module")
async def harvested(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`harvester simulate` with its defaults (runs dated before now), harvested once by
    the README's command (at the default rate: it takes a few seconds) into DIR/archive."""
    where = tmp_path_factory.mktemp("recipes")
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    cloud = command.build_cloud(parser.parse_args([]))
    args = harvest_line()
    async with Simulator(cloud, token="sim-token") as sim:
        args[args.index("--base-url") + 1] = sim.base_url
        done = await anyio_run([sys.executable, "-m", "harvester", *args], where)
    assert done.returncode == 0, done.stderr.decode()
    return where / "archive"


@pytest.fixture
def archive(harvested: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The recipes run beside the archive, as the README's relative paths say."""
    monkeypatch.chdir(harvested.parent)
    return harvested


async def anyio_run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    env = {"PATH": str(Path(sys.executable).parent), "K6_CLOUD_TOKEN": "sim-token"}
    with anyio.fail_after(60):
        return await anyio.run_process(argv, cwd=cwd, env=env, check=False)


def shell(recipe: str) -> str:
    if shutil.which("jq") is None:
        pytest.skip("jq is not installed (scripts/test installs it where it may)")
    done = subprocess.run(["bash", "-c", RECIPES[recipe]], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def sql(recipe: str) -> list[tuple[Any, ...]]:
    import duckdb

    relation = duckdb.sql(RECIPES[recipe])  # the last statement's rows
    assert relation is not None
    return relation.fetchall()


def worst_p95(path: Path, url: str) -> float:
    lines = records(path)
    ids = {
        r["data"]["id"]
        for r in lines
        if r["type"] == "metric"
        and r["data"]["name"] == "http_req_duration"
        and r["data"]["tags"].get("url") == url
    }
    return max(
        float(point["value"])
        for r in lines
        if r["type"] == "series" and r["data"]["method"] == "p95" and r["data"]["metric_id"] in ids
        for point in r["data"]["values"]
    )


def failed_last_night(archive: Path) -> set[tuple[int, str, str, str]]:
    since = datetime.now(UTC) - timedelta(days=1)
    failed = set()
    for path in archive.glob("*.ndjson"):
        lines = records(path)
        [run] = [r["data"] for r in lines if r["type"] == "run"]
        if datetime.fromisoformat(run["created"]) < since:
            continue
        metric = {
            r["data"]["id"]: r["data"]["name"] for r in lines if r["type"] == "threshold_metric"
        }
        for r in lines:
            if r["type"] == "threshold" and r["data"]["tainted"]:
                t = r["data"]
                failed.add((run["id"], run["created"], metric[t["metric_id"]], t["name"]))
    return failed


async def test_the_p95_recipes_answer_the_worst_interval_p95_of_the_url(archive: Path) -> None:
    run, url = re.search(r"RUN=(\d+) URL='(\S+)'", RECIPES["p95-jq"]).groups()  # type: ignore[union-attr]
    expected = worst_p95(archive / f"{run}.ndjson", url)
    assert expected > 0
    assert float(shell("p95-jq")) == expected
    assert sql("p95-duckdb") == [(expected,)]


async def test_the_threshold_recipes_list_the_failures_of_the_last_24_hours(
    archive: Path,
) -> None:
    expected = failed_last_night(archive)
    assert expected  # the simulator's newest run, an hour old, failed a threshold
    from_jq = {
        (row["run"], row["created"], row["metric"], row["threshold"])
        for row in map(orjson.loads, shell("thresholds-jq").splitlines())
    }
    from_duckdb = {row[:4] for row in sql("thresholds-duckdb")}
    assert from_jq == from_duckdb == expected
    # Older runs failed thresholds too: the 24 hours are what leaves them out.
    everything = {
        (path.stem, r["data"]["name"])
        for path in archive.glob("*.ndjson")
        for r in records(path)
        if r["type"] == "threshold" and r["data"]["tainted"]
    }
    assert len(everything) > len(expected)
