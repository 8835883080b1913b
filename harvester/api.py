"""What to ask the k6 Cloud REST API v2 (and v3 for organizations and projects), and what
its answers must look like.

The client knows paths, parameters and response shapes; `transport.py` knows how bytes
move. A v6 backend would be another class with the same methods beside this one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlencode

import anyio
from yarl import URL

from .answers import the_run_asked
from .batching import series_query
from .paging import Page
from .series_answers import (
    SeriesAnswer,
    packed_series_answer,
    series_answer,
    texts_series_answer,
)
from .transport import Transport
from .wire import short_url

JsonObject = dict[str, Any]
V2 = "/loadtests/v2"
ORGANIZATIONS = "/v3/organizations"
DETAIL_INCLUDES = ("url", "group", "check")


def _list_of(doc: Any, key: str) -> list[JsonObject]:
    """`doc[key]`, which the transport checked is a list of objects (`lists=`)."""
    value: list[JsonObject] = doc[key]
    return value


class CloudApi:
    """The v2 endpoints the harvester uses; every call goes through one `Transport`."""

    def __init__(self, transport: Transport, *, output_format: str = "raw") -> None:
        """`output_format`: series answers packed for the Parquet or the points writer
        (`--format parquet`, `points`), else kept as the API's texts."""
        self.transport = transport
        parsers = {"parquet": packed_series_answer, "points": texts_series_answer}
        self._series_parser = parsers.get(output_format, series_answer)
        #: The series methods (None: the API's default) some series request was answered
        #: with in this job: a refusal of one of them is about a run, not the method.
        self.methods_answered: set[str | None] = set()
        #: Points of the longest serie of the last run measured: how long to expect a new
        #: run's series to be before its own first answer says.
        self.serie_points: int | None = None
        #: Held by the one run that asks the job's first series, which sizes everyone's.
        self.first_series = anyio.Lock()

    def series_url(self, run_id: int, ids: Sequence[str], method: str | None) -> URL:
        return self.transport.url(f"{V2}/series", series_query(run_id, ids, method))

    @staticmethod
    def request_target_length(url: URL) -> int:
        """Length of what goes on the request line: path and query, as encoded."""
        return len(url.raw_path_qs)

    async def list_metrics(self, run_id: int) -> list[JsonObject]:
        url = self.transport.url(f"{V2}/metrics", f"test_run_id={run_id}")
        return _list_of(await self.transport.get("metrics", url, ("k6-metrics",)), "k6-metrics")

    async def series(self, url: URL, method: str | None) -> SeriesAnswer:
        """One batch of series, each as the API sent it (`series_answers.series_answer`) or packed
        (`packed_series_answer`, `texts_series_answer`); build `url` with `series_url` (the batcher
        measures it)."""
        answer: SeriesAnswer = await self.transport.get("series", url, parse=self._series_parser)
        self.methods_answered.add(method)
        return answer

    async def thresholds(self, run_id: int) -> tuple[list[JsonObject], list[JsonObject]]:
        url = self.transport.url(f"{V2}/thresholds", f"test_run_id={run_id}")
        doc = await self.transport.get("thresholds", url, ("k6-metrics", "k6-thresholds"))
        return _list_of(doc, "k6-metrics"), _list_of(doc, "k6-thresholds")

    async def overviews(self, run_id: int) -> list[JsonObject]:
        url = self.transport.url(f"{V2}/run-overviews", f"test_run_id={run_id}")
        doc = await self.transport.get("overview", url, ("k6-run-overviews",))
        return _list_of(doc, "k6-run-overviews")

    async def metric_detail(self, run_id: int, metric_id: str) -> JsonObject:
        query = urlencode([("test_run_id", run_id), *(("include[]", i) for i in DETAIL_INCLUDES)])
        url = self.transport.url(f"{V2}/metrics/{quote(metric_id, safe='')}", query)
        doc: JsonObject = await self.transport.get("metric_detail", url, objects=("k6-metric",))
        return doc

    async def get_run(self, run_id: int) -> JsonObject:
        run = await self._object("run", f"{V2}/runs/{run_id}", "k6-run")
        the_run_asked(run, run_id, "run", lambda: f"{V2}/runs/{run_id}")
        return run

    async def get_test(self, test_id: int) -> JsonObject:
        return await self._object("test", f"{V2}/tests/{test_id}", "k6-test")

    async def _object(self, endpoint: str, path: str, key: str) -> JsonObject:
        doc = await self.transport.get(endpoint, self.transport.url(path), objects=(key,))
        found: JsonObject = doc[key]
        return found

    async def list_tests(self, project_id: int, page: int, page_size: int) -> Page:
        query = urlencode({"project_id": project_id, "page": page, "page_size": page_size})
        return await self._page("tests", f"{V2}/tests", query, "k6-tests")

    async def list_runs(self, test_id: int, page: int, page_size: int) -> Page:
        query = urlencode({"test_id": test_id, "page": page, "page_size": page_size})
        return await self._page("runs", f"{V2}/runs", query, "k6-runs")

    async def list_organizations(self, page: int, page_size: int) -> Page:
        query = urlencode({"page": page, "page_size": page_size})
        return await self._page("organizations", ORGANIZATIONS, query, "organizations")

    async def list_projects(self, organization_id: int, page: int, page_size: int) -> Page:
        query = urlencode({"page": page, "page_size": page_size})
        path = f"{ORGANIZATIONS}/{organization_id}/projects"
        return await self._page("projects", path, query, "projects")

    async def _page(self, endpoint: str, path: str, query: str, key: str) -> Page:
        url = self.transport.url(path, query)
        doc = await self.transport.get(endpoint, url, (key,))
        meta = doc.get("meta")
        count = meta.get("count") if isinstance(meta, dict) else None
        counted = count if isinstance(count, int) else None
        return Page(_list_of(doc, key), counted, f"{endpoint} {short_url(url)}")
