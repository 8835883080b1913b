"""The machinery of `scripts/bench`: the simulator on a thread, a spawner that measures
child processes as the OS counts them, and the three contenders (floor, naive, harvester).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import statistics
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from harvester.backends.v2 import V2Backend
from harvester.backends.v2_plan import V2Plan
from harvester.compression import run_id_of
from harvester.config import load_settings
from harvester.ratelimit import RateGate
from harvester.simulator.faults import FaultPlan
from harvester.simulator.generated import generate_cloud
from harvester.simulator.requestlog import LoggedRequest, max_in_window
from harvester.simulator.server import Simulator
from harvester.stats import HarvestStats
from harvester.transport import Transport

HERE = Path(__file__).resolve().parent
TOKEN = "bench-token"
V2 = "/loadtests/v2"
#: (runs, metrics per run, points per serie); `large` is 4x `medium` (2x runs, 2x metrics);
#: `long` has series of 20,000 points (~1 MB each as JSON): memory must not follow them.
SIZES = {
    "small": (10, 100, 120),
    "medium": (40, 200, 240),
    "large": (80, 400, 240),
    "long": (4, 200, 20_000),
}
UNLIMITED = 1_000_000.0  # --rate for the harvester when nothing limits it


@dataclass
class DataSet:
    name: str
    runs: int
    metrics: int
    points: int
    run_ids: list[int] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)  # what the harvester needs, in order
    #: metrics of each run without a serie (k6 Cloud has none for a metric without samples)
    gaps: int = 0
    #: the v2 backend's plan of every run's requests (`V2Backend.minimum_plan`)
    plan: V2Plan = field(default_factory=V2Plan)

    @property
    def ids_per_request(self) -> int:
        return self.plan.ids_per_request

    @property
    def series_requests(self) -> int:
        return self.plan.series_requests

    @property
    def probe_extra(self) -> int:
        return self.plan.probe_extra

    @property
    def reasks(self) -> int:
        return self.plan.reasks

    def facts(self) -> dict[str, object]:
        """The data set's shape and its plan's figures, for the bench's JSON."""
        shape = {"name": self.name, "runs": self.runs, "metrics": self.metrics}
        plan = {"series_requests": self.series_requests, "probe_extra": self.probe_extra}
        plan |= {"reasks": self.reasks, "ids_per_request": self.ids_per_request}
        return shape | {"points": self.points, "gaps": self.gaps} | plan

    @property
    def min_requests(self) -> int:
        return len(self.urls)

    @property
    def naive_requests_per_run(self) -> int:
        return 3 + self.metrics

    def describe(self) -> str:
        series = self.runs * self.metrics
        gaps = f", {self.gaps} metrics a run without a serie" if self.gaps else ""
        return (
            f"{self.name} = {self.runs} runs x {self.metrics} metrics x {self.points} points "
            f"({series:,} series, {series * self.points:,} points{gaps})"
        )


@dataclass
class Sample:
    wall: float
    cpu: float
    rss_mb: float
    requests: int
    records: int
    bytes_out: int
    max_per_second: int
    #: mean `ids[]` of a series request
    ids_per_request: float
    #: seconds from the process's start to its first request, and from its last to its exit
    lead_in: float
    tail: float
    #: injected 429s answered (`--throttle`)
    throttled: int = 0


def say(text: str) -> None:
    sys.stderr.write(f"bench: {text}\n")
    sys.stderr.flush()


def medians(samples: dict[str, list[Sample]]) -> dict[str, dict[str, float]]:
    """Each contender's median of each figure over its `--repeat` samples."""
    return {name: {f: statistics.median(getattr(s, f) for s in taken) for f in asdict(taken[0])}
            for name, taken in samples.items()}  # fmt: skip


#: A target: (what, measured value, most allowed, the value as shown).
Check = tuple[str, float, float, str]


