"""What a k6 summary file (`--summary-export`, or handleSummary's data as JSON) adds to
k6's JSON output: the thresholds on submetrics, which k6 writes nowhere else, and the
test run's duration. Threshold results are not taken: they are recomputed from the
points."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from harvester.simulator.k6reader import K6OutputError
from harvester.simulator.k6thresholds import ThresholdDecl, ThresholdSpec


@dataclass(frozen=True, slots=True)
class SummaryFacts:
    """What a summary file adds to k6's JSON output: the thresholds (submetrics' are
    nowhere else) and the test run's duration in seconds (None when it does not say)."""

    thresholds: list[ThresholdDecl] = field(default_factory=list)
    duration: float | None = None


def summary_facts(path: str | Path) -> SummaryFacts:
    """Read a `--summary-export` file or the JSON of `handleSummary`'s data. Threshold
    results are not taken: they are recomputed from the points."""
    path = Path(path)
    try:
        doc: dict[str, Any] = orjson.loads(path.read_bytes())
        metrics: dict[str, Any] = doc["metrics"]
        found = []
        for key, figures in metrics.items():
            name, _, selector = key.partition("{")
            tags = dict(_selector_items(selector.removesuffix("}")))
            found += [
                ThresholdDecl(name, tags, ThresholdSpec(str(expression)))
                for expression in figures.get("thresholds") or {}
            ]
        duration = _duration(doc, metrics)
    except (OSError, orjson.JSONDecodeError, LookupError, TypeError, AttributeError) as exc:
        raise K6OutputError(f"not a k6 summary export ({exc!r})", path=path) from exc
    return SummaryFacts(found, duration)


def _duration(doc: dict[str, Any], metrics: dict[str, Any]) -> float | None:
    """`state.testRunDurationMs` (handleSummary's data); a `--summary-export` has no state,
    but each Counter's rate is its count over that same duration."""
    state = doc.get("state")
    if isinstance(state, dict) and isinstance(state.get("testRunDurationMs"), int | float):
        return float(state["testRunDurationMs"]) / 1000
    for figures in metrics.values():
        values = figures.get("values", figures)  # handleSummary nests the figures
        count, rate = values.get("count"), values.get("rate")
        if isinstance(count, int | float) and isinstance(rate, int | float) and rate > 0:
            return float(count) / float(rate)
    return None


def _selector_items(selector: str) -> Iterator[tuple[str, str]]:
    """`scenario:buy,status:200` split as k6 does (at the first ':', quotes trimmed)."""
    for part in filter(None, selector.split(",")):
        key, _, value = part.partition(":")
        yield key.strip().strip("\"'"), value.strip().strip("\"'")
