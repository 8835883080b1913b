"""Streaming reader of k6's JSON output (`k6 run --out json=FILE`), plain or gzip.

`read_k6_output` yields each line as a `MetricDecl` or a `Point` and forgets it, so memory
does not grow with the file. Other line types are skipped and counted (newer k6 versions
may add some). A line that is not JSON, or a Metric/Point line without the fields k6
always writes, raises `K6OutputError` naming file and line; with `skip_bad_lines=True`
it is skipped and counted instead. `collect_samples` makes the one pass the k6 Cloud
model (`k6import.py`) needs, keeping only bucketed values; `k6summary.py` reads what a
summary file adds.
"""

from __future__ import annotations

import gzip
import io
import math
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from harvester.errors import ConfigError
from harvester.simulator.k6thresholds import SplitKey, ThresholdDecl, ThresholdSpec, threshold_spec

_GZIP_MAGIC = b"\x1f\x8b"


class K6OutputError(ConfigError, ValueError):
    """The k6 output file cannot be read: names the file and, where known, the line.
    Bad input, so the CLI answers with one line and exit status 2."""

    def __init__(self, message: str, *, path: Path, line_no: int | None = None) -> None:
        where = f"{path}:{line_no}" if line_no is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line_no = line_no


@dataclass(frozen=True, slots=True)
class SubmetricDecl:
    """A submetric k6 declared on a metric, such as `http_req_duration{scenario:buy}`."""

    name: str
    tags: dict[str, str]
    #: k6 (v1.1 at least) writes no submetric thresholds in its JSON output; read if there.
    thresholds: tuple[ThresholdSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class MetricDecl:
    """A `"type": "Metric"` line: a metric's name, type, unit and thresholds."""

    name: str
    type: str
    contains: str
    thresholds: tuple[ThresholdSpec, ...]
    submetrics: tuple[SubmetricDecl, ...]


@dataclass(frozen=True, slots=True)
class Point:
    """A `"type": "Point"` line: one sample at `time` (seconds since the epoch, UTC)."""

    metric: str
    time: float
    value: float
    tags: dict[str, str]


@dataclass(slots=True)
class ReadStats:
    """What the reader saw: line counts, filled in as the file is read."""

    lines: int = 0
    metrics: int = 0
    points: int = 0
    unknown_lines: int = 0
    bad_lines: int = 0
    #: Line numbers of the first few skipped bad lines, for a message to the user.
    first_bad_lines: list[int] = field(default_factory=list)


class _BadLine(Exception):
    """Internal: this line is not a well-formed Metric/Point line."""


def open_k6_output(path: Path) -> io.BufferedIOBase:
    """Open a k6 output file for binary line reading, decompressing gzip transparently."""
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise K6OutputError(f"cannot open: {exc.strerror or exc}", path=path) from exc
    if raw.peek(2)[:2] != _GZIP_MAGIC:
        if path.suffix != ".gz":
            return raw
        raw.close()
        raise K6OutputError("named .gz but is not gzip data", path=path)
    # GzipFile(fileobj=...) would leave `raw` open when it is closed: let it own the file.
    raw.close()
    return gzip.GzipFile(path, mode="rb")


def read_k6_output(
    path: str | Path, *, skip_bad_lines: bool = False, stats: ReadStats | None = None
) -> Iterator[MetricDecl | Point]:
    """Yield the Metric and Point lines of a k6 JSON output file, in file order.

    A generator: nothing is read before the first `next()`, and the file is closed when
    the generator ends or is closed. `stats`, if given, is filled in as lines are read.
    """
    path = Path(path)
    stats = stats if stats is not None else ReadStats()
    with open_k6_output(path) as stream:
        line_no = 0
        try:
            for line_no, line in enumerate(stream, start=1):
                stats.lines = line_no
                item = _read_line(line, path, line_no, skip_bad_lines, stats)
                if item is not None:
                    yield item
        except (OSError, EOFError, zlib.error) as exc:
            # A truncated or corrupt gzip stream surfaces here, after the last good line.
            raise K6OutputError(f"read error after line {line_no}: {exc}", path=path) from exc


def _read_line(
    line: bytes, path: Path, line_no: int, skip_bad_lines: bool, stats: ReadStats
) -> MetricDecl | Point | None:
    """Parse one line; None for blank, unknown or (when skipping) bad lines."""
    if not line.strip():
        return None
    try:
        item = _parse(line)
    except _BadLine as exc:
        if not skip_bad_lines:
            raise K6OutputError(str(exc), path=path, line_no=line_no) from None
        stats.bad_lines += 1
        if len(stats.first_bad_lines) < 10:
            stats.first_bad_lines.append(line_no)
        return None
    if item is None:
        stats.unknown_lines += 1
    elif isinstance(item, Point):
        stats.points += 1
    else:
        stats.metrics += 1
    return item


def _parse(line: bytes) -> MetricDecl | Point | None:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise _BadLine(f"not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise _BadLine("not a JSON object")
    kind = obj.get("type")
    try:
        if kind == "Point":
            return _point(obj)
        if kind == "Metric":
            return _metric(obj["data"])
    except (KeyError, TypeError, ValueError) as exc:
        raise _BadLine(f"malformed {kind} line ({type(exc).__name__}: {exc})") from None
    return None


def _point(obj: dict[str, Any]) -> Point:
    data = obj["data"]
    value = data["value"]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"value is not a number: {value!r}")
    tags = data.get("tags") or {}
    if not isinstance(tags, dict):
        raise TypeError("tags is not an object")
    if not all(type(v) is str for v in tags.values()):  # k6 writes strings; labels are
        tags = {k: v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in tags.items()}
    moment = datetime.fromisoformat(data["time"])
    if moment.tzinfo is None:  # k6 always writes an offset; read a bare time as UTC
        moment = moment.replace(tzinfo=UTC)
    when = moment.timestamp()
    return Point(str(obj["metric"]), when, float(value), tags)


def _metric(data: dict[str, Any]) -> MetricDecl:
    subs = tuple(
        SubmetricDecl(str(s["name"]), dict(s.get("tags") or {}), _specs(s.get("thresholds")))
        for s in data.get("submetrics") or ()
    )
    return MetricDecl(
        name=str(data["name"]),
        type=str(data["type"]),
        contains=str(data.get("contains") or "default"),
        thresholds=_specs(data.get("thresholds")),
        submetrics=subs,
    )


def _specs(entries: Any) -> tuple[ThresholdSpec, ...]:
    """k6 writes each threshold as a string or as an object (with abortOnFail)."""
    return tuple(threshold_spec(entry) for entry in entries or ())


# --- one pass that keeps only bucketed samples ------------------------------------------


@dataclass(slots=True)
class SampleSeries:
    """The samples of one metric and tag set, one `array('d')` per time bucket."""

    name: str
    tags: dict[str, str]
    buckets: dict[int, array[float]] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(len(bucket) for bucket in self.buckets.values())

    def samples(self) -> Iterator[float]:
        """Every sample, bucket by bucket in time order (file order within a bucket)."""
        for index in sorted(self.buckets):
            yield from self.buckets[index]


#: One distinct k6 tag set, sorted by key: a v5 series of its metric.
LabelKey = tuple[tuple[str, str], ...]


@dataclass(slots=True)
class TaggedSamples:
    """The samples of one metric and full tag set in file order, each with its bucket
    index: two flat arrays (12 bytes a sample), however sparse the set's samples are.
    Indexes are kept as 32-bit offsets from the set's first one (`base`)."""

    base: int | None = None
    offsets: array[int] = field(default_factory=lambda: array("i"))
    values: array[float] = field(default_factory=lambda: array("d"))

    def add(self, index: int, value: float) -> None:
        if self.base is None:
            self.base = index
        self.offsets.append(index - self.base)
        self.values.append(value)

    def by_bucket(self) -> dict[int, array[float]]:
        """bucket index -> its samples in file order, made on demand."""
        grouped: dict[int, array[float]] = {}
        base = self.base or 0
        for offset, value in zip(self.offsets, self.values, strict=True):
            index = base + offset
            found = grouped.get(index)
            if found is None:
                found = grouped[index] = array("d")
            found.append(value)
        return grouped


@dataclass(slots=True)
class Samples:
    """What one pass over a k6 output file keeps: declarations and bucketed samples, once
    per metric and distinguishing tags (`series`, the v2 view) and once per metric and
    full tag set (`labelled`, the v5 view: every k6 tag is a label)."""

    bucket_seconds: float
    stats: ReadStats = field(default_factory=ReadStats)
    decls: dict[str, MetricDecl] = field(default_factory=dict)
    series: dict[tuple[str, SplitKey], SampleSeries] = field(default_factory=dict)
    labelled: dict[tuple[str, LabelKey], TaggedSamples] = field(default_factory=dict)
    thresholds: list[ThresholdDecl] = field(default_factory=list)
    #: metric -> submetric tags -> samples, for submetrics that carry thresholds.
    submetric_samples: dict[str, dict[SplitKey, array[float]]] = field(default_factory=dict)
    first: float = math.inf
    last: float = -math.inf
    #: (metric, full tag set) -> where its samples go: found with one lookup per sample.
    _routes: dict[tuple[str, LabelKey], tuple[dict[int, array[float]], TaggedSamples]] = field(
        default_factory=dict
    )
    #: One shared copy of each (tag, value) pair, so that many tag sets that differ in
    #: one tag cost a tuple of references each, not copies of every pair and string.
    _pairs: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)

    def watch(self, threshold: ThresholdDecl, *, listed: bool = True) -> None:
        """Keep the samples matching a submetric threshold's tags from now on, and list
        the threshold (once) unless `listed` is False."""
        if threshold.tags:
            by_tags = self.submetric_samples.setdefault(threshold.metric, {})
            by_tags.setdefault(tuple(sorted(threshold.tags.items())), array("d"))
        if listed and threshold.key not in {t.key for t in self.thresholds}:
            self.thresholds.append(threshold)

    def add(self, point: Point, split: Callable[[str, dict[str, str]], SplitKey]) -> None:
        """Keep one sample under its time bucket in both views; `split` picks the
        distinguishing tags of a tag set not seen before."""
        full = tuple(sorted(point.tags.items()))
        routes = self._routes.get((point.metric, full))
        if routes is None:
            routes = self._route(point.metric, full, split(point.metric, point.tags))
        buckets, tagged = routes
        index = math.floor(point.time / self.bucket_seconds)
        bucket = buckets.get(index)
        if bucket is None:
            bucket = buckets[index] = array("d")
        bucket.append(point.value)
        tagged.add(index, point.value)
        if point.time < self.first:  # plain comparisons: this runs once per sample
            self.first = point.time
        if point.time > self.last:
            self.last = point.time
        for wanted, samples in self.submetric_samples.get(point.metric, {}).items():
            if all(point.tags.get(k) == v for k, v in wanted):
                samples.append(point.value)

    def routed(self) -> None:
        """The file is read: forget the routing tables (a few hundred bytes a tag set)."""
        self._routes.clear()
        self._pairs.clear()

    def _route(
        self, metric: str, full: LabelKey, key: SplitKey
    ) -> tuple[dict[int, array[float]], TaggedSamples]:
        shared = tuple(self._pairs.setdefault(pair, pair) for pair in full)
        series = self.series.get((metric, key))
        if series is None:
            series = self.series[metric, key] = SampleSeries(metric, dict(key))
        routes = series.buckets, self.labelled.setdefault((metric, shared), TaggedSamples())
        self._routes[metric, shared] = routes
        return routes