def verdicts(name: str, checks: Sequence[Check]) -> list[dict[str, Any]]:
    """Print each target's verdict as `[ok] NAME: what: shown` (or MISSED) and return them
    for the bench's JSON."""
    targets = []
    for label, value, limit, shown in checks:
        ok = value <= limit + 1e-9
        targets.append({"target": f"{name}: {label}", "value": round(value, 4), "ok": ok})
        print(f"  [{'ok' if ok else 'MISSED'}] {name}: {label}: {shown}")
    return targets


# --- the simulator, on a thread of this process ---------------------------------------


class SimHost:
    """Serves a generated data set on 127.0.0.1 from a background thread's event loop."""

    def __init__(self, data: DataSet, max_url_length: int, faults: FaultPlan | None = None) -> None:
        self.data = data
        self.max_url_length = max_url_length
        self.faults = faults
        self.base_url = ""
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._sim: Simulator | None = None
        self._error: BaseException | None = None
        self._v2: V2Backend | None = None
        self._thread = threading.Thread(target=self._main, name="simulator", daemon=True)

    def __enter__(self) -> SimHost:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join()

    def _main(self) -> None:
        try:
            import uvloop

            self._loop = uvloop.new_event_loop()
        except ImportError:  # pragma: no cover
            self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported by __enter__
            self._error = exc
            self._ready.set()
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        d = self.data
        cloud = generate_cloud(d.runs, d.metrics, d.points, seed=0, missing_series=d.gaps)
        self._stop = asyncio.Event()
        async with Simulator(cloud, token=TOKEN, faults=self.faults) as sim:
            sim.warm()
            self._sim, self.base_url = sim, sim.base_url
            d.run_ids = sorted(cloud.runs)
            for run_id in d.run_ids:
                run = cloud.runs[run_id]
                ids = [str(m["id"]) for m in run.metrics()]
                gaps: frozenset[str] = getattr(run, "missing", frozenset())
                self._plan_run(run_id, ids, [i for i in ids if i in gaps])
            self._ready.set()
            await self._stop.wait()

    def _plan_run(self, run_id: int, ids: list[str], gaps: list[str]) -> None:
        """The URLs the harvester needs for a run, as the v2 backend plans them
        (`V2Backend.minimum_plan`): the planned batches, then the ids without a serie asked
        again together."""
        backend = self._backend()
        before = len(self.data.plan.paths)
        backend.minimum_plan(self.data.plan, run_id, ids, gaps, points=self.data.points)
        self.data.urls += [self.base_url + p for p in self.data.plan.paths[before:]]

    def _backend(self) -> V2Backend:
        if self._v2 is None:
            flags = {"base_url": self.base_url, "token": TOKEN}
            settings = load_settings({**flags, "max_url_length": self.max_url_length}, environ={})
            transport = Transport(
                settings, gate=RateGate.for_settings(settings), stats=HarvestStats()
            )  # fmt: skip  (never opened: no request)
            self._v2 = V2Backend(settings, transport)
        return self._v2

    def take_log(self) -> list[LoggedRequest]:
        """Every request answered since the last call (and forget them)."""

        async def take() -> list[LoggedRequest]:
            assert self._sim is not None
            entries = list(self._sim.log)
            self._sim.log.clear()
            return entries

        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(take(), self._loop).result()


# --- running and measuring a child process -------------------------------------------


@dataclass(frozen=True)
class Child:
    """A finished child process: start and end on the monotonic clock, CPU s, peak RSS MB."""

    start: float
    end: float
    cpu: float
    rss_mb: float
    stdout: str


