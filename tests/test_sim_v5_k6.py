"""The v5 view of a recorded k6 run: every k6 tag is a label (as the live API keeps
them), one series per distinct full tag set, and queries that group, select and
aggregate over those series; the v2 view keeps its distinguishing tags only."""

from __future__ import annotations

import statistics
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from harvester.simulator.cloud import SimCloud
from harvester.simulator.k6import import K6Run, load_k6_run
from harvester.simulator.server import Simulator
from tests.k6_helpers import metric_line, point_line, write_lines

RUN_ID = 77
RUN = f"/cloud/v5/test_runs/{RUN_ID}"
BUY = {"scenario": "buy", "name": "cart", "status": "200", "flow": "x", "région": "eu"}
BROWSE = {"scenario": "browse", "name": "home", "status": "200", "flow": "x", "région": "eu"}
#: (second, value, tags) of http_req_duration: 4 tag sets, 3 v2 metrics (flow is no v2 tag).
DURATIONS = [(0.5, 10.0, BUY), (1.5, 30.0, BUY), (2.5, 20.0, BUY), (0.7, 1.0, BROWSE),
             (1.2, 3.0, {**BROWSE, "status": "404"}), (2.9, 2.0, BROWSE),
             (3.5, 5.0, {**BUY, "flow": "y"})]  # fmt: skip


def _point(second: float, value: float, tags: dict[str, str]) -> dict[str, Any]:
    line = point_line("http_req_duration", second, value)
    line["data"]["tags"] = tags  # `name` is a k6 tag here, not point_line's argument
    return line


@pytest.fixture
def run(tmp_path: Path) -> K6Run:
    lines = [metric_line("http_req_duration", "trend"), metric_line("vus", "gauge")]
    lines += [_point(s, v, tags) for s, v, tags in DURATIONS]
    # The gauge's latest sample is in the label set that sorts first.
    lines += [point_line("vus", 4.0, 7.0, scenario="a"), point_line("vus", 1.0, 3.0, scenario="b")]
    return load_k6_run(write_lines(tmp_path / "out.json", lines), run_id=RUN_ID)


@pytest.fixture
async def v5(run: K6Run) -> AsyncIterator[aiohttp.ClientSession]:
    cloud = SimCloud()
    cloud.add_run(run)
    async with (
        Simulator(cloud) as sim,
        aiohttp.ClientSession(sim.base_url, headers=sim.v6_headers) as session,
    ):
        yield session


async def _data(session: aiohttp.ClientSession, path: str) -> Any:
    async with session.get(URL(path, encoded=True)) as resp:
        assert resp.status == 200, await resp.text()
        return (await resp.json())["data"]


def _aggregate(query: str, metric: str) -> str:
    text = f"{RUN}/query_aggregate_k6(query='{query}',metric='{metric}')"
    for char, code in ((" ", "%20"), ('"', "%22"), ("{", "%7B"), ("}", "%7D")):
        text = text.replace(char, code)
    return text


def _figures(result: list[dict[str, Any]], label: str) -> dict[str, float]:
    return {entry["metric"].get(label, ""): entry["values"][0][1] for entry in result}


async def test_every_k6_tag_is_a_label_and_each_tag_set_a_series(
    run: K6Run, v5: aiohttp.ClientSession
) -> None:
    labels = await _data(v5, f"{RUN}/labels")
    assert labels == ["__name__", "flow", "name", "r_gion", "scenario", "status", "test_run_id"]
    found = await _data(v5, f"{RUN}/series?match[]=http_req_duration")
    assert len(found) == 4
    assert {"__name__": "http_req_duration", **{k.replace("é", "_"): v for k, v in BUY.items()},
            "test_run_id": str(RUN_ID)} in found  # fmt: skip
    assert await _data(v5, f"{RUN}/label/scenario/values") == ["a", "b", "browse", "buy"]
    # v2 still tells metrics apart by group, method, status and url only.
    v2 = [m["tags"] for m in run.metrics() if m["name"] == "http_req_duration"]
    assert sorted((tags["url"], tags["status"]) for tags in v2) == [
        ("cart", "200"), ("home", "200"), ("home", "404")]  # fmt: skip
    assert all(set(tags) == {"group", "method", "status", "url"} for tags in v2)


async def test_queries_group_and_select_by_any_tag(v5: aiohttp.ClientSession) -> None:
    counts = await _data(v5, _aggregate("histogram_count_increase by (scenario)",
                                        "http_req_duration"))  # fmt: skip
    assert _figures(counts["result"], "scenario") == {"browse": 3.0, "buy": 4.0}
    buy = [v for _, v, tags in DURATIONS if tags["scenario"] == "buy"]
    median = await _data(v5, _aggregate("histogram_quantile(0.5)",
                                        'http_req_duration{scenario="buy"}'))  # fmt: skip
    assert _figures(median["result"], "") == {"": statistics.median(buy)}
    mean = await _data(v5, _aggregate("histogram_avg by (flow)", "http_req_duration"))
    x = statistics.fmean(v for _, v, tags in DURATIONS if tags["flow"] == "x")
    assert _figures(mean["result"], "flow") == {"x": x, "y": 5.0}
    both = 'http_req_duration{scenario="browse",status="200"}'
    top = await _data(v5, _aggregate("histogram_max", both))
    assert _figures(top["result"], "") == {"": 2.0}
    latest = await _data(v5, _aggregate("last", "vus"))
    assert _figures(latest["result"], "") == {"": 7.0}  # the latest sample, not the last set's


def test_tag_sets_share_their_tag_value_pairs(run: K6Run) -> None:
    """Many tag sets that differ in one tag hold references to the same pairs."""
    sets = [tags for name, _, tags in run.v5_series() if name == "http_req_duration"]
    flows = {id(pair) for tags in sets for pair in tags if pair[0] == "flow"}
    assert len(sets) == 4 and len(flows) == 2
