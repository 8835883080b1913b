"""A point's value in the formats that flatten series (points, Parquet, Singer): one rule
(`formats.pointvalue`), a finite number or null, whatever the API sent; raw keeps it."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft4Validator

from harvester.formats.pointvalue import point_value
from harvester.formats.singer import STREAMS
from harvester.job import harvest_job
from harvester.scheduler import RunTarget
from harvester.simulator.cloud import SimCloud
from harvester.simulator.generated import GeneratedRun
from harvester.simulator.model import JsonObject
from harvester.simulator.server import Simulator
from tests.harvest_helpers import parse_lines, settings_for

pq = pytest.importorskip("pyarrow.parquet")

RUN = 100001
#: What the simulator serves as the first values of every serie, and what a point holds.
SENT_AND_HELD: list[tuple[Any, Any]] = [
    (True, None),
    (False, None),
    ("abc", None),
    (None, None),
    ("NaN", None),
    ("Infinity", None),
    ("-Inf", None),
    ("1e999", None),
    ({"v": 1}, None),
    ([2], None),
    ("", None),
    ("1.5", 1.5),
    (" -2e3 ", -2000.0),
    (7, 7),
    (0.25, 0.25),
]


@pytest.mark.parametrize(("sent", "held"), SENT_AND_HELD)
def test_a_point_value_is_a_finite_number_or_null(sent: Any, held: Any) -> None:
    got = point_value(sent)
    assert got == held and type(got) is type(held)


class OddValues(GeneratedRun):
    """A generated run whose every serie starts with the values of `SENT_AND_HELD`."""

    def serie(self, metric_id: str, method: str | None) -> JsonObject | None:
        serie = super().serie(metric_id, method)
        if serie is not None:
            for point, (sent, _) in zip(serie["values"], SENT_AND_HELD, strict=False):
                point["value"] = sent
        return serie


def by_time(rows: list[dict[str, Any]]) -> dict[tuple[Any, str], list[Any]]:
    """Each serie's values in time order, by (metric, method)."""
    series: dict[tuple[Any, str], list[tuple[datetime, Any]]] = {}
    for row in rows:
        moment = row["time"]
        if isinstance(moment, str):
            moment = datetime.fromisoformat(moment).astimezone(UTC)
        series.setdefault((row["metric"], row["method"]), []).append((moment, row["value"]))
    return {key: [value for _, value in sorted(pairs)] for key, pairs in series.items()}


async def test_points_parquet_and_singer_hold_the_same_value_for_what_is_not_a_number(
    tmp_path: Path,
) -> None:
    cloud = SimCloud()
    cloud.add_run(OddValues(RUN, metrics=3, points=len(SENT_AND_HELD) + 2))
    methods = ["default", "max"]
    async with Simulator(cloud) as sim:
        for fmt in ("raw", "points", "parquet"):
            settings = settings_for(sim, tmp_path / fmt, format=fmt, methods=methods)
            assert not (await harvest_job(settings, [RunTarget(RUN)])).report.failed
        out = io.BytesIO()
        singer = settings_for(sim, "-", format="singer", methods=methods)
        assert not (await harvest_job(singer, [RunTarget(RUN)], stdout=out)).report.failed

    raw = parse_lines((tmp_path / "raw" / f"{RUN}.ndjson").read_bytes())
    series = [r["data"]["values"] for r in raw if r["type"] == "series"]
    assert len(series) == 3 * len(methods)
    sent = [sent for sent, _ in SENT_AND_HELD]
    assert all([p["value"] for p in values[: len(sent)]] == sent for values in series)

    points = parse_lines((tmp_path / "points" / f"{RUN}.points.ndjson").read_bytes())
    held = [held for _, held in SENT_AND_HELD]
    flat = by_time(points)
    assert len(flat) == len(series)
    for values in flat.values():
        assert values[: len(held)] == held
    assert all(type(p["value"]) in (int, float, type(None)) for p in points)

    rows = pq.ParquetFile(tmp_path / "parquet" / f"{RUN}.parquet").read().to_pylist()
    as_floats = {k: [None if v is None else float(v) for v in vs] for k, vs in flat.items()}
    assert by_time(rows) == as_floats

    messages = parse_lines(out.getvalue())
    singer_rows = [m["record"] for m in messages if m.get("stream") == "points" and "record" in m]
    assert by_time(singer_rows) == flat
    schema = Draft4Validator(STREAMS["points"][0])
    assert all(schema.is_valid(row) for row in singer_rows)
