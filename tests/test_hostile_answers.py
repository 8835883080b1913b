"""Answers no simulator run gives: ids past int64 in a metric, or strings of digits that
are not ASCII ('²' ended the job, '٣' was read as 3). The raw and points archives keep
them as the API wrote them; Parquet's int64 columns hold null, not an internal error
that ends the job."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from aiohttp import web

from harvester.config import load_settings
from harvester.job import harvest_job
from harvester.scheduler import RunTarget
from tests.harvest_helpers import serve

pq = pytest.importorskip("pyarrow.parquet")

HUGE = 2**63  # one past int64's largest


def v2_app(project_id: object) -> web.Application:
    """A v2 API with one run: one metric of `project_id`, one serie of one point."""
    metric = {"id": "aa", "name": "http_reqs", "type": "counter", "project_id": project_id,
              "tags": {"url": "x"}, "test_run_id": 1}  # fmt: skip
    serie = {"id": "s1", "metric_id": "aa", "method": "default",
             "values": [{"timestamp": "2024-06-01T00:00:00Z", "value": 1}]}  # fmt: skip
    answers = {
        "metrics": {"k6-metrics": [metric]},
        "series": {"k6-serie": [serie]},
        "thresholds": {"k6-metrics": [], "k6-thresholds": []},
        "run-overviews": {"k6-run-overviews": []},
    }
    app = web.Application()
    for name, answer in answers.items():
        body = orjson.dumps(answer)

        async def handler(_: web.Request, body: bytes = body) -> web.Response:
            return web.Response(body=body, content_type="application/json")

        app.router.add_get(f"/loadtests/v2/{name}", handler)
    return app


@pytest.mark.parametrize("project_id", [HUGE, 2**64 - 1, str(HUGE * 10), "²", "٣"])
async def test_an_id_past_int64_is_null_in_parquet_not_an_internal_error(
    tmp_path: Path, project_id: object
) -> None:
    async with serve(v2_app(project_id)) as base_url:
        settings = load_settings(
            {"base_url": base_url, "token": "t", "out": str(tmp_path), "format": "parquet",
             "rate": 1000},
            environ={},
        )  # fmt: skip
        result = await harvest_job(settings, [RunTarget(1)])
    assert [o.run_id for o in result.report.succeeded] == [1]
    [row] = pq.read_table(tmp_path / "1.parquet").to_pylist()
    assert row["project_id"] is None and row["value"] == 1.0
