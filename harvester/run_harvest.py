"""Everything the API knows about one test run, fetched and sent to the writer as records.

For run N: the metrics list, then concurrently the series in URL-length batches (for each
aggregation method asked), the thresholds and the overview, and with `--details` one
detail request per metric. The ids asked are compared with the `metric_id`s returned; the
missing ids are asked once more, together, and any still absent is named in the summary.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from .api import CloudApi, JsonObject
from .batching import SeriesBatcher
from .errors import ApiStatusError, UrlTooLong
from .records import Lines, Message, encode

#: The `--method` value that asks for the API's default aggregation.
DEFAULT_METHOD = "default"


class RunHarvest:
    """Fetches one run; `run()` returns the summary counts once every record is sent."""

    def __init__(
        self,
        api: CloudApi,
        run_id: int,
        send: MemoryObjectSendStream[Message],
        *,
        max_url_length: int,
        methods: Sequence[str] = (),
        details: bool = False,
        batch_slots: anyio.CapacityLimiter,
    ) -> None:
        self.api = api
        self.run_id = run_id
        self._send = send
        self._batcher = SeriesBatcher(max_url_length)
        # "default" names the API's own aggregation: the request carries no `method`.
        asked = dict.fromkeys(None if m == DEFAULT_METHOD else m for m in methods)
        self._methods: Sequence[str | None] = tuple(asked) or (None,)
        self._details = details
        self._slots = batch_slots
        self.counts: Counter[str] = Counter()
        self.missing: list[dict[str, Any]] = []

    async def emit(self, kind: str, items: Iterable[Any]) -> None:
        lines = self.encode(kind, list(items))
        if lines is not None:
            await self.deliver(lines)

    def encode(self, kind: str, items: list[Any]) -> Lines | None:
        """The records' lines, counted; None when there are none."""
        if not items:
            return None
        self.counts[kind] += len(items)
        return Lines(self.run_id, encode(kind, self.run_id, items), Counter({kind: len(items)}))

    async def deliver(self, lines: Lines) -> None:
        """Hand lines to the writer; waits only while the channel is full."""
        with contextlib.suppress(anyio.WouldBlock):
            # `send` always yields first, even with room; this does not.
            self._send.send_nowait(lines)
            return
        await self._send.send(lines)

    async def run(self, run_object: JsonObject | None = None) -> dict[str, Any]:
        if run_object is not None:
            await self.emit("run", [run_object])
        metrics = await self.api.list_metrics(self.run_id)
        await self.emit("metric", metrics)
        ids = list(dict.fromkeys(m["id"] for m in metrics if isinstance(m.get("id"), str)))
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._thresholds)
            tg.start_soon(self._overview)
            for method in self._methods:
                tg.start_soon(self._series, ids, method)
            if self._details:
                tg.start_soon(self._metric_details, ids)
        return {
            "counts": dict(sorted(self.counts.items())),  # reproducible byte for byte
            "missing_series": self.missing,
            "url_cap": self._batcher.cap,
        }

    async def _thresholds(self) -> None:
        # The metrics the thresholds are on: a threshold's `metric_id` names one of them.
        metrics, thresholds = await self.api.thresholds(self.run_id)
        await self.emit("threshold_metric", metrics)
        await self.emit("threshold", thresholds)

    async def _overview(self) -> None:
        await self.emit("overview", await self.api.overviews(self.run_id))

    async def _metric_details(self, ids: list[str]) -> None:
        """One request per metric, a few at a time: a fixed pool of tasks shares the ids,
        so a run of 10,000 metrics does not become 10,000 waiting tasks."""
        pending = iter(ids)

        async def fetch_some() -> None:
            for metric_id in pending:
                async with self._slots:
                    detail = await self.api.metric_detail(self.run_id, metric_id)
                await self.emit("metric_detail", [detail])

        async with anyio.create_task_group() as tg:
            for _ in range(min(len(ids), int(self._slots.total_tokens))):
                tg.start_soon(fetch_some)

    # --- series ---------------------------------------------------------------------

    def _fixed_length(self, method: str | None) -> int:
        """Length of a series request target with no ids."""
        return self.api.request_target_length(self.api.series_url(self.run_id, [], method))

    async def _series(self, ids: list[str], method: str | None) -> None:
        returned: set[str] = set()
        failed: set[str] = set()

        def gaps() -> list[str]:
            return [i for i in ids if i not in returned and i not in failed]

        await self._batches(ids, method, returned, failed)
        # Once every planned batch is in, the ids no answer held are asked again together
        # (a gap may be a glitch in one answer): one more batch, not one request per id.
        await self._batches(gaps(), method, returned, failed)
        self.missing += [{"metric_id": i, "method": method} for i in gaps()]

    async def _batches(
        self, ids: list[str], method: str | None, returned: set[str], failed: set[str]
    ) -> None:
        """`ids` in as few requests as fit under the URL cap, all at once."""
        async with anyio.create_task_group() as tg:
            for batch in self._batcher.plan(ids, self._fixed_length(method)):
                tg.start_soon(self._batch, batch, method, returned, failed)

    async def _batch(
        self, ids: list[str], method: str | None, returned: set[str], failed: set[str]
    ) -> None:
        url = self.api.series_url(self.run_id, ids, method)
        length = self.api.request_target_length(url)
        if length > self._batcher.cap and len(ids) > 1:
            # Planned before the cap was lowered by a 414: re-pack under the cap learned.
            for part in self._batcher.plan(ids, self._fixed_length(method)):
                await self._batch(part, method, returned, failed)
            return
        try:
            async with self._slots:
                series = await self.api.series(url)
                returned.update(str(s.get("metric_id")) for s in series)
                lines = self.encode("series", series)
                # The parsed answer is ~5x its body in objects: free it before we may wait
                # on a full channel, so a slow disk or pipe costs encoded bytes only.
                del series
                if lines is not None:
                    await self.deliver(lines)
        except UrlTooLong:
            if len(ids) == 1:
                raise
            self._batcher.learn_too_long(length, self._fixed_length(method))
            await self._halves(ids, method, returned, failed)
        except ApiStatusError as exc:
            if len(ids) > 1:
                # Not about length: find the one id the server objects to by bisection.
                await self._halves(ids, method, returned, failed)
                return
            failed.add(ids[0])
            error = {
                "metric_id": ids[0],
                "method": method,
                "status": exc.status,
                "message": str(exc),
            }
            await self.emit("error", [error])

    async def _halves(
        self, ids: list[str], method: str | None, returned: set[str], failed: set[str]
    ) -> None:
        middle = len(ids) // 2
        await self._batch(ids[:middle], method, returned, failed)
        await self._batch(ids[middle:], method, returned, failed)
