"""A synthetic k6 recording with many tag sets, as `k6 run --out json=FILE` writes it.

A high-cardinality run: `tag_sets` distinct requests (each its own `name` and `url`
tags, as a script requesting many item pages without naming them gives), each made
`hits` times over `seconds`, every request emitting k6's nine HTTP metrics and an
`iterations` and `vus` point besides. Through the v5 API one range query of an HTTP
metric then answers `tag_sets` series (the memory bench, `scripts/bench --api v6 --size
wide`). Deterministic for a seed; written gzip-compressed when the path ends in `.gz`.
"""

from __future__ import annotations

import gzip
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import orjson

HTTP_TRENDS = (
    "http_req_duration", "http_req_blocked", "http_req_connecting", "http_req_tls_handshaking",
    "http_req_sending", "http_req_waiting", "http_req_receiving",
)  # fmt: skip
START = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def _declarations() -> Iterator[bytes]:
    kinds = {"http_reqs": "counter", "http_req_failed": "rate", "iterations": "counter",
             "vus": "gauge", **dict.fromkeys(HTTP_TRENDS, "trend")}  # fmt: skip
    for name, kind in kinds.items():
        contains = "time" if kind == "trend" else "default"
        data: dict[str, object] = {"name": name, "type": kind, "contains": contains,
                                   "thresholds": [], "submetrics": None}  # fmt: skip
        yield orjson.dumps({"type": "Metric", "data": data, "metric": name})


def _point(metric: str, when: datetime, value: float, tags: dict[str, str]) -> bytes:
    data = {"time": when.isoformat(timespec="microseconds"), "value": value, "tags": tags}
    return orjson.dumps({"type": "Point", "data": data, "metric": metric})


def _request(rng: random.Random, index: int, when: datetime) -> Iterator[bytes]:
    url = f"https://shop.example.com/items/{index}"
    status = "200" if rng.random() < 0.97 else "404"
    tags = {"expected_response": str(status == "200").lower(), "group": "", "method": "GET",
            "name": url, "proto": "HTTP/1.1", "scenario": "default", "status": status,
            "tls_version": "tls1.3", "url": url}  # fmt: skip
    yield _point("http_reqs", when, 1, tags)
    for metric in HTTP_TRENDS:
        yield _point(metric, when, round(rng.uniform(0.0, 250.0), 3), tags)
    yield _point("http_req_failed", when, 0 if status == "200" else 1, tags)
    yield _point("iterations", when, 1, {"group": "", "scenario": "default"})


def write_k6_wide(
    path: Path, tag_sets: int, *, hits: int = 2, seconds: int = 600, seed: int = 0
) -> None:
    """Write the recording (see the module docstring) to `path`."""
    rng = random.Random(f"k6wide:{seed}")
    moments = sorted(
        (rng.uniform(0, seconds), index) for index in range(tag_sets) for _ in range(hits)
    )
    with path.open("wb") as raw:
        if path.suffix == ".gz":
            with gzip.GzipFile(fileobj=raw, mode="wb") as packed:
                _write(packed, rng, moments)
        else:
            _write(raw, rng, moments)


def _write(
    out: BinaryIO | gzip.GzipFile, rng: random.Random, moments: list[tuple[float, int]]
) -> None:
    for line in _declarations():
        out.write(line + b"\n")
    for second in range(0, int(moments[-1][0]) + 1 if moments else 0, 10):
        out.write(_point("vus", START + timedelta(seconds=second), 10.0, {}) + b"\n")
    for offset, index in moments:
        for line in _request(rng, index, START + timedelta(seconds=offset)):
            out.write(line + b"\n")
