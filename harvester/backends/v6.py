"""The v6 backend: runs from `/cloud/v6`, their data from the `/cloud/v5` metrics API.

For run N (`fetch`): the run object (`GET /cloud/v6/test_runs/N` unless discovery has
it; a run that is not final is not ready, an aborted one is harvested incomplete), then
`GET /cloud/v5/test_runs/N/metrics` (a `metric` record each) and `.../labels` (one
request), then at once: one `query_range_k6` per metric name and method, grouped by
every label the run has (`series` records, each with the `query` that made it), the two
check aggregates (`check` records: passes and fails per check) and one
`query_aggregate_k6` per threshold (`threshold` records, computed here: see
`v6_thresholds.py`). Requests share the job's transport: rate gate, retries, 429 pause.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import anyio
import orjson
from anyio.streams.memory import MemoryObjectSendStream

from ..config import Settings
from ..errors import ApiStatusError, HarvesterError, NotFound
from ..records import Lines, Message, encode
from ..transport import Transport
from . import v5_query, v6_thresholds

JsonObject = dict[str, Any]
V6 = "/cloud/v6"
MAX_TOP = 1000
FINAL = ("completed", "aborted")


class NotReady(HarvesterError):
    """A run asked for by id that is not final yet: not harvested (exit 1)."""


def readiness(run: JsonObject) -> tuple[bool, str | None]:
    """(harvest it now, the incomplete reason): completed runs are complete, aborted runs
    are harvested incomplete with the reason v6 gives, any other status waits."""
    status = run.get("status")
    if status == "completed":
        return True, None
    if status == "aborted":
        details = run.get("status_details") or {}
        extra = details.get("extra") if isinstance(details, dict) else None
        said = extra.get("message") if isinstance(extra, dict) else None
        return True, f"the test run was aborted ({said or 'no reason given'})"
    return False, f"not finished: status {status}"


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


class V6Api:
    """The v6 and v5 endpoints the harvester uses, over one `Transport`."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    async def get_run(self, run_id: int) -> JsonObject:
        url = self.transport.url(f"{V6}/test_runs/{run_id}")
        doc = await self.transport.get("v6_run", url)
        if not isinstance(doc, dict) or not isinstance(doc.get("id"), int):
            raise ApiStatusError("unexpected answer: no test run object", url=str(url))
        return doc

    async def pages(
        self, endpoint: str, path: str, params: dict[str, str], top: int
    ) -> list[JsonObject]:
        """Every row of a listing: `$skip` advances by the rows received, until
        `@nextLink` is absent (an empty page that still links on is an error)."""
        rows: list[JsonObject] = []
        while True:
            query = urlencode({**params, "$top": top, "$skip": len(rows)}, safe="$:")
            url = self.transport.url(path, query)
            doc = await self.transport.get(endpoint, url)
            value = doc.get("value") if isinstance(doc, dict) else None
            if not isinstance(value, list):
                raise ApiStatusError("unexpected answer: no 'value' list", url=str(url))
            rows += value
            if not doc.get("@nextLink"):
                return rows
            if not value:
                raise ApiStatusError("an empty page that links to another", url=str(url))

    async def _v5(self, endpoint: str, path: str) -> Any:
        url = self.transport.url(path)
        try:
            return await self.transport.get(endpoint, url)
        except NotFound as exc:
            raise ApiStatusError(
                f"{exc} (v5 answers 404 only for a URL it cannot parse: a harvester bug, "
                "please report it)",
                status=404,
                url=exc.url,
            ) from exc

    async def metrics(self, run_id: int) -> list[JsonObject]:
        doc = await self._v5("v5_metrics", f"{v5_query.V5}/{run_id}/metrics")
        value = doc.get("value") if isinstance(doc, dict) else None
        if not isinstance(value, list):
            raise ApiStatusError("unexpected answer: no metrics 'value' list")
        return value

    async def labels(self, run_id: int) -> list[str]:
        doc = await self._v5("v5_labels", f"{v5_query.V5}/{run_id}/labels")
        data = doc.get("data") if isinstance(doc, dict) else None
        if not isinstance(data, list):
            raise ApiStatusError("unexpected answer: no labels 'data' list")
        return [str(label) for label in data]

    async def result(self, endpoint: str, path: str) -> list[JsonObject]:
        doc = await self._v5(endpoint, path)
        data = doc.get("data") if isinstance(doc, dict) else None
        result = data.get("result") if isinstance(data, dict) else None
        if not isinstance(result, list):
            raise ApiStatusError("unexpected answer: no 'data.result' list")
        return result


