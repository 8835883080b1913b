"""The thresholds of an imported k6 run (`k6import.py`): judged from its samples and
served as v2 threshold objects.

- Thresholds come from the Metric lines, written as strings or as objects with
  `abortOnFail`. k6 does not write thresholds on submetrics
  (`http_req_duration{scenario:buy}`) into its JSON output, so those are taken from the
  summary file when one is given, and named by `unserved_submetrics` when not. All
  figures are computed from the points, over the whole run (for a submetric, over its
  matching points), by `k6thresholds.py`'s rules (a metric without samples included).
- `name` is the expression as written ("p(95)<50"), `stat` its aggregation ("p(95)"),
  `value` its bound, `tainted` means crossed; `tainted_at` is the end of the run
  (evaluated once, at the end). A threshold k6 does not evaluate (a Rate without
  samples) has `calculated_value` null and is not tainted. Threshold ids are 31-bit
  integers hashed from run id and threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from harvester.simulator.k6ids import int_id, iso, pg_time
from harvester.simulator.k6reader import K6OutputError, Samples
from harvester.simulator.k6thresholds import ThresholdDecl, Verdict, aborted, judge_threshold
from harvester.simulator.model import JsonObject

#: Builds a v2 metric object: (id, name, tags) -> the object.
MetricObject = Callable[[str, str, dict[str, str]], JsonObject]


class RunThresholds:
    """Every threshold of one run with its verdict, judged once at load."""

    def __init__(
        self,
        samples: Samples,
        *,
        source: Path,
        seconds: float,
        all_samples: Callable[[str], Sequence[float]],
    ) -> None:
        self._samples, self._source, self._seconds = samples, source, seconds
        self._all_samples = all_samples
        self.judged = [(decl, self._judge(decl)) for decl in samples.thresholds]

    @property
    def crossed(self) -> int:
        """How many thresholds were crossed."""
        return sum(verdict.crossed for _, verdict in self.judged)

    @property
    def aborted(self) -> bool:
        """Whether an abortOnFail threshold ended the run."""
        return aborted(self.judged, self._seconds)

    def unserved_submetrics(self) -> list[str]:
        """Submetrics the Metric lines declare but no threshold served is on (see
        `K6Run.unserved_submetrics`)."""
        served = {(t.metric, tuple(sorted(t.tags.items()))) for t, _ in self.judged}
        return [
            sub.name
            for decl in self._samples.decls.values()
            for sub in decl.submetrics
            if (decl.name, tuple(sorted(sub.tags.items()))) not in served
            and sub.tags != {"expected_response": "true"}
        ]

    def objects(
        self, run_id: int, metric_object: MetricObject
    ) -> tuple[list[JsonObject], list[JsonObject]]:
        """The v2 threshold metrics and thresholds, in the run's threshold order."""
        pairs = [self._objects(run_id, decl, v, metric_object) for decl, v in self.judged]
        return [metric for metric, _ in pairs], [threshold for _, threshold in pairs]

    def _judge(self, decl: ThresholdDecl) -> Verdict:
        known = self._samples.decls.get(decl.metric)
        if decl.tags:
            wanted = tuple(sorted(decl.tags.items()))
            values: Sequence[float] = self._samples.submetric_samples[decl.metric][wanted]
        else:
            values = self._all_samples(decl.metric)
        try:
            return judge_threshold(
                decl.expression, known.type if known else None, values, self._seconds
            )
        except ValueError as exc:
            raise K6OutputError(f"{exc} on {decl.metric}", path=self._source) from None

    def _objects(
        self, run_id: int, decl: ThresholdDecl, verdict: Verdict, metric_object: MetricObject
    ) -> tuple[JsonObject, JsonObject]:
        first, last = self._samples.first, self._samples.last
        threshold_id = int_id(run_id, "threshold", *decl.key)
        metric = metric_object(f"threshold_{threshold_id}", decl.metric, decl.tags)
        threshold = {
            "calc_state": {
                "max_created_at": pg_time(last, "microseconds"),
                "max_time": pg_time(last),
                "min_time": pg_time(first),
                "tainted_value": verdict.calculated if verdict.crossed else None,
            },
            "calculated_value": verdict.calculated,
            "id": threshold_id,
            "metric_id": metric["id"],
            "name": decl.expression,
            "stat": verdict.stat,
            "tainted": verdict.crossed,
            "tainted_at": iso(last) if verdict.crossed else None,
            "testrun_id": run_id,
            "value": verdict.bound,
        }
        return metric, threshold
