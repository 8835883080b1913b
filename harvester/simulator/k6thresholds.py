"""k6's threshold rules: how k6 writes a threshold, evaluates it at the end of a run, and
when a run was aborted by one.

- A threshold comes as a string (`"p(95)<50"`) or as an object
  (`{"threshold": "p(99)<300", "abortOnFail": true, "delayAbortEval": "10s"}`).
- Evaluated over the whole run, as k6 does at its end. A metric without samples still
  has figures: a Counter's count and rate, every Trend statistic and a Gauge's value are
  0; a Rate without samples has no rate, so its thresholds are not evaluated (they pass).
- A Counter's `rate` is per second of the test run's duration (`seconds`), which the
  summary gives, not the span of the samples.
- Percentiles interpolate linearly between closest ranks, as k6 does.
"""

from __future__ import annotations

import heapq
import math
import operator
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

SplitKey = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class ThresholdSpec:
    """One threshold as k6 takes it: the expression, and whether a crossing ends the run
    (`abort_on_fail`) once `delay_abort_eval` seconds of it have passed."""

    expression: str
    abort_on_fail: bool = False
    delay_abort_eval: float = 0.0


_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def go_duration(text: str) -> float:
    """Seconds in a duration as k6 writes it ("10s", "1m30s", "500ms"); ValueError if not."""
    parts = _GO_DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise ValueError(f"not a duration: {text!r}")
    return math.fsum(float(number) * _GO_UNITS[unit] for number, unit in parts)


def threshold_spec(entry: Any) -> ThresholdSpec:
    """A threshold of a Metric line: a string, or an object with `threshold`,
    `abortOnFail` and `delayAbortEval` (null or absent: none). TypeError/ValueError if not."""
    if isinstance(entry, str):
        return ThresholdSpec(entry)
    if not isinstance(entry, dict) or not isinstance(entry.get("threshold"), str):
        raise TypeError(f"a threshold is a string or an object with 'threshold': {entry!r}")
    delay = entry.get("delayAbortEval")
    return ThresholdSpec(
        entry["threshold"],
        abort_on_fail=entry.get("abortOnFail") is True,
        delay_abort_eval=go_duration(delay) if delay else 0.0,
    )


@dataclass(frozen=True, slots=True)
class ThresholdDecl:
    """A threshold on a metric, or on a submetric when `tags` is not empty."""

    metric: str
    tags: dict[str, str]
    spec: ThresholdSpec

    @property
    def expression(self) -> str:
        return self.spec.expression

    @property
    def key(self) -> tuple[str, SplitKey, str]:
        """What makes a threshold: listed twice (Metric line and summary), it is one."""
        return self.metric, tuple(sorted(self.tags.items())), self.expression


# --- percentiles and evaluation -------------------------------------------------------------


def quantile(ordered: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of sorted values, interpolated between closest ranks as k6
    does. (statistics.quantiles only cuts into whole numbers of parts: p99.9 would take
    999 cut points. This is its 'inclusive' method for any q.)"""
    rank = q * (len(ordered) - 1)
    low = math.floor(rank)
    if low + 1 >= len(ordered):
        return float(ordered[-1])
    return ordered[low] + (ordered[low + 1] - ordered[low]) * (rank - low)


def tail_quantile(values: Sequence[float], q: float) -> float:
    """`quantile` of unsorted values without sorting them all: heapq keeps only the
    smaller side of the q cut, so p(99) of n samples holds n/100 of them."""
    rank = q * (len(values) - 1)
    low = math.floor(rank)
    if q >= 0.5:  # descending, ends with the order statistics low + 1 and low
        pair = heapq.nlargest(len(values) - low, values)[-2:][::-1]
    else:
        pair = heapq.nsmallest(low + 2, values)[low:]
    return quantile(pair, rank - low)


_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "==": operator.eq, "===": operator.eq, "!=": operator.ne,
}  # fmt: skip
_THRESHOLD = re.compile(
    r"\s*(avg|min|max|med|count|rate|value|p\((\d+(?:\.\d+)?)\))\s*(<=|>=|===|==|!=|<|>)\s*(\S+)\s*"
)


@dataclass(frozen=True, slots=True)
class Verdict:
    """A threshold evaluated over the whole run; `calculated` is None when k6 has no
    figure to judge (a Rate, or a metric of unknown type, without samples)."""

    stat: str
    bound: float
    calculated: float | None
    crossed: bool


def _figure(
    stat: str, percent: str | None, kind: str | None, values: Sequence[float], seconds: float
) -> float:
    if stat == "count":  # a counter counts its values, other metrics their samples
        return math.fsum(values) if kind == "counter" else float(len(values))
    if stat == "rate" and kind == "counter":
        return math.fsum(values) / seconds if seconds > 0 else 0.0
    if stat == "rate":
        return sum(1 for v in values if v) / len(values)
    if stat in ("value", "min", "max"):
        pick = values[-1] if stat == "value" else min(values) if stat == "min" else max(values)
        return float(pick)
    if stat == "avg":
        return statistics.fmean(values)
    return tail_quantile(values, float(percent) / 100 if percent else 0.5)  # med or p(N)


def judge_threshold(
    expression: str, metric_type: str | None, values: Sequence[float], seconds: float
) -> Verdict:
    """Evaluate a k6 threshold expression such as `p(95)<50` over a metric's samples
    (`seconds`: the test run's duration, for a counter's rate). ValueError if unreadable."""
    match = _THRESHOLD.fullmatch(expression)
    if match is None:
        raise ValueError(f"cannot read threshold {expression!r}")
    stat, percent, op, bound_text = match.groups()
    bound = float(bound_text)
    if values:
        value = _figure(stat, percent, metric_type, values, seconds)
    elif metric_type in ("counter", "trend", "gauge"):
        value = 0.0  # k6's empty sinks report zeros, and thresholds judge those
    else:
        return Verdict(stat, bound, None, crossed=False)
    return Verdict(stat, bound, value, not _OPERATORS[op](value, bound))


def aborted(judged: Sequence[tuple[ThresholdDecl, Verdict]], seconds: float) -> bool:
    """Whether an abortOnFail threshold ended the run: one is crossed, and the run lasted
    past its delayAbortEval (k6 judges such thresholds during the run; here the end
    figures stand for the last judgement)."""
    return any(
        decl.spec.abort_on_fail and verdict.crossed and seconds >= decl.spec.delay_abort_eval
        for decl, verdict in judged
    )
