"""Generated test runs: realistic, deterministic k6 Cloud data from a seed (`RunData`).

`generate_cloud` builds a whole account (projects, tests, runs in various states);
`GeneratedRun` is one run whose metrics, series, thresholds and overview are computed on
demand. The web app renders each answer once and caches the bytes, so this code runs once
per (run, metric, method).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from functools import cached_property

from harvester.simulator.aggregation import (
    DEFAULT_METHOD,
    RunCurves,
    parse_method,
    run_curves,
    serie_values,
)
from harvester.simulator.catalogue import (
    HOSTS,
    MetricSpec,
    RunShape,
    build_metrics,
    group_name,
    hex_id,
)
from harvester.simulator.cloud import SimCloud
from harvester.simulator.model import JsonObject

#: Generated dates hang off this moment unless told otherwise, so tests see stable data.
FIXED_ANCHOR = datetime(2024, 6, 3, 12, 0, 0, tzinfo=UTC)
ORGANIZATION_ID = 5001
FIRST_PROJECT_ID = 3458575
FIRST_TEST_ID = 720001
PROJECT_NAMES = ("web shop", "public api", "mobile backend", "search", "payments")
TEST_NAMES = ("checkout flow", "api smoke", "homepage soak", "login spike", "search stress")

#: (metric, stat, comparison, limit) of the thresholds a run may declare.
_THRESHOLDS = (
    ("http_req_duration", "trend", "p(95)", "<", 800.0),
    ("http_req_failed", "rate", "rate", "<", 0.01),
    ("checks", "rate", "rate", ">", 0.95),
    ("iterations", "counter", "count", ">", 200.0),
)


def iso(moment: datetime) -> str:
    """k6 Cloud's timestamp form, e.g. 2020-08-13T18:28:45Z."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _spaced(moment: datetime) -> str:
    """The thresholds' calc_state form, e.g. 2020-08-18 13:36:04+00:00."""
    return moment.isoformat(sep=" ")


