"""The v5 requests one run takes, as pure functions of what the run says about itself:
its metrics (name -> type), its label names and its configured thresholds. The fetch
(`v6.py`) asks exactly these; `minimum_paths` lists them all for the bench's floor, so
the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import v5_query, v6_thresholds
from .v6_api import V6

JsonObject = dict[str, Any]
#: The two check aggregates: passes and fails per check.
CHECK_QUERIES = (("increase_nz", "passes"), ("increase_z", "fails"))
#: Labels every series has: grouping by them adds nothing.
_IMPLIED = ("__name__", "test_run_id")


def metric_types(metrics: Sequence[JsonObject]) -> dict[str, str]:
    """name -> type of the run's metrics (`/metrics` entries)."""
    return {str(m["name"]): str(m["type"]) for m in metrics if "name" in m and "type" in m}


def grouping(labels: Sequence[str]) -> list[str]:
    """The labels `/labels` gave, those every series has left out."""
    return [name for name in labels if name not in _IMPLIED]


def series_queries(
    run_id: int, types: dict[str, str], labels: Sequence[str], methods: Sequence[str], step: int
) -> list[tuple[str, str, str]]:
    """(metric, v5 method, path) of each `query_range_k6`: one per metric and method,
    grouped by every label, so one answer holds every series of the metric."""
    return [
        (name, method, v5_query.range_path(run_id, v5_query.by_labels(method, labels), name, step))
        for name, metric_type in types.items()
        for method in v5_query.methods_of(metric_type, methods)
    ]


def check_paths(run_id: int, types: dict[str, str]) -> list[tuple[str, str]]:
    """(record key, path) of the check aggregates; none for a run without checks."""
    if "checks" not in types:
        return []
    return [
        (key, v5_query.aggregate_path(run_id, v5_query.by_labels(method, ["check"]), "checks"))
        for method, key in CHECK_QUERIES
    ]


def threshold_plans(run: JsonObject, types: dict[str, str]) -> list[v6_thresholds.Plan]:
    """One plan per configured threshold expression (`options.thresholds`), in order."""
    options = run.get("options") or {}
    configured = options.get("thresholds") if isinstance(options, dict) else None
    if not isinstance(configured, dict):
        return []
    return [v6_thresholds.plan(key, item, types)
            for key, items in configured.items()
            for item in (items if isinstance(items, list) else [items])]  # fmt: skip


def threshold_path(run_id: int, plan: v6_thresholds.Plan) -> str | None:
    """The aggregate a threshold needs, or None when it could not be translated."""
    if plan.method is None or plan.metric is None:
        return None
    return v5_query.aggregate_path(run_id, plan.method, plan.metric)


def minimum_paths(
    run: JsonObject,
    metrics: Sequence[JsonObject],
    labels: Sequence[str],
    *,
    methods: Sequence[str],
    step: int,
    discovered: bool,
) -> list[str]:
    """Every path harvesting `run` takes: the run object unless discovery brought it, 1
    metrics + 1 labels, one query per metric name and method, the check aggregates and
    one aggregate per translatable threshold."""
    run_id = int(run["id"])
    types = metric_types(metrics)
    base = f"{v5_query.V5}/{run_id}"
    paths = [] if discovered else [f"{V6}/test_runs/{run_id}"]
    paths += [f"{base}/metrics", f"{base}/labels"]
    paths += [path for _, _, path in series_queries(run_id, types, grouping(labels), methods, step)]
    paths += [path for _, path in check_paths(run_id, types)]
    plans = threshold_plans(run, types)
    return paths + [p for p in (threshold_path(run_id, plan) for plan in plans) if p is not None]
