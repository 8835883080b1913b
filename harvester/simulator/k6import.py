"""A real k6 run (`k6 run --out json=FILE`) served as one simulated k6 Cloud test run.

Modelling decisions, after how k6 Cloud stores a run:

- One `k6-metric` per metric name and distinguishing tag set. HTTP metrics (`http_req*`)
  split by group, method, status and url, where url is k6's `name` tag (k6 sets it to the
  URL unless the script names the request, and k6 Cloud groups URLs by it), falling back
  to the `url` tag. `checks` split by check and group (`check_id`); `group_duration` by
  group (`group_id`). Every other metric, built-in or custom, is one metric per name.
- `tags` holds exactly the distinguishing tags, so (name, tags) identifies a metric.
  `group_id` is set on metrics split by group (the root group, path "", included).
- Ids are 32 hex digits of a BLAKE2b hash of run id + kind + name + distinguishing tags
  (`k6ids.py`): stable across loads of the same file, distinct across run ids.
- `k6-group` name is the group path without its leading "::" ("home", "a::b"); a
  `k6-url` is (group, url, method, status) with `status` an integer (0: no response).
- A metric declared but never sampled is listed with tags {} and has no serie.
- Series: buckets of `bucket_seconds` aligned to multiples of it since the epoch,
  stamped with their start in UTC (`...Z`); buckets without samples are left out.
  The series methods are `k6methods.py`'s; `method=None` means mean for trends and
  rates, sum for counters and max for gauges (the bucket's peak). The `method` echoed is
  the one asked for. For an unknown method `supports_method()` is False and `serie()`
  raises ValueError (the app answers 400).
- Thresholds: see `k6verdicts.py`.
- The v5 view (`v5_series`, `v5_buckets`, read by `v5_data.py`): one series per metric
  and distinct full tag set, every k6 tag a label (the v5 API keeps them all), and one
  series without labels for a metric declared but never sampled.
- The test run's duration (`seconds`) is the summary's (`state.testRunDurationMs`, or a
  Counter's count over its rate), else the span from the first to the last point. A
  Counter's `rate` threshold and the overview's `http_reqs_avg` are per second of it.
- Overview: a check succeeds when every one of its hits passed; a URL hit succeeds when
  0 < status < 400.
- The run: created/started = first point, ended = last point, duration in whole
  seconds, run_status 3 (8, aborted by threshold, when an `abortOnFail` threshold is
  crossed and the run lasted past its `delayAbortEval`), processing_status 2,
  result_status 1 when a threshold was crossed, vus the peak of the `vus` gauge.

Memory: the raw lines are not kept. Each sample costs 20 bytes, plus up to ~12% array
slack: 8 as a float in an `array('d')` per bucket of its v2 metric (each v2 metric and
bucket about 150 bytes more), and 12 in its v5 series (bucket index and value in two
flat arrays per full tag set, grouped into buckets only while a v5 query reads them).
Each distinct tag set costs a few hundred bytes: its arrays and a tuple of references to
(tag, value) pairs shared by all sets (`k6reader.Samples`). A sample that also matches a
submetric threshold costs 8 more.
Evaluating a threshold briefly copies its metric's samples (8 bytes each) and, for a
percentile, holds the smaller side of the cut as Python floats (p(95): 5% of them, ~40
bytes each). Everything a summary needs except percentiles is recoverable
from the series: count and sum add up, mean is the count-weighted mean, min/max fold.
"""

from __future__ import annotations

import math
import statistics
from array import array
from collections.abc import Sequence
from itertools import chain
from pathlib import Path

from harvester.simulator.k6ids import hex_id, iso
from harvester.simulator.k6methods import DEFAULT_METHODS, aggregator, supports_method
from harvester.simulator.k6reader import (
    K6OutputError,
    ReadStats,
    Samples,
    SampleSeries,
    TaggedSamples,
    collect_samples,
)
from harvester.simulator.k6summary import SummaryFacts, summary_facts
from harvester.simulator.k6thresholds import SplitKey
from harvester.simulator.k6verdicts import RunThresholds
from harvester.simulator.model import JsonObject

__all__ = ["DEFAULT_METHODS", "K6OutputError", "K6Run", "load_k6_run", "supports_method"]

HTTP_METRICS = frozenset(
    "http_reqs http_req_failed http_req_duration http_req_blocked http_req_connecting "
    "http_req_tls_handshaking http_req_sending http_req_waiting http_req_receiving".split()
)
_SPLIT_TAGS: dict[str, tuple[str, ...]] = {
    "checks": ("check", "group"),
    "group_duration": ("group",),
}


def split_tags(name: str, tags: dict[str, str]) -> SplitKey:
    """The distinguishing tags of one sample, in a fixed order (see the module docstring)."""
    if name in HTTP_METRICS:
        url = tags.get("name") or tags.get("url", "")
        return (*((key, tags.get(key, "")) for key in ("group", "method", "status")), ("url", url))
    return tuple((key, tags.get(key, "")) for key in _SPLIT_TAGS.get(name, ()))