class GeneratedRun:
    """One generated test run (implements `RunData`); metrics are built on first use."""

    def __init__(
        self,
        run_id: int,
        *,
        metrics: int = 20,
        points: int = 60,
        seed: int = 0,
        interval: int = 3,
        created: datetime = FIXED_ANCHOR,
        test_id: int = FIRST_TEST_ID,
        project_id: int = FIRST_PROJECT_ID,
        organization_id: int = ORGANIZATION_ID,
        run_status: int = 3,
        processing_status: int = 2,
        missing_series: int = 0,
    ) -> None:
        if metrics < 0 or points < 1 or interval < 1:
            raise ValueError("need metrics >= 0, points >= 1 and interval >= 1")
        created = created.replace(microsecond=0)  # the API speaks whole seconds
        self._rng = random.Random(f"{seed}:{run_id}")
        self._seed, self._count, self._points, self._interval = seed, metrics, points, interval
        self._missing = missing_series
        self.shape = RunShape(
            run_id=run_id,
            host=self._rng.choice(HOSTS),
            max_vus=self._rng.choice((10, 20, 50, 100, 200)),
            iteration_ms=self._rng.uniform(1200, 4000),
        )
        self.started = created + timedelta(seconds=self._rng.randint(5, 60))
        self._thresholds = self._pick_thresholds(failing=run_status == 8)
        failed = any(t["tainted"] for _, _, t in self._thresholds)
        self._run = self._make_run(test_id, project_id, organization_id, created)
        self._run.update(run_status=run_status, processing_status=processing_status)
        self._run["result_status"] = int(failed)
        if run_status in (-2, -1, 0, 1, 2):
            self._run.update(ended=None, result_status=0)

    def _make_run(
        self, test_id: int, project_id: int, org_id: int, created: datetime
    ) -> JsonObject:
        duration = self._points * self._interval
        return {
            "id": self.run_id,
            "test_id": test_id,
            "project_id": project_id,
            "organization_id": org_id,
            "user_id": 1,
            "created": iso(created),
            "started": iso(self.started),
            "ended": iso(self.started + timedelta(seconds=duration)),
            "duration": duration,
            "vus": self.shape.max_vus,
            "note": "",
            "export": None,
            "is_archived": False,
            "public_id": None,
        }

    @property
    def run_id(self) -> int:
        return self.shape.run_id

    @property
    def run(self) -> JsonObject:
        return self._run

    @cached_property
    def specs(self) -> dict[str, MetricSpec]:
        """The run's metrics by id, from their own seeded stream (so call order never matters)."""
        listing = build_metrics(
            self.shape, self._count, random.Random(f"{self._seed}:{self.run_id}:m")
        )
        return {spec.id: spec for spec in listing}

    @cached_property
    def missing(self) -> frozenset[str]:
        """Ids of metrics that have no serie (no samples)."""
        ids = sorted(self.specs)
        count = min(self._missing, len(ids))
        return frozenset(random.Random(f"{self._seed}:{self.run_id}:gap").sample(ids, count))

    @cached_property
    def _timestamps(self) -> list[str]:
        return [
            iso(self.started + timedelta(seconds=i * self._interval)) for i in range(self._points)
        ]

    @cached_property
    def _curves(self) -> RunCurves:
        return run_curves(self._points, f"{self._seed}:{self.run_id}:noise")

    def metrics(self) -> list[JsonObject]:
        project_id = int(self._run["project_id"])
        return [spec.as_json(self.run_id, project_id) for spec in self.specs.values()]

    def metric_detail(self, metric_id: str) -> JsonObject | None:
        spec = self.specs.get(metric_id)
        if spec is None:
            return None
        metric = spec.as_json(self.run_id, int(self._run["project_id"]))
        detail: JsonObject = {"k6-metric": metric}
        if spec.check:
            detail["k6-check"] = {"id": metric["check_id"], "name": spec.check}
        if spec.group is not None:
            # "::page_3" is the 3rd group; "" is the root group, which has no name.
            index = int(spec.group.rsplit("_", 1)[1]) - 1 if spec.group else None
            name = group_name(self.shape, index) if index is not None else ""
            detail["k6-group"] = {"id": metric["group_id"], "name": name}
        if spec.url:
            method, status, url = spec.url
            detail["k6-url"] = {
                "id": metric["url_id"],
                "method": method,
                "status": status,
                "url": url,
            }
        return detail

    def _serie_parts(
        self, metric_id: str, method: str | None
    ) -> tuple[JsonObject, list[float]] | None:
        """(the serie without its values, the values), or None when it has no serie."""
        agg = parse_method(method)  # first, so an unknown method fails for every id
        spec = self.specs.get(metric_id)
        if spec is None or metric_id in self.missing:
            return None
        label = method or DEFAULT_METHOD
        head = {
            "agg": {},
            "id": hex_id("serie", metric_id, label),
            "method": label,
            "metric_id": metric_id,
            "test_run_id": self.run_id,
        }
        return head, serie_values(spec, agg, self._curves, self._interval)

    def serie(self, metric_id: str, method: str | None) -> JsonObject | None:
        parts = self._serie_parts(metric_id, method)
        if parts is None:
            return None
        head, values = parts
        points = zip(self._timestamps, values, strict=True)
        return {**head, "values": [{"timestamp": ts, "value": v} for ts, v in points]}

    def _pick_thresholds(self, *, failing: bool) -> list[tuple[str, str, JsonObject]]:
        """1-3 thresholds as (metric name, metric type, k6-threshold); the first fails on
        a run aborted by a threshold, others now and then."""
        rng = self._rng
        chosen = rng.sample(_THRESHOLDS, rng.randint(1, 3))
        ended = self.started + timedelta(seconds=self._points * self._interval)
        out = []
        for k, (metric, mtype, stat, op, limit) in enumerate(chosen):
            tainted = (failing and k == 0) or rng.random() < 0.1
            # Above the limit breaks a "<" threshold, below it breaks a ">" one.
            slack = rng.uniform(1.05, 1.6) if tainted == (op == "<") else rng.uniform(0.4, 0.95)
            value = min(limit * slack, 1.0) if mtype == "rate" else limit * slack
            threshold_id = self.run_id * 10 + k + 1
            threshold = {
                "calc_state": {
                    "max_created_at": _spaced(ended + timedelta(seconds=37, microseconds=348933)),
                    "max_time": _spaced(ended),
                    "min_time": _spaced(self.started),
                    "tainted_value": None,
                },
                "calculated_value": round(value, 4),
                "id": threshold_id,
                "metric_id": f"threshold_{threshold_id}",
                "name": f"{stat}{op}{limit:g}",
                "stat": stat,
                "tainted": tainted,
                "tainted_at": _spaced(ended) if tainted else None,
                "testrun_id": self.run_id,
                "value": limit,
            }
            out.append((metric, mtype, threshold))
        return out

    def thresholds(self) -> tuple[list[JsonObject], list[JsonObject]]:
        project_id = int(self._run["project_id"])
        metrics = [
            {
                "check_id": None,
                "contains": "time" if mtype == "trend" else "default",
                "group_id": hex_id("group", self.run_id, ""),
                "id": threshold["metric_id"],
                "name": metric,
                "project_id": project_id,
                "tags": {},
                "test_run_id": self.run_id,
                "type": mtype,
                "url_id": None,
            }
            for metric, mtype, threshold in self._thresholds
        ]
        return metrics, [threshold for _, _, threshold in self._thresholds]

    def overview(self) -> JsonObject:
        """Totals consistent with the run's metrics (URL variants, checks, thresholds)."""
        seconds = self._points * self._interval
        busy = sum(self._curves.load) / self._points  # average share of full load
        urls = [s for s in self.specs.values() if s.name == "http_reqs" and s.url]
        hits = {s.id: round(s.level * seconds * busy) for s in urls}
        ok_urls = [s for s in urls if s.url and s.url[1] < 400]
        checks = [s for s in self.specs.values() if s.check]
        check_hits = {s.id: round(s.samples * seconds * busy) for s in checks}
        durations = [s.level for s in self.specs.values() if s.name == "http_req_duration"]
        thresholds = [t for _, _, t in self._thresholds]
        return {
            "checks_hits_successes": sum(round(check_hits[s.id] * s.level) for s in checks),
            "checks_hits_total": sum(check_hits.values()),
            "checks_successes": sum(1 for s in checks if s.level >= 1.0),
            "checks_total": len(checks),
            "http_req_duration_avg": sum(durations) / len(durations) if durations else 0.0,
            "http_reqs_avg": sum(hits.values()) / seconds,
            "test_run_id": self.run_id,
            "thresholds_successes": sum(1 for t in thresholds if not t["tainted"]),
            "thresholds_total": len(thresholds),
            "urls_hits_successes": sum(hits[s.id] for s in ok_urls),
            "urls_hits_total": sum(hits.values()),
            "urls_successes": len(ok_urls),
            "urls_total": len(urls),
        }


