"""Everything the API knows about one test run, fetched and sent to the writer as records.

For run N: the metrics list, then concurrently the series in batches sized by the URL cap
and by their points (for each aggregation method asked), the thresholds and the overview,
and with `--details` one detail request per metric. The ids asked are compared with the
`metric_id`s returned; the missing ids are asked once more, together, and any still absent
is named in the summary.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from .api import CloudApi, JsonObject
from .batching import PROBE_IDS, SeriesBatcher
from .channel import Channel
from .errors import ApiStatusError, MethodRefused, RequestRefused, UrlTooLong
from .methods import DEFAULT_METHOD
from .records import Chunk, Lines, encode, encode_texts
from .tables import plural


class RunHarvest:
    """Fetches one run; `run()` returns the summary counts once every record is sent."""

    def __init__(
        self,
        api: CloudApi,
        run_id: int,
        send: Channel,
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
        return self._lines(kind, len(items), encode(kind, self.run_id, items))

    def _lines(self, kind: str, count: int, data: Chunk) -> Lines:
        self.counts[kind] += count
        return Lines(self.run_id, data, Counter({kind: count}))

    async def deliver(self, lines: Lines) -> None:
        """Hand lines to the writer; waits only while the channel is full."""
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
        asked = _Asked(method)
        await self._batches(await self._first(ids, asked), asked)
        # Once every planned batch is in, the ids no answer held are asked again together
        # (a gap may be a glitch in one answer): one more batch, not one request per id.
        await self._batches(asked.gaps(ids), asked)
        if asked.refused and not asked.returned:
            # Not one serie came back: an archive of error records is not a harvest.
            last = next(reversed(asked.refused.values()))
            raise ApiStatusError(
                f"every series id{_with(method)} was refused "
                f"({plural(len(asked.refused), 'id')}; "
                f"last: {last})",
                status=last.status,
            )
        self.missing += [{"metric_id": i, "method": method} for i in asked.gaps(ids)]

    async def _first(self, ids: list[str], asked: _Asked) -> list[str]:
        """Ask one small batch first: its answer says how long this run's series are, and
        the others are sized to that before they are asked (a 20,000-point serie is ~1 MB:
        185 of them in one answer took gigabytes). Returns the ids not asked yet.

        While the job knows nothing of series lengths, one run at a time asks at most
        `PROBE_IDS` ids; the others wait for its answer and plan by it."""
        if self.api.serie_points is None:
            async with self.api.first_series:
                if self.api.serie_points is None:
                    return await self._ask_first(ids, asked, PROBE_IDS)
        return await self._ask_first(ids, asked, None)

    async def _ask_first(self, ids: list[str], asked: _Asked, most: int | None) -> list[str]:
        self._batcher.guess(self.api.serie_points)
        batches = self._batcher.plan(ids, self._fixed_length(asked.method))
        if not batches or (most is None and len(batches) < 2):
            return ids  # one batch, sized by the guess: nothing to learn before it
        # The smallest batch (the plan keeps the order: it is the tail of `ids`), so the
        # first answer costs no request more than the plan.
        last = batches[-1]
        first = last[:most]
        await self._batch(first, asked)
        return ids[: len(ids) - len(last)] + last[len(first) :]

    async def _batches(self, ids: list[str], asked: _Asked) -> None:
        """`ids` in as few requests as fit under the URL cap and the points bound, all at
        once."""
        async with anyio.create_task_group() as tg:
            for batch in self._batcher.plan(ids, self._fixed_length(asked.method)):
                tg.start_soon(self._batch, batch, asked)

    async def _batch(self, ids: list[str], asked: _Asked) -> None:
        refusal = await self._ask(ids, asked)
        if refusal is not None:
            await self._bisect(ids, refusal, asked)

    async def _ask(self, ids: list[str], asked: _Asked) -> ApiStatusError | None:
        """One series request; the 4xx that refused it (not about its length), if any."""
        method = asked.method
        url = self.api.series_url(self.run_id, ids, method)
        length = self.api.request_target_length(url)
        if len(ids) > 1 and not self._batcher.fits(len(ids), length):
            # Planned before a 414 lowered the cap, or before an answer said how long the
            # series are: re-pack under what was learned.
            for part in self._batcher.plan(ids, self._fixed_length(method)):
                await self._batch(part, asked)
            return None
        try:
            async with self._slots:
                answer = await self.api.series(url, method)
                asked.returned.update(answer.metric_ids)
                self._measure(answer.points)
                count = answer.count
                data: Chunk = (
                    answer.packed
                    if answer.packed is not None
                    else encode_texts("series", self.run_id, answer.texts)
                )
                # The answer's series are views into its body: free it before we may wait
                # on a full channel, so a slow disk or pipe costs encoded bytes only.
                del answer
                if count:
                    await self.deliver(self._lines("series", count, data))
        except UrlTooLong:
            if len(ids) == 1:
                raise
            self._batcher.learn_too_long(length, self._fixed_length(method))
            middle = len(ids) // 2
            await self._batch(ids[:middle], asked)
            await self._batch(ids[middle:], asked)
        except ApiStatusError as exc:
            return exc
        return None

    def _measure(self, points: int | None) -> None:
        """Learn how many points this run's series hold, from the longest of an answer (and
        tell later runs)."""
        if points is not None:
            self._batcher.learn_points(points)
            self.api.serie_points = self._batcher.points_per_serie

    async def _bisect(self, ids: list[str], refusal: ApiStatusError, asked: _Asked) -> None:
        """A refusal that is not about length: ask the halves to find the ids it is about.
        Halves refused alike mean the request is at fault (its method, its run): no id is
        blamed and the run fails, instead of 2N-1 requests and N error records."""
        if len(ids) == 1:
            asked.refused[ids[0]] = refusal
            error = {"metric_id": ids[0], "method": asked.method, "status": refusal.status}
            await self.emit("error", [{**error, "message": str(refusal)}])
            return
        middle = len(ids) // 2
        halves = (ids[:middle], ids[middle:])
        first, second = [await self._ask(half, asked) for half in halves]
        if first is not None and second is not None and _alike(first, second):
            raise self._refused_request(asked.method, first)
        for half, half_refusal in zip(halves, (first, second), strict=True):
            if half_refusal is not None:
                await self._bisect(half, half_refusal, asked)

    def _refused_request(self, method: str | None, refusal: ApiStatusError) -> RequestRefused:
        if method is not None and method not in self.api.methods_answered:
            return MethodRefused(
                f"the API refuses series asked with --method {method} ({refusal}); check its "
                "spelling (README: Harvest)",
                status=refusal.status,
                url=refusal.url,
            )
        return RequestRefused(
            f"the API refused every part of a series request{_with(method)}, so the request "
            f"is at fault, not a metric id: {refusal}",
            status=refusal.status,
            url=refusal.url,
        )


@dataclass
class _Asked:
    """What became of the ids asked for one run and method."""

    method: str | None
    returned: set[str] = field(default_factory=set)
    refused: dict[str, ApiStatusError] = field(default_factory=dict)

    def gaps(self, ids: list[str]) -> list[str]:
        return [i for i in ids if i not in self.returned and i not in self.refused]


def _alike(a: ApiStatusError, b: ApiStatusError) -> bool:
    """The same refusal of two requests: the same status and words, but for the request
    each names."""
    return (a.status, _words(a)) == (b.status, _words(b))


def _words(error: ApiStatusError) -> str:
    return str(error).split(f"{error.url}: ", 1)[-1] if error.url else str(error)


def _with(method: str | None) -> str:
    return f" with method {method}" if method is not None else ""
