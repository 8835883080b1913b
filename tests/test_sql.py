"""README's "SQL over your archive": the simulator harvested in points and Parquet exactly
as the README says, each query run as written with the `duckdb` package, and every answer
checked against the simulator's own data (not against another reading of the files)."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from harvester.simulator import command
from harvester.simulator.cloud import SimCloud
from harvester.simulator.server import Simulator
from tests.test_recipes import README, RECIPES, anyio_run

pytest.importorskip("pyarrow")
SECTION = README.split("### SQL over your archive", 1)[1].split("\n## ", 1)[0]


def commands() -> tuple[list[str], list[list[str]]]:
    """The section's `harvester simulate` flags and its harvest commands, as arguments."""
    lines = [line for line in SECTION.splitlines() if line.startswith(("harvester ", "K6_"))]
    simulate = shlex.split(lines[0].rstrip("&"))
    assert simulate[:2] == ["harvester", "simulate"]
    harvests = [shlex.split(line)[1:] for line in lines[1:]]
    assert harvests and all(args[:2] == ["harvester", "harvest"] for args in harvests)
    return simulate[2:], [args[1:] for args in harvests]


@pytest.fixture(scope="module")
async def harvested(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SimCloud]:
    where = tmp_path_factory.mktemp("sql")
    flags, harvests = commands()
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    cloud = command.build_cloud(parser.parse_args(flags))
    async with Simulator(cloud, token="sim-token") as sim:
        for args in harvests:
            args[args.index("--base-url") + 1] = sim.base_url
            done = await anyio_run([sys.executable, "-m", "harvester", *args], where)
            assert done.returncode == 0, done.stderr.decode()
    return where, cloud


@pytest.fixture
def archive(harvested: tuple[Path, SimCloud], monkeypatch: pytest.MonkeyPatch) -> SimCloud:
    """The queries run beside the two archives, as the README's relative paths say."""
    monkeypatch.chdir(harvested[0])
    return harvested[1]


def sql(recipe: str) -> list[tuple[Any, ...]]:
    import duckdb

    relation = duckdb.sql(RECIPES[recipe])
    assert relation is not None
    return relation.fetchall()


def serie_values(cloud: SimCloud, run_id: int, name: str, method: str) -> list[tuple[Any, ...]]:
    """(tags, timestamp, value) of every point of the run's `name` series, as simulated."""
    run = cloud.runs[run_id]
    points = []
    for metric in run.metrics():
        if metric["name"] == name:
            serie = run.serie(metric["id"], method)
            assert serie is not None
            points += [(metric["tags"], v["timestamp"], v["value"]) for v in serie["values"]]
    return points


async def test_p95_per_url_of_a_run_from_points_and_parquet(archive: SimCloud) -> None:
    worst: dict[str, float] = defaultdict(float)
    for tags, _, value in serie_values(archive, 100001, "http_req_duration", "p95"):
        worst[tags["url"]] = max(worst[tags["url"]], value)
    expected = sorted(worst.items())
    assert len(expected) > 1
    assert sql("p95-points") == expected
    assert sql("p95-parquet") == expected


async def test_error_rate_per_night_of_a_test_from_points_and_parquet(archive: SimCloud) -> None:
    sums: dict[tuple[int, Any], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for run_id, run in archive.runs.items():
        points = serie_values(archive, run_id, "http_reqs", "mean")
        night = min(datetime.fromisoformat(stamp) for _, stamp, _ in points).date()
        key = (run.run["test_id"], night)
        for tags, _, value in points:
            sums[key][0] += value if int(tags["status"]) >= 400 else 0.0
            sums[key][1] += value
    expected = sorted(
        (test, night, failed / total) for (test, night), (failed, total) in sums.items()
    )
    # Some nights had errors and some none, and some tests ran on several nights.
    assert {rate > 0 for *_, rate in expected} == {True, False}
    assert len({test for test, *_ in expected}) < len(expected)
    for recipe in ("errors-points", "errors-parquet"):
        got = sql(recipe)
        assert [row[:2] for row in got] == [row[:2] for row in expected]
        assert [row[2] for row in got] == pytest.approx([row[2] for row in expected], rel=1e-12)