def _created_dates(anchor: datetime, count: int, rng: random.Random) -> list[datetime]:
    """Ascending `created` moments, 6-18 hours apart, the last an hour before `anchor`."""
    moments, moment = [], anchor - timedelta(hours=1)
    for _ in range(count):
        moments.append(moment)
        moment -= timedelta(seconds=rng.randint(6 * 3600, 18 * 3600))
    return moments[::-1]


def _add_account(cloud: SimCloud, projects: int, tests: int, first_created: datetime) -> None:
    cloud.add_organization(ORGANIZATION_ID, "k6 demo org")
    for p in range(projects):
        name = PROJECT_NAMES[p % len(PROJECT_NAMES)] + (
            f" {p + 1}" if p >= len(PROJECT_NAMES) else ""
        )
        cloud.add_project(FIRST_PROJECT_ID + p, ORGANIZATION_ID, name)
    for t in range(tests):
        name = TEST_NAMES[t % len(TEST_NAMES)] + (f" {t + 1}" if t >= len(TEST_NAMES) else "")
        created = iso(first_created - timedelta(days=1, hours=t))
        cloud.add_test(FIRST_TEST_ID + t, FIRST_PROJECT_ID + t % projects, name, created=created)


def _statuses(kind: str, index: int, rng: random.Random) -> tuple[int, int]:
    """(run_status, processing_status) of a "done", "error" or "pending" run."""
    if kind == "pending":
        return (2, 0) if index % 2 == 0 else (3, 1)  # still running / finished, processing
    if kind == "error":
        return 3, 3
    return (rng.choice((5, 8)) if rng.random() < 0.15 else 3), 2


def generate_cloud(
    runs: int = 5,
    metrics: int = 20,
    points: int = 60,
    seed: int = 0,
    *,
    pending_runs: int = 0,
    processing_error_runs: int = 0,
    first_run_id: int = 100001,
    missing_series: int = 0,
    projects: int = 2,
    tests: int = 3,
    interval: int = 3,
    anchor: datetime | None = None,
) -> SimCloud:
    """A generated account: `runs` harvestable runs (mostly finished, some aborted), then
    `processing_error_runs` (processing_status 3, a quarter of their series missing), then
    `pending_runs` (running, or finished but still processing), with consecutive ids from
    `first_run_id`, spread over `tests` tests in `projects` projects and over past days
    before `anchor` (default `FIXED_ANCHOR`; pass `datetime.now(UTC)` for live dates)."""
    if min(runs, pending_runs, processing_error_runs, missing_series) < 0:
        raise ValueError("run and gap counts must not be negative")
    if projects < 1 or tests < 1:
        raise ValueError("need at least one project and one test")
    rng = random.Random(f"cloud:{seed}")
    kinds = ["done"] * runs + ["error"] * processing_error_runs + ["pending"] * pending_runs
    created = _created_dates(anchor or FIXED_ANCHOR, len(kinds), rng)
    cloud = SimCloud()
    _add_account(cloud, projects, tests, created[0] if created else (anchor or FIXED_ANCHOR))
    for index, kind in enumerate(kinds):
        run_status, processing_status = _statuses(kind, index, rng)
        gaps = max(missing_series, metrics // 4) if kind == "error" else missing_series
        test = index % tests
        run = GeneratedRun(
            first_run_id + index,
            metrics=metrics,
            points=points,
            seed=seed,
            interval=interval,
            created=created[index],
            test_id=FIRST_TEST_ID + test,
            project_id=FIRST_PROJECT_ID + test % projects,
            run_status=run_status,
            processing_status=processing_status,
            missing_series=gaps,
        )
        cloud.add_run(run)
    return cloud
