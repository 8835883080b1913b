"""Response bodies of one run, rendered once with orjson and kept as bytes.

A series answer is the join of cached per-serie bytes, so a repeated request costs a dict
lookup per id and one `bytes.join`, never a pass over the points.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson

from harvester.simulator.model import JsonObject, RunData

#: The `include[]` values of `GET /metrics/{id}` and the keys they add.
INCLUDES = {"url": "k6-url", "group": "k6-group", "check": "k6-check"}


class RunCache:
    """The rendered bodies of one `RunData` (replace the cache when the run is replaced)."""

    def __init__(self, data: RunData) -> None:
        self.data = data
        self._bodies: dict[str, bytes] = {}
        self._series: dict[tuple[str, str | None], bytes | None] = {}
        self._details: dict[tuple[str, frozenset[str]], bytes | None] = {}

    def _body(self, name: str) -> bytes:
        body = self._bodies.get(name)
        if body is None:
            body = self._bodies[name] = orjson.dumps(self._build(name))
        return body

    def _build(self, name: str) -> JsonObject:
        if name == "metrics":
            return {"k6-metrics": self.data.metrics()}
        if name == "overview":
            return {"k6-run-overviews": [self.data.overview()]}
        metrics, thresholds = self.data.thresholds()
        return {"k6-metrics": metrics, "k6-thresholds": thresholds}

    def metrics(self) -> bytes:
        return self._body("metrics")

    def overview(self) -> bytes:
        return self._body("overview")

    def thresholds(self, ids: frozenset[int] | None = None) -> bytes:
        """The thresholds list; filtered by `ids[]` (rare and small: rendered each time)."""
        if ids is None:
            return self._body("thresholds")
        metrics, thresholds = self.data.thresholds()
        kept = [t for t in thresholds if int(t["id"]) in ids]
        names = {t["metric_id"] for t in kept}
        return orjson.dumps(
            {"k6-metrics": [m for m in metrics if m["id"] in names], "k6-thresholds": kept}
        )

    def threshold(self, threshold_id: int) -> bytes | None:
        """`{"k6-threshold": ...}`; the read endpoint says `test_run_id` where the list
        says `testrun_id` (both as documented)."""
        for threshold in self.data.thresholds()[1]:
            if int(threshold["id"]) == threshold_id:
                renamed = {
                    ("test_run_id" if key == "testrun_id" else key): value
                    for key, value in threshold.items()
                }
                return orjson.dumps({"k6-threshold": renamed})
        return None

    def metric_detail(self, metric_id: str, includes: frozenset[str]) -> bytes | None:
        """`{"k6-metric": ...}` plus the included check/group/url that apply."""
        key = (metric_id, includes)
        if key not in self._details:
            detail = self.data.metric_detail(metric_id)
            if detail is None:
                self._details[key] = None
            else:
                wanted = {"k6-metric", *(INCLUDES[name] for name in includes)}
                self._details[key] = orjson.dumps({k: v for k, v in detail.items() if k in wanted})
        return self._details[key]

    def serie(self, metric_id: str, method: str | None) -> bytes | None:
        """One rendered `k6-serie` object; None when the metric has none. ValueError for a
        method the run does not know (nothing is cached then)."""
        key = (metric_id, method)
        try:
            return self._series[key]
        except KeyError:
            serie = self.data.serie(metric_id, method)
            body = self._series[key] = orjson.dumps(serie) if serie is not None else None
            return body

    def series(self, ids: Iterable[str], method: str | None) -> bytes:
        """`{"k6-serie": [...]}` for the ids that have a serie, in the order asked."""
        chunks = [b'{"k6-serie":[']
        for metric_id in ids:
            part = self.serie(metric_id, method)
            if part is not None:
                chunks += (part, b",")
        if len(chunks) > 1:
            chunks.pop()  # the last comma
        chunks.append(b"]}")
        return b"".join(chunks)  # one copy of the body, not three

    def warm(self, methods: Iterable[str | None]) -> int:
        """Render every body of the run now (benchmarks); returns the number of series."""
        self.metrics(), self.overview(), self.thresholds()
        ids = [str(m["id"]) for m in self.data.metrics()]
        asked = tuple(methods)
        for method in asked:
            for metric_id in ids:
                self.serie(metric_id, method)
        return len(ids) * len(asked)
