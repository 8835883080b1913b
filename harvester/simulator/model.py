"""What the simulator serves for one test run, whatever produced the data.

Two sources implement `RunData`: generated data (`generated.py`, from a seed) and a
recorded k6 run (`k6import.py`, from `k6 run --out json`). The web app (`app.py`) only
ever talks to this protocol, renders each answer once and caches the bytes.
"""

from __future__ import annotations

from typing import Any, Protocol

JsonObject = dict[str, Any]


class RunData(Protocol):
    """One simulated k6 Cloud test run."""

    @property
    def run_id(self) -> int:
        """The test run id (`test_run_id` in every endpoint)."""

    @property
    def run(self) -> JsonObject:
        """The `k6-run` object: id, test_id, project_id, organization_id, created, started,
        ended, duration, run_status, processing_status, result_status, vus, note, export."""

    def metrics(self) -> list[JsonObject]:
        """The `k6-metrics` list of `GET /loadtests/v2/metrics?test_run_id=N`."""

    def metric_detail(self, metric_id: str) -> JsonObject | None:
        """`GET /metrics/{id}`: {"k6-metric": ..., and where they apply "k6-check",
        "k6-group", "k6-url"}; the app keeps only the includes asked for. None if unknown."""

    def serie(self, metric_id: str, method: str | None) -> JsonObject | None:
        """One `k6-serie` object for the metric aggregated with `method` (None: the API's
        default for the metric). None when the metric has no serie (no samples)."""

    def thresholds(self) -> tuple[list[JsonObject], list[JsonObject]]:
        """(`k6-metrics`, `k6-thresholds`) of `GET /loadtests/v2/thresholds?test_run_id=N`."""

    def overview(self) -> JsonObject:
        """The one entry of `k6-run-overviews`."""