# --- the run --------------------------------------------------------------------------


class K6Run:
    """A k6 JSON output file as one k6 Cloud test run; implements `model.RunData`."""

    def __init__(
        self,
        samples: Samples,
        *,
        source: Path,
        run_id: int,
        test_id: int,
        project_id: int,
        organization_id: int,
        duration: float | None = None,
    ) -> None:
        self._samples, self._source = samples, source
        self._duration = duration
        self._run_id = run_id
        self._project_id = project_id
        self._details: dict[str, JsonObject] = {}
        self._series: dict[str, SampleSeries] = {}
        for key in sorted(samples.series):
            self._add_metric(key[0], samples.series[key].tags, samples.series[key])
        sampled = {s.name for s in samples.series.values()}
        unsampled = sorted(samples.decls.keys() - sampled)
        for name in unsampled:
            self._add_metric(name, {}, None)
        self._labelled = sorted(samples.labelled.items())
        self._labelled += [((name, ()), TaggedSamples()) for name in unsampled]
        self._thresholds = RunThresholds(
            samples, source=source, seconds=self.seconds, all_samples=self._all_samples
        )
        self._run = self._build_run(test_id, organization_id)

    @property
    def run_id(self) -> int:
        return self._run_id

    @property
    def run(self) -> JsonObject:
        return dict(self._run)

    @property
    def read_stats(self) -> ReadStats:
        """Line counts of the file read: points, unknown and (skipped) bad lines."""
        return self._samples.stats

    @property
    def seconds(self) -> float:
        """The test run's duration: the summary's, else from the first to the last point."""
        if self._duration is not None:
            return self._duration
        return self._samples.last - self._samples.first

    @property
    def unserved_submetrics(self) -> list[str]:
        """Submetrics the Metric lines declare but no threshold served is on: k6 declares
        a submetric for each one a threshold names, and writes those thresholds only to
        its summary. (It declares `http_req_duration{expected_response:true}` for its own
        end-of-test figures, threshold or not: that one is not named.)"""
        return self._thresholds.unserved_submetrics()

    def metrics(self) -> list[JsonObject]:
        return [detail["k6-metric"] for detail in self._details.values()]

    def metric_detail(self, metric_id: str) -> JsonObject | None:
        detail = self._details.get(metric_id)  # a copy: the app drops includes not asked for
        return dict(detail) if detail is not None else None

    def serie(self, metric_id: str, method: str | None) -> JsonObject | None:
        """The metric's buckets reduced with `method`; ValueError for an unknown method."""
        detail = self._details.get(metric_id)
        metric_type = detail["k6-metric"]["type"] if detail else ""
        name = method if method is not None else DEFAULT_METHODS.get(metric_type, "mean")
        width = self._samples.bucket_seconds
        # Before the lookup: a bad method is a 400 whatever the id.
        reduce = aggregator(name, metric_type, width)
        series = self._series.get(metric_id)
        if series is None:
            return None
        whole = float(width).is_integer()
        values = [
            {"timestamp": iso(round(index * width, 6), whole), "value": reduce(bucket)}
            for index, bucket in sorted(series.buckets.items())
        ]
        return {
            "agg": {},
            "id": hex_id(self._run_id, "serie", metric_id, name),
            "method": name,
            "metric_id": metric_id,
            "test_run_id": self._run_id,
            "values": values,
        }

    def v5_series(self) -> list[tuple[str, str, SplitKey]]:
        """(metric name, type, full k6 tag set) of each v5 series, for `v5_data.py`; the
        series at index i has its samples from `v5_buckets(i)`."""
        decls = self._samples.decls
        return [(name, decls[name].type, tags) for (name, tags), _ in self._labelled]

    def v5_buckets(self, index: int) -> list[tuple[float, Sequence[float]]]:
        """The samples of v5 series `index` per bucket, (bucket start in epoch seconds,
        samples in file order), in time order; made on demand, not kept."""
        buckets = self._labelled[index][1].by_bucket()
        width = self._samples.bucket_seconds
        return [(round(i * width, 6), buckets[i]) for i in sorted(buckets)]

    def thresholds(self) -> tuple[list[JsonObject], list[JsonObject]]:
        return self._thresholds.objects(self._run_id, self._metric_object)

    def overview(self) -> JsonObject:
        checks, urls = self._named("checks"), self._named("http_reqs")
        good_urls = [s for s in urls if 0 < _status(s.tags) < 400]
        durations = self._all_samples("http_req_duration")
        requests = sum(math.fsum(s.samples()) for s in urls)
        crossed = self._thresholds.crossed
        return {
            "checks_hits_successes": sum(1 for s in checks for v in s.samples() if v),
            "checks_hits_total": sum(s.count for s in checks),
            "checks_successes": sum(all(s.samples()) for s in checks),
            "checks_total": len(checks),
            "http_req_duration_avg": statistics.fmean(durations) if durations else 0.0,
            "http_reqs_avg": requests / self.seconds if self.seconds > 0 else 0.0,
            "test_run_id": self._run_id,
            "thresholds_successes": len(self._thresholds.judged) - crossed,
            "thresholds_total": len(self._thresholds.judged),
            "urls_hits_successes": int(sum(math.fsum(s.samples()) for s in good_urls)),
            "urls_hits_total": int(requests),
            "urls_successes": len(good_urls),
            "urls_total": len(urls),
        }

    # --- building ---------------------------------------------------------------------

    def _named(self, name: str) -> list[SampleSeries]:
        return [s for s in self._series.values() if s.name == name]

    def _all_samples(self, name: str) -> array[float]:
        """Every sample of every metric called `name`, in time order per metric."""
        return array("d", chain.from_iterable(s.samples() for s in self._named(name)))

    def _metric_object(
        self, metric_id: str, name: str, tags: dict[str, str], **ids: str | None
    ) -> JsonObject:
        decl = self._samples.decls.get(name)  # None: a summary threshold's unseen metric
        return {
            "check_id": ids.get("check_id"),
            "contains": decl.contains if decl else "default",
            "group_id": ids.get("group_id"),
            "id": metric_id,
            "name": name,
            "project_id": self._project_id,
            "tags": dict(tags),
            "test_run_id": self._run_id,
            "type": decl.type if decl else None,
            "url_id": ids.get("url_id"),
        }

    def _add_metric(self, name: str, tags: dict[str, str], series: SampleSeries | None) -> None:
        run = self._run_id
        metric_id = hex_id(run, "metric", name, *sorted(tags.items()))
        group = tags.get("group")
        detail: JsonObject = {}
        ids: dict[str, str | None] = {"check_id": None, "group_id": None, "url_id": None}
        if group is not None:
            ids["group_id"] = hex_id(run, "group", group)
            detail["k6-group"] = {"id": ids["group_id"], "name": group.removeprefix("::")}
        if "check" in tags:
            ids["check_id"] = hex_id(run, "check", group, tags["check"])
            detail["k6-check"] = {"id": ids["check_id"], "name": tags["check"]}
        if "url" in tags:
            ids["url_id"] = hex_id(run, "url", group, tags["method"], tags["status"], tags["url"])
            url = {"method": tags["method"], "status": _status(tags), "url": tags["url"]}
            detail["k6-url"] = {"id": ids["url_id"], **url}
        detail["k6-metric"] = self._metric_object(metric_id, name, tags, **ids)
        self._details[metric_id] = detail
        if series is not None:
            self._series[metric_id] = series

    def _build_run(self, test_id: int, organization_id: int) -> JsonObject:
        first, last = self._samples.first, self._samples.last
        by_threshold = self._thresholds.aborted
        return {
            "id": self._run_id,
            "test_id": test_id,
            "project_id": self._project_id,
            "organization_id": organization_id,
            "created": iso(first),
            "started": iso(first),
            "ended": iso(last),
            "duration": round(self.seconds),
            "run_status": 8 if by_threshold else 3,
            "processing_status": 2,
            "result_status": int(self._thresholds.crossed > 0),
            "vus": int(max(self._all_samples("vus"), default=0)),
            "note": f"imported from k6 output {self._source.name}",
            "export": None,
        }


