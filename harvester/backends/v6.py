"""The v6 backend: runs from `/cloud/v6`, their data from the `/cloud/v5` metrics API.

For run N (`fetch`): the run object (`GET /cloud/v6/test_runs/N` unless discovery has
it; a run that is not final is not ready, an aborted one is harvested incomplete), then
side by side `GET /cloud/v5/test_runs/N/metrics` (a `metric` record each) and
`.../labels` (one request), then at once: one `query_range_k6` per metric name and
method, grouped by every label the run has (`series` records, each with the `query` that
made it), the two check aggregates (`check` records: passes and fails per check) and one
`query_aggregate_k6` per threshold (`threshold` records, computed here: see
`v6_thresholds.py`). Which requests those are is `v6_plan.py`'s. Requests share the
job's transport: rate gate, retries, 429 pause.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from ..channel import Channel
from ..config import Settings
from ..errors import HarvesterError
from ..moments import utc_moment
from ..records import Lines, encode
from ..transport import Transport
from . import v5_query, v5_series, v6_plan, v6_thresholds
from .v6_api import V6, JsonObject, NotReady, V6Api, readiness, resolve_stack
from .v6_discovery import discover_v6

if TYPE_CHECKING:
    from ..layout import Places
    from ..selection import Discovery, Selection
    from ..state import HarvestState


class V6RunFetch:
    """Fetches one run into the channel; `run()` returns the summary."""

    def __init__(
        self,
        api: V6Api,
        run_id: int,
        send: Channel,
        *,
        settings: Settings,
        slots: anyio.CapacityLimiter,
        parsers: anyio.CapacityLimiter,
    ) -> None:
        self.api, self.run_id, self._send = api, run_id, send
        self._step, self._methods = settings.step, settings.methods
        self._slots, self._parsers = slots, parsers
        self.counts: Counter[str] = Counter()

    async def _deliver(self, kind: str, data: bytes, count: int) -> None:
        if not count:
            return
        self.counts[kind] += count
        await self._send.send(Lines(self.run_id, data, Counter({kind: count})))

    async def emit(self, kind: str, items: list[Any]) -> None:
        await self._deliver(kind, encode(kind, self.run_id, items), len(items))

    async def run(self, run: JsonObject | None) -> dict[str, Any]:
        if run is None:
            run = await self.api.get_run(self.run_id)
        ready, reason = readiness(run)
        if not ready:
            raise NotReady(f"test run {self.run_id} is not ready to harvest ({reason})")
        await self.emit("run", [run])
        # Metrics and labels side by side: neither needs the other (one round trip less).
        found: dict[str, Any] = {}
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._keep, found, "metrics", self.api.metrics)
            tg.start_soon(self._keep, found, "labels", self.api.labels)
        await self.emit("metric", found["metrics"])
        types = v6_plan.metric_types(found["metrics"])
        jobs = self._series_jobs(types, v6_plan.grouping(found["labels"]))
        jobs += self._check_jobs(types)
        jobs += self._threshold_jobs(run, types)
        async with anyio.create_task_group() as tg:
            for job in jobs:
                tg.start_soon(self._slotted, job)
        await self.emit("check", self._check_records())
        await self.emit("threshold", self._thresholds)
        summary: dict[str, Any] = {"counts": dict(sorted(self.counts.items())), "step": self._step}
        if reason is not None:
            summary["incomplete_reason"] = reason
        return summary

    async def _slotted(self, job: Callable[[], Awaitable[None]]) -> None:
        """A query and the delivery of its records hold a slot: while the writer lags,
        at most `--concurrency` answers wait in memory."""
        async with self._slots:
            await job()

    async def _keep(
        self, into: dict[str, Any], key: str, get: Callable[[int], Awaitable[Any]]
    ) -> None:
        into[key] = await get(self.run_id)

    def _series_jobs(
        self, types: dict[str, str], labels: Sequence[str]
    ) -> list[Callable[[], Awaitable[None]]]:
        unknown = sorted(
            f"{n} ({t})" for n, t in types.items() if t not in v5_query.DEFAULT_METHODS
        )
        if unknown:  # no query fits them: their series would be missing, silently
            raise HarvesterError(
                f"metrics of a type v5 has no queries for: {', '.join(unknown)}; a harvester "
                "that knows the type is needed (counter, gauge, rate and trend are known)"
            )
        asked = [m for m in self._methods if m != "default"]
        for name in asked:
            if not any(v5_query.v5_method(name, t) for t in types.values()):
                raise HarvesterError(f"--method {name!r} fits no metric type of this run")
        queries = v6_plan.series_queries(self.run_id, types, labels, self._methods, self._step)
        if queries and (odd := v5_query.unwritable(labels)):
            self._refuse_labels(odd, labels, queries[0][1])
        return [self._series_job(name, method, path) for name, method, path in queries]

    def _refuse_labels(self, odd: list[str], labels: Sequence[str], method: str) -> None:
        """Fail the run before its queries, each of which v5 would refuse (HTTP 400): the
        series are asked grouped by every label, and leaving one out would merge the
        series it tells apart."""
        shown = ", ".join(repr(name) for name in odd)
        raise HarvesterError(
            f"v5_labels {v5_query.V5}/{self.run_id}/labels: the run's label {shown} cannot be "
            f"written in a v5 query ('{v5_query.by_labels(method, labels)}': a label name is "
            "letters, digits and _, not first a digit, and v5 has no quoting for one), so its "
            "series cannot be asked for"
        )

    def _series_job(self, name: str, method: str, path: str) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            envelope = {"method": method, "metric": name, "step": self._step}
            spill = v5_series.spilled(self.run_id, envelope, self._parsers)
            got = await self.api.raw_result("v5_query", path, spill)
            if isinstance(got, v5_series.SpilledSeries):
                chunks = got.chunks()
            else:
                chunks = v5_series.series_chunks(self.run_id, envelope, got)
            for data, count in chunks:
                await self._deliver("series", data, count)

        return job

    def _check_jobs(self, types: dict[str, str]) -> list[Callable[[], Awaitable[None]]]:
        """The passes and the fails aggregates, each its own request, side by side."""
        self._checks: dict[str, dict[str, float]] = {}

        def job(key: str, path: str) -> Callable[[], Awaitable[None]]:
            async def ask() -> None:
                for entry in await self.api.result("v5_query", path):
                    labels = entry.get("metric")  # (`result`: each entry an object)
                    check = str(labels.get("check", "")) if isinstance(labels, dict) else ""
                    row = self._checks.setdefault(check, {"passes": 0.0, "fails": 0.0})
                    row[key] += v6_thresholds.first_value([entry]) or 0.0

            return ask

        return [job(key, path) for key, path in v6_plan.check_paths(self.run_id, types)]

    def _check_records(self) -> list[JsonObject]:
        return [{"check": name, "passes": row["passes"], "fails": row["fails"]}
                for name, row in sorted(self._checks.items())]  # fmt: skip

    def _threshold_jobs(
        self, run: JsonObject, types: dict[str, str]
    ) -> list[Callable[[], Awaitable[None]]]:
        """One aggregate per threshold; its record takes the threshold's place in order."""
        plans = v6_plan.threshold_plans(run, types)
        seconds = _duration(run)
        self._thresholds: list[JsonObject] = [{} for _ in plans]

        def job(at: int, plan: v6_thresholds.Plan) -> Callable[[], Awaitable[None]]:
            async def evaluate() -> None:
                path = v6_plan.threshold_path(self.run_id, plan)
                result = await self.api.result("v5_query", path) if path else []
                self._thresholds[at] = v6_thresholds.verdict(plan, result, seconds)

            return evaluate

        return [job(at, plan) for at, plan in enumerate(plans)]