def encode_series(run_id: int, query: JsonObject, entries: list[JsonObject]) -> bytes:
    """`series` lines: the result entry unchanged as `data`, the `query` beside it."""
    option = orjson.OPT_APPEND_NEWLINE
    return b"".join(
        orjson.dumps({"type": "series", "test_run_id": run_id, "query": query, "data": e},
                     option=option)
        for e in entries
    )  # fmt: skip


class V6RunFetch:
    """Fetches one run into the channel; `run()` returns the summary."""

    def __init__(
        self,
        api: V6Api,
        run_id: int,
        send: MemoryObjectSendStream[Message],
        *,
        settings: Settings,
        slots: anyio.CapacityLimiter,
    ) -> None:
        self.api, self.run_id, self._send = api, run_id, send
        self._step, self._methods = settings.step, settings.methods
        self._slots = slots
        self.counts: Counter[str] = Counter()

    async def _deliver(self, kind: str, data: bytes, count: int) -> None:
        if not count:
            return
        self.counts[kind] += count
        lines = Lines(self.run_id, data, Counter({kind: count}))
        with contextlib.suppress(anyio.WouldBlock):
            self._send.send_nowait(lines)
            return
        await self._send.send(lines)

    async def emit(self, kind: str, items: list[Any]) -> None:
        await self._deliver(kind, encode(kind, self.run_id, items), len(items))

    async def run(self, run: JsonObject | None) -> dict[str, Any]:
        if run is None:
            run = await self.api.get_run(self.run_id)
        ready, reason = readiness(run)
        if not ready:
            raise NotReady(f"test run {self.run_id} is not ready to harvest ({reason})")
        await self.emit("run", [run])
        metrics = await self.api.metrics(self.run_id)
        await self.emit("metric", metrics)
        labels = await self.api.labels(self.run_id)
        grouped = [name for name in labels if name not in ("__name__", "test_run_id")]
        types = {str(m["name"]): str(m["type"]) for m in metrics if "name" in m and "type" in m}
        jobs = self._series_jobs(types, grouped)
        async with anyio.create_task_group() as tg:
            for job in jobs:
                tg.start_soon(self._slotted, job)
            if "checks" in types:
                tg.start_soon(self._slotted, self._checks)
            tg.start_soon(self._thresholds, run, types)
        summary: dict[str, Any] = {"counts": dict(sorted(self.counts.items())), "step": self._step}
        if reason is not None:
            summary["incomplete_reason"] = reason
        return summary

    async def _slotted(self, job: Callable[[], Awaitable[None]]) -> None:
        async with self._slots:
            await job()

    def _series_jobs(
        self, types: dict[str, str], labels: Sequence[str]
    ) -> list[Callable[[], Awaitable[None]]]:
        asked = [m for m in self._methods if m != "default"]
        for name in asked:
            if not any(v5_query.v5_method(name, t) for t in types.values()):
                raise HarvesterError(f"--method {name!r} fits no metric type of this run")
        return [
            self._series_job(name, method, labels)
            for name, metric_type in types.items()
            for method in v5_query.methods_of(metric_type, self._methods)
        ]

    def _series_job(
        self, name: str, method: str, labels: Sequence[str]
    ) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            query = v5_query.by_labels(method, labels)
            path = v5_query.range_path(self.run_id, query, name, self._step)
            entries = await self.api.result("v5_query", path)
            envelope = {"method": method, "metric": name, "step": self._step}
            await self._deliver("series", encode_series(self.run_id, envelope, entries),
                                len(entries))  # fmt: skip

        return job

    async def _checks(self) -> None:
        counts: dict[str, dict[str, float]] = {}
        for method, key in (("increase_nz", "passes"), ("increase_z", "fails")):
            query = v5_query.by_labels(method, ["check"])
            path = v5_query.aggregate_path(self.run_id, query, "checks")
            for entry in await self.api.result("v5_query", path):
                check = str(entry.get("metric", {}).get("check", ""))
                value = v6_thresholds.first_value([entry]) or 0.0
                row = counts.setdefault(check, {"passes": 0.0, "fails": 0.0})
                row[key] += value
        records = [{"check": name, "passes": row["passes"], "fails": row["fails"]}
                   for name, row in sorted(counts.items())]  # fmt: skip
        await self.emit("check", records)

    async def _thresholds(self, run: JsonObject, types: dict[str, str]) -> None:
        options = run.get("options") or {}
        configured = options.get("thresholds") if isinstance(options, dict) else None
        if not isinstance(configured, dict):
            return
        seconds = _duration(run)
        records: list[JsonObject] = []

        async def evaluate(plan: v6_thresholds.Plan, at: int) -> None:
            result: list[Any] = []
            if plan.method is not None and plan.metric is not None:
                path = v5_query.aggregate_path(self.run_id, plan.method, plan.metric)
                async with self._slots:
                    result = await self.api.result("v5_query", path)
            records[at] = v6_thresholds.verdict(plan, result, seconds)

        plans = [v6_thresholds.plan(key, item, types)
                 for key, items in configured.items()
                 for item in (items if isinstance(items, list) else [items])]  # fmt: skip
        records.extend({} for _ in plans)
        async with anyio.create_task_group() as tg:
            for at, plan in enumerate(plans):
                tg.start_soon(evaluate, plan, at)
        await self.emit("threshold", records)