def _status(tags: dict[str, str]) -> int:
    status = tags.get("status", "")
    return int(status) if status.isdigit() else 0


def load_k6_run(
    path: str | Path,
    *,
    run_id: int = 1,
    summary_path: str | Path | None = None,
    bucket_seconds: float = 1.0,
    test_id: int | None = None,
    project_id: int | None = None,
    organization_id: int = 1,
    skip_bad_lines: bool = False,
) -> K6Run:
    """Read a k6 JSON output file (plain or gzip) into one simulated k6 Cloud test run.

    `summary_path` (a `--summary-export` file, or handleSummary's data as JSON) only
    contributes the threshold expressions k6 leaves out of its JSON output and the test
    run's duration; results are recomputed from the points. `test_id` and `project_id` default to
    1. A line that cannot be parsed raises `K6OutputError` with its line number, unless
    `skip_bad_lines`: then it is skipped and counted in `read_stats.bad_lines`.
    """
    if not bucket_seconds > 0:
        raise ValueError(f"bucket_seconds must be positive, got {bucket_seconds}")
    source = Path(path)
    facts = summary_facts(summary_path) if summary_path is not None else SummaryFacts()
    samples = collect_samples(
        source,
        bucket_seconds=bucket_seconds,
        split=split_tags,
        thresholds=facts.thresholds,
        skip_bad_lines=skip_bad_lines,
    )
    if not samples.series:
        raise K6OutputError("no Point lines: nothing to model", path=source)
    return K6Run(
        samples,
        source=source,
        run_id=run_id,
        test_id=test_id if test_id is not None else 1,
        project_id=project_id if project_id is not None else 1,
        organization_id=organization_id,
        duration=facts.duration,
    )