def collect_samples(
    path: str | Path,
    *,
    bucket_seconds: float,
    split: Callable[[str, dict[str, str]], SplitKey],
    thresholds: Iterable[ThresholdDecl] = (),
    skip_bad_lines: bool = False,
) -> Samples:
    """Read a k6 output file once, keeping each sample as a float in its metric's bucket.

    `split(metric, tags)` picks the tags that tell metrics apart; all other tags are
    dropped. `thresholds` adds expressions the file does not declare (submetrics').
    """
    path = Path(path)
    got = Samples(bucket_seconds)
    extra = list(thresholds)
    for threshold in extra:  # keep their samples from the first line; list them last
        got.watch(threshold, listed=False)
    for item in read_k6_output(path, skip_bad_lines=skip_bad_lines, stats=got.stats):
        if isinstance(item, MetricDecl):
            got.decls[item.name] = item
            for spec in item.thresholds:
                got.watch(ThresholdDecl(item.name, {}, spec))
            for sub in item.submetrics:
                for spec in sub.thresholds:
                    got.watch(ThresholdDecl(item.name, dict(sub.tags), spec))
        elif item.metric in got.decls:
            got.add(item, split)
        elif skip_bad_lines:
            got.stats.bad_lines += 1
        else:
            message = f"Point of metric {item.metric!r} before its Metric line"
            raise K6OutputError(message, path=path, line_no=got.stats.lines)
    for threshold in extra:
        got.watch(threshold)
    got.routed()
    return got