def _duration(run: JsonObject) -> float:
    """The run's duration, `ended - created`, in seconds (0 when unknown). Read as every
    API time is (`utc_moment`: no zone is UTC): one time with a zone and one without was
    an internal error (TypeError) that ended the job."""
    created, ended = utc_moment(run.get("created")), utc_moment(run.get("ended"))
    if created is None or ended is None:
        return 0.0
    return max(0.0, (ended - created).total_seconds())


class V6Fetcher:
    """The v6 backend's `RunFetcher`: one `V6RunFetch` per run, all on one transport,
    one set of `--concurrency` query slots and `v5_series.PARSERS` parsing threads."""

    def __init__(self, transport: Transport, settings: Settings) -> None:
        v5_query.check_methods(settings.methods)
        self.api = V6Api(transport)
        self._settings = settings
        self._slots = anyio.CapacityLimiter(settings.concurrency)
        self._parsers = anyio.CapacityLimiter(v5_series.PARSERS)

    async def run_object(self, run_id: int) -> JsonObject:
        return await self.api.get_run(run_id)

    async def fetch(self, run_id: int, run: JsonObject | None, send: Channel) -> dict[str, Any]:
        fetch = V6RunFetch(
            self.api, run_id, send, settings=self._settings, slots=self._slots,
            parsers=self._parsers,
        )  # fmt: skip
        return await fetch.run(run)


class V6Backend:
    """`base.Backend` for `/cloud/v6` runs and `/cloud/v5` metrics."""

    def __init__(self, settings: Settings, transport: Transport) -> None:
        self.settings = settings
        self.transport = transport
        self.api = V6Api(transport)

    async def prepare(self) -> None:
        await resolve_stack(self.transport, self.settings)

    async def discover(self, selection: Selection, *, state: HarvestState | None) -> Discovery:
        parallel = self.settings.concurrency
        return await discover_v6(self.api, selection, parallel=parallel, state=state)

    def fetcher(self, places: Places | None = None, spool: Path | None = None) -> V6Fetcher:
        return V6Fetcher(self.transport, self.settings)  # v6 writes no files of its own

    async def project_rows(self, only: Sequence[int]) -> list[JsonObject]:
        """The stack's projects (`only` is refused by the settings: v6 has no
        organizations) (`/cloud/v6/projects`, paged), each with its number of
        load tests (`@count`); the stack stands where v2 has the organization."""
        top = min(self.settings.page_size, 1000)
        projects = await self.api.pages("v6_projects", f"{V6}/projects", {}, top)
        stack = self.transport.stack_id
        named = self.settings.stack_url or f"stack {stack}"
        rows = [{"organization_id": stack, "organization": named,
                 "project_id": p.get("id"), "project": p.get("name"), "tests": None}
                for p in projects]  # fmt: skip
        slots = anyio.CapacityLimiter(self.settings.concurrency)

        async def count_tests(row: JsonObject) -> None:
            async with slots:
                path = f"{V6}/projects/{row['project_id']}/load_tests"
                row["tests"] = await self.api.count("v6_tests", path)

        async with anyio.create_task_group() as tg:
            for row in rows:
                tg.start_soon(count_tests, row)
        return rows

    async def after_job(self) -> None:
        return None  # a v6 401/403 already ended the job (`Transport`)

    def minimum_paths(
        self, run: JsonObject, metrics: Sequence[JsonObject], labels: Sequence[str], *,
        discovered: bool,
    ) -> list[str]:  # fmt: skip
        """Every path harvesting `run` takes, for the bench (`v6_plan.minimum_paths`)."""
        s = self.settings
        return v6_plan.minimum_paths(
            run, metrics, labels, methods=s.methods, step=s.step, discovered=discovered
        )