def _duration(run: JsonObject) -> float:
    """The run's duration, `ended - created`, in seconds (0 when unknown)."""
    try:
        created = datetime.fromisoformat(str(run["created"]).replace("Z", "+00:00"))
        ended = datetime.fromisoformat(str(run["ended"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return 0.0
    return max(0.0, (ended - created).total_seconds())


class V6Fetcher:
    """The v6 backend's `RunFetcher`: one `V6RunFetch` per run, all on one transport."""

    def __init__(self, transport: Transport, settings: Settings) -> None:
        v5_query.check_methods(settings.methods)
        self.api = V6Api(transport)
        self._settings = settings
        self._slots = anyio.CapacityLimiter(settings.concurrency)

    async def run_object(self, run_id: int) -> JsonObject:
        return await self.api.get_run(run_id)

    async def fetch(
        self, run_id: int, run: JsonObject | None, send: MemoryObjectSendStream[Message]
    ) -> dict[str, Any]:
        fetch = V6RunFetch(self.api, run_id, send, settings=self._settings, slots=self._slots)
        return await fetch.run(run)


async def resolve_stack(transport: Transport, settings: Settings) -> None:
    """With `--stack-url` and no stack id: ask `GET /cloud/v6/auth` once for the id."""
    if settings.api != "v6" or transport.stack_id is not None or not settings.stack_url:
        return
    url = transport.url(f"{V6}/auth")
    doc = await transport.get("v6_auth", url, headers={"X-Stack-Url": settings.stack_url})
    stack = doc.get("stack_id") if isinstance(doc, dict) else None
    if not isinstance(stack, int):
        raise ApiStatusError(f"no stack id for {settings.stack_url} in the answer", url=str(url))
    transport.stack_id = stack


async def make_fetcher(settings: Settings, transport: Transport) -> V6Fetcher | None:
    """The job's backend: None for v2 (the scheduler's own), else v6 with its stack."""
    if settings.api != "v6":
        return None
    fetcher = V6Fetcher(transport, settings)
    await resolve_stack(transport, settings)
    return fetcher
