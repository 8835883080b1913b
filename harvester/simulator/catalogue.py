"""The metrics a generated run reports, named and tagged the way k6 and k6 Cloud do it.

`build_metrics` lays them out as k6 Cloud stores them: the run-wide metrics first, then for
each requested URL a group, one sub-metric per HTTP metric and url/method/status, and checks.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice

import orjson

from harvester.simulator.model import JsonObject

#: (name, type, contains, share of the request's latency) of k6's built-in HTTP metrics.
HTTP_METRICS = (
    ("http_req_duration", "trend", "time", 1.0),
    ("http_req_blocked", "trend", "time", 0.004),
    ("http_req_connecting", "trend", "time", 0.002),
    ("http_req_tls_handshaking", "trend", "time", 0.006),
    ("http_req_sending", "trend", "time", 0.0005),
    ("http_req_waiting", "trend", "time", 0.9),
    ("http_req_receiving", "trend", "time", 0.08),
    ("http_reqs", "counter", "default", 0.0),
    ("http_req_failed", "rate", "default", 0.0),
)
HOSTS = ("https://test.k6.io", "https://quickpizza.grafana.com", "https://test-api.k6.io")
PATHS = (
    "/",
    "/news.php",
    "/contacts.php",
    "/pi.php?decimals=3",
    "/flip_coin.php?bet=heads",
    "/my_messages.php",
    "/login.php",
    "/static/css/site.css",
    "/static/favicon.ico",
    "/api/pizza",
    "/api/ratings",
    "/api/users/token/login",
)
CHECKS = ("status is 200", "body is not empty", "is logged in", "has title", "fast enough")
#: A new group every this many paths (k6 scripts group a page's requests).
PATHS_PER_GROUP = 3


def hex_id(*parts: object) -> str:
    """A stable 32-hex id from its parts (ids never depend on Python's hash seed)."""
    return hashlib.md5(":".join(map(str, parts)).encode(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class MetricSpec:
    """One (sub)metric of a run and what its values look like."""

    id: str
    name: str
    type: str
    contains: str
    tags: dict[str, str]
    group: str | None = None
    check: str | None = None
    #: (method, status, url) of an HTTP sub-metric.
    url: tuple[str, int, str] | None = None
    #: Typical value: ms for trends, per-second rate for counters, ratio for rates.
    level: float = 1.0
    #: Samples per second at full load (series `count`).
    samples: float = 1.0

    def as_json(self, run_id: int, project_id: int) -> JsonObject:
        return {
            "check_id": hex_id("check", run_id, self.group, self.check) if self.check else None,
            "contains": self.contains,
            "group_id": hex_id("group", run_id, self.group) if self.group is not None else None,
            "id": self.id,
            "name": self.name,
            "project_id": project_id,
            "tags": self.tags,
            "test_run_id": run_id,
            "type": self.type,
            "url_id": hex_id("url", run_id, *self.url) if self.url else None,
        }


@dataclass(frozen=True)
class RunShape:
    """Run-wide numbers the metrics are derived from."""

    run_id: int
    host: str
    max_vus: int
    iteration_ms: float


def group_tag(index: int) -> str:
    return f"::page_{index + 1}"


def group_name(shape: RunShape, index: int) -> str:
    """The k6-group `name` (k6 Cloud shows the group and its first page)."""
    return f"page_{index + 1} - {shape.host}{path_of(index * PATHS_PER_GROUP)}"


def path_of(index: int) -> str:
    return PATHS[index] if index < len(PATHS) else f"/items/{index}"


def _spec(
    run_id: int,
    name: str,
    kind: tuple[str, str],
    tags: dict[str, str],
    *,
    level: float,
    samples: float,
    group: str | None = None,
    check: str | None = None,
    url: tuple[str, int, str] | None = None,
) -> MetricSpec:
    """A metric whose id hashes the run, the name and the tags, as k6 Cloud's ids are per run."""
    metric_id = hex_id("metric", run_id, name, orjson.dumps(tags, option=orjson.OPT_SORT_KEYS))
    mtype, contains = kind
    return MetricSpec(metric_id, name, mtype, contains, tags, group, check, url, level, samples)


def _run_wide(shape: RunShape) -> list[MetricSpec]:
    rid, vus = shape.run_id, float(shape.max_vus)
    iterations = vus / (shape.iteration_ms / 1000)
    root = {"group": "", "scenario": "default"}
    scenario = {"scenario": "default"}
    return [
        _spec(rid, "vus", ("gauge", "default"), {}, level=vus, samples=1),
        _spec(rid, "vus_max", ("gauge", "default"), {}, level=vus, samples=1),
        _spec(
            rid,
            "iterations",
            ("counter", "default"),
            root,
            level=iterations,
            samples=iterations,
            group="",
        ),
        _spec(
            rid,
            "iteration_duration",
            ("trend", "time"),
            root,
            level=shape.iteration_ms,
            samples=iterations,
            group="",
        ),
        _spec(rid, "data_sent", ("counter", "data"), scenario, level=vus * 400, samples=vus),
        _spec(rid, "data_received", ("counter", "data"), scenario, level=vus * 9000, samples=vus),
    ]


def _variants(path: str, rng: random.Random) -> list[tuple[str, int]]:
    """(method, status) pairs one URL was answered with: k6 Cloud splits metrics by them."""
    method = "POST" if path in ("/api/pizza", "/api/users/token/login", "/login.php") else "GET"
    pairs = [(method, 201 if path == "/api/ratings" else 200)]
    if rng.random() < 0.35:
        pairs.append((method, rng.choice((403, 404, 500))))
    return pairs


def _http_specs(
    shape: RunShape, tag: str, method: str, status: int, url: str, rng: random.Random
) -> Iterator[MetricSpec]:
    static = "/static/" in url
    latency = rng.uniform(4, 40) if static else rng.uniform(40, 350)
    rate = rng.uniform(0.05, 0.5) if status >= 400 else rng.uniform(0.5, 6.0)
    tags = {"group": tag, "method": method, "status": str(status), "url": url}
    for name, mtype, contains, share in HTTP_METRICS:
        if mtype == "trend":
            level = max(latency * share, 0.01)
        else:
            level = rate if mtype == "counter" else float(status >= 400)
        yield _spec(
            shape.run_id,
            name,
            (mtype, contains),
            tags,
            level=level,
            samples=rate,
            group=tag,
            url=(method, status, url),
        )


def _per_path(shape: RunShape, index: int, rng: random.Random) -> Iterator[MetricSpec]:
    group = index // PATHS_PER_GROUP
    tag = group_tag(group)
    if index % PATHS_PER_GROUP == 0:
        yield _spec(
            shape.run_id,
            "group_duration",
            ("trend", "time"),
            {"group": tag},
            level=rng.uniform(150, 1500),
            samples=shape.max_vus / 4,
            group=tag,
        )
    path = path_of(index)
    for method, status in _variants(path, rng):
        yield from _http_specs(shape, tag, method, status, shape.host + path, rng)
    check = CHECKS[index % len(CHECKS)]
    passing = 1.0 if rng.random() < 0.7 else rng.uniform(0.9, 0.999)
    yield _spec(
        shape.run_id,
        "checks",
        ("rate", "default"),
        {"check": check, "group": tag},
        level=passing,
        samples=shape.max_vus / 2,
        group=tag,
        check=check,
    )


def build_metrics(shape: RunShape, count: int, rng: random.Random) -> list[MetricSpec]:
    """The first `count` metrics of the run, in k6 Cloud's listing order."""

    def every() -> Iterator[MetricSpec]:
        yield from _run_wide(shape)
        index = 0
        while True:
            yield from _per_path(shape, index, rng)
            index += 1

    return list(islice(every(), count))
