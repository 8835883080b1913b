"""k6 thresholds evaluated from v5 aggregates, since v6 gives only their expressions.

A run's `options.thresholds` maps a k6 (sub)metric (`http_req_duration{status:200}`) to
expressions (`p(95)<500`, or objects with `threshold`). Each expression becomes one
`query_aggregate_k6` over the whole run: trend `avg|min|max|med|p(N)` ->
`histogram_avg|_min|_max|_quantile(q)`, `count` -> `increase` (a Counter) or
`histogram_count_increase` (a Trend), a Counter's `rate` -> `increase` divided by the
run's duration (`ended - created`), a Rate's `rate` -> `ratio`, a Gauge's `value` ->
`last`. Submetric tags become label selectors (`{group:::a::b}` -> `group="::a::b"`, keys
sanitized as the API sanitizes tag keys). An empty answer (no samples) is evaluated as
k6 does: 0 for a Counter, a Trend or a Gauge; a Rate without samples passes. A threshold
that cannot be translated is recorded with the reason, never dropped.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..formats.pointvalue import point_value
from .v5_query import label_name, quantile_method, selector

_EXPRESSION = re.compile(
    r"\s*([a-z]+(?:\(\d+(?:\.\d+)?\))?)\s*(<=|>=|===|==|!=|<|>)\s*(-?[\d.]+(?:e-?\d+)?)\s*"
)
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "==": operator.eq, "===": operator.eq, "!=": operator.ne,
}  # fmt: skip
_TREND = {"avg": "histogram_avg", "min": "histogram_min", "max": "histogram_max",
          "med": "histogram_quantile(0.5)", "count": "histogram_count_increase"}  # fmt: skip


def split_key(key: str) -> tuple[str, list[tuple[str, str]]]:
    """`http_req_duration{status:200,group:::a}` -> (name, [(label, value), ...])."""
    name, brace, rest = key.partition("{")
    if not brace:
        return key.strip(), []
    pairs = []
    for part in rest.rstrip().removesuffix("}").split(","):
        tag, _, value = part.partition(":")
        if part.strip():
            pairs.append((label_name(tag.strip()), value.strip()))
    return name.strip(), pairs


def expression_text(item: Any) -> str | None:
    """An expression as configured: a string, or an object's `threshold`."""
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and isinstance(item.get("threshold"), str):
        return str(item["threshold"])
    return None


@dataclass(frozen=True)
class Plan:
    """How one threshold is evaluated: the aggregate to ask, or why it cannot be."""

    key: str
    expression: str
    method: str | None = None
    metric: str | None = None
    stat: str = ""
    metric_type: str | None = None
    bound: float = 0.0
    compare: Callable[[float, float], bool] = operator.lt
    reason: str | None = None


def _method(stat: str, metric_type: str) -> str | None:
    if metric_type == "trend":
        if stat in _TREND:
            return _TREND[stat]
        if match := re.fullmatch(r"p\((\d+(?:\.\d+)?)\)", stat):
            q = float(match.group(1)) / 100
            if q <= 0:
                return "histogram_min"
            return "histogram_max" if q >= 1 else quantile_method(q)
    if metric_type == "counter" and stat in ("count", "rate"):
        return "increase"
    if metric_type == "rate" and stat == "rate":
        return "ratio"
    if metric_type == "gauge" and stat == "value":
        return "last"
    return None


def plan(key: str, item: Any, types: dict[str, str]) -> Plan:
    """The aggregate that evaluates one configured threshold (`types`: metric name ->
    type, from the run's metrics list)."""
    text = expression_text(item)
    if text is None:
        return Plan(key, str(item), reason="not a threshold expression")
    name, labels = split_key(key)
    match = _EXPRESSION.fullmatch(text)
    if match is None:
        return Plan(key, text, reason="expression not understood")
    stat, op, bound = match.groups()
    metric_type = types.get(name)
    if metric_type is None:
        return Plan(key, text, reason=f"the run has no metric {name!r}")
    method = _method(stat, metric_type)
    if method is None:
        return Plan(key, text, reason=f"{stat!r} is no statistic of a {metric_type} metric")
    return Plan(key, text, method, selector(name, labels), stat, metric_type, float(bound),
                _OPS[op])  # fmt: skip


def verdict(p: Plan, result: list[Any], seconds: float) -> dict[str, Any]:
    """The threshold record's data once its aggregate answered `result`."""
    record: dict[str, Any] = {"metric": p.key, "expression": p.expression}
    if p.reason is not None or p.method is None:
        return {**record, "query": None, "value": None, "crossed": None, "computed": True,
                "reason": p.reason}  # fmt: skip
    record["query"] = {"method": p.method, "metric": p.metric}
    value = first_value(result)
    if value is None:
        if p.metric_type == "rate":  # k6: a Rate without samples passes
            return {**record, "value": None, "crossed": False, "computed": True}
        value = 0.0
    if p.metric_type == "counter" and p.stat == "rate":
        value = value / seconds if seconds > 0 else 0.0
    crossed = not p.compare(value, p.bound)
    return {**record, "value": value, "crossed": crossed, "computed": True}


def first_value(result: list[Any]) -> float | None:
    """The one figure of a single-run aggregate (entries hold `values` or `value`): a
    finite number, or None as a point's value is (`pointvalue`: `"NaN"`, `"abc"`, a
    point without its value are no figure; they were internal errors, or a NaN judged
    crossed), and then judged as no samples."""
    entry = result[0] if result else None
    if not isinstance(entry, dict):
        return None
    points = entry.get("values") or ([entry["value"]] if "value" in entry else [])
    first = points[0] if isinstance(points, list) and points else None
    if not isinstance(first, list) or len(first) < 2:
        return None
    value = point_value(first[1])
    return None if value is None else float(value)