#: Runs in its own small process (stdlib only, no site-packages) and starts the contenders.
#: Linux counts the RSS of the process that spawns a child in that child's `ru_maxrss`
#: (exec records the old address space's high-water mark), so spawning from this process,
#: which holds the simulator's rendered bodies, would report hundreds of MB for anyone.
#: A contender with processes of its own (`--format points` writes in a child, started by
#: a worker thread: each thread's children are listed apart) is sampled
#: every 50 ms: the peak is then the larger of its `ru_maxrss` (the largest one process
#: reached: wait4 does not add a child's to its parent's) and the peak sum of the tree's
#: PSS (shared pages counted once), what a container's memory limit would see.
SPAWNER = r"""
import json, os, sys, threading, time
flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC

def tree(pid):
    pids = [pid]
    for p in pids:
        try:  # every thread's children (the harvester starts its writer from a worker)
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                pids += [int(k) for k in open(f"/proc/{p}/task/{t}/children").read().split()]
            except OSError:
                pass
    return pids

def pss_kb(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                total += next(int(l.split()[1]) for l in f if l.startswith("Pss:"))
        except (OSError, StopIteration):
            pass
    return total

for line in sys.stdin:
    job = json.loads(line)
    actions = [(os.POSIX_SPAWN_OPEN, fd, job[name], flags, 0o644)
               for fd, name in ((1, "stdout"), (2, "stderr"))]
    started = time.monotonic()  # the clock the simulator stamps requests with
    pid = os.posix_spawn(job["cmd"][0], job["cmd"], job["env"], file_actions=actions)
    waited = []  # (status, rusage, end): a thread waits, so the end is exact
    waiter = threading.Thread(
        target=lambda: waited.append((*os.wait4(pid, 0)[1:], time.monotonic())))
    waiter.start()
    tree_kb = 0
    while waiter.is_alive():
        pids = tree(pid)
        if len(pids) > 1:
            tree_kb = max(tree_kb, pss_kb(pids))
        waiter.join(0.05)  # a PSS reading walks the page tables: ~1 ms
    status, ru, ended = waited[0]
    done = {"start": started, "end": ended, "cpu": ru.ru_utime + ru.ru_stime,
            "maxrss_kb": max(ru.ru_maxrss, tree_kb), "exit": os.waitstatus_to_exitcode(status)}
    sys.stdout.write(json.dumps(done) + "\n")
    sys.stdout.flush()
"""


class Spawner:
    """Measures child processes: wall clock, CPU and peak RSS, as the OS counts them."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-S", "-c", SPAWNER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def close(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        self._proc.wait()

    def measure(self, cmd: Sequence[str], log_dir: Path, name: str, env: dict[str, str]) -> Child:
        """Run one child process to its end; exits the bench if it fails."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        out_path, err_path = log_dir / f"{name}.stdout", log_dir / f"{name}.stderr"
        job = {"cmd": list(cmd), "env": env, "stdout": str(out_path), "stderr": str(err_path)}
        self._proc.stdin.write(orjson.dumps(job).decode() + "\n")
        self._proc.stdin.flush()
        done = orjson.loads(self._proc.stdout.readline())
        if done["exit"] != 0:
            sys.stderr.write(err_path.read_text(errors="replace")[-3000:])
            raise SystemExit(f"bench: {name} exited with {done['exit']}: {' '.join(cmd)}")
        rss = done["maxrss_kb"] / 1024
        return Child(done["start"], done["end"], done["cpu"], rss, out_path.read_text())


def output_size(out_dir: Path) -> tuple[int, int]:
    """(bytes, lines) of the run files in `out_dir` (lines of the uncompressed NDJSON)."""
    lines = sum(path.read_bytes().count(b"\n") for path in out_dir.glob("*.ndjson"))
    return data_bytes(out_dir), lines


def data_bytes(out_dir: Path) -> int:
    """Bytes of the run files in `out_dir` in any format and compression (no manifests)."""
    return sum(p.stat().st_size for p in out_dir.iterdir() if run_id_of(p) is not None)


class Bench:
    def __init__(
        self, ns: argparse.Namespace, data: DataSet, sim: SimHost, work: Path, spawner: Spawner
    ) -> None:
        self.ns, self.data, self.sim, self.work = ns, data, sim, work
        self.spawner = spawner
        self.env = {**os.environ, "K6_CLOUD_TOKEN": TOKEN}
        self.runs_file = work / f"runs-{data.name}.txt"
        self.runs_file.write_text("".join(f"{r}\n" for r in data.run_ids))
        self.urls_file = work / f"urls-{data.name}.txt"
        self.urls_file.write_text("".join(f"{u}\n" for u in data.urls))
        self.naive_runs = data.runs
        if ns.rate:
            # Paced at R the naive script takes (3 + metrics) / R seconds a run: cap it.
            wanted = math.ceil(ns.naive_seconds * ns.rate / data.naive_requests_per_run)
            self.naive_runs = max(1, min(data.runs, wanted))
        self.naive_runs_file = work / f"naive-runs-{data.name}.txt"
        self.naive_runs_file.write_text("".join(f"{r}\n" for r in data.run_ids[: self.naive_runs]))

    def _fresh_out(self, name: str) -> Path:
        out = self.work / f"out-{name}"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        os.sync()  # the last contender's dirty pages are not this one's to write back
        return out

    def _finish(self, name: str, child: Child, records: int) -> Sample:
        log = self.sim.take_log()
        bad = [e for e in log if e.status != 200 and e.fault != "429"]
        if bad:
            raise SystemExit(f"bench: {name} got {len(bad)} non-200 answers, e.g. {bad[0]}")
        out = self.work / f"out-{name}"
        size, _ = output_size(out) if out.exists() else (0, 0)
        times = sorted(e.at for e in log)
        series = [e for e in log if e.endpoint == "series"]
        return Sample(
            wall=child.end - child.start,
            cpu=child.cpu,
            rss_mb=child.rss_mb,
            requests=len(log),
            records=records,
            bytes_out=size,
            max_per_second=max_in_window(times, 1.0),
            ids_per_request=sum(len(e.ids) for e in series) / len(series) if series else 0.0,
            lead_in=times[0] - child.start if times else 0.0,
            tail=child.end - times[-1] if times else 0.0,
            throttled=sum(1 for e in log if e.fault == "429"),
        )

    def floor(self) -> Sample:
        self.sim.take_log()
        cmd = [sys.executable, str(HERE / "bench_floor.py"), str(self.urls_file)]
        cmd += ["--token", TOKEN, "--concurrency", str(self.ns.concurrency)]
        child = self.spawner.measure(cmd, self.work, "floor", self.env)
        return self._finish("floor", child, int(orjson.loads(child.stdout)["records"]))

    def naive(self) -> Sample:
        self.sim.take_log()
        out = self._fresh_out("naive")
        cmd = [sys.executable, str(HERE / "bench_naive.py"), "--base-url", self.sim.base_url]
        cmd += ["--token", TOKEN, "--runs-file", str(self.naive_runs_file), "--out", str(out)]
        cmd += ["--rate", str(self.ns.rate)] if self.ns.rate else []
        child = self.spawner.measure(cmd, self.work, "naive", self.env)
        return self._finish("naive", child, int(orjson.loads(child.stdout)["records"]))

    def harvester(self, extra: Sequence[str] = (), name: str = "harvester") -> Sample:
        """`harvester harvest` of the data set; `extra`: more flags (`--format`...), `name`:
        of its output directory and logs."""
        self.sim.take_log()
        out = self._fresh_out(name)
        exe = shutil.which("harvester", path=str(Path(sys.executable).parent)) or "harvester"
        cmd = [exe, "harvest", "--base-url", self.sim.base_url, "--runs-file", str(self.runs_file)]
        cmd += ["--out", str(out), "--rate", str(self.ns.rate or UNLIMITED), "--force", "--quiet"]
        cmd += ["--concurrency", str(self.ns.concurrency)]
        cmd += ["--runs-in-flight", str(self.ns.runs_in_flight)]
        cmd += ["--max-url-length", str(self.ns.max_url_length)]
        cmd += ["--rate-recovery", str(self.ns.rate_recovery)] if self.ns.throttle else []
        child = self.spawner.measure([*cmd, *extra], self.work, name, self.env)
        _, lines = output_size(out)
        return self._finish(name, child, lines - self.data.runs)  # less the summaries
