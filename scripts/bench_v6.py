"""`scripts/bench --api v6`: the v6 backend against its floor (issue 10).

The simulator serves a generated data set through `/cloud/v6` and `/cloud/v5`. The
minimum per run is what the backend says harvesting it with `--run ID` takes
(`V6Backend.minimum_paths`): the run object, 1 metrics + 1 labels, one `query_range_k6`
per metric name and default method, the two check aggregates and one aggregate per
threshold. The floor (`bench_floor.py --stack-id`) GETs exactly those URLs, parses and discards the
answers; the harvester (`harvest --api v6 --runs-file`) writes the NDJSON. Reported:
requests against the minimum, wall against the floor, peak RSS; medians of `--repeat`.

`--size wide` (v6 only) serves a synthetic k6 recording instead (`k6wide.py`): one run
with 20,000 tag sets, so that each HTTP metric's range query answers 20,000 series in
one answer (~7.5 MB of JSON): peak RSS must not follow the number of series. `wide-5k`
and `wide-40k` are the same with 5,000 and 40,000 tag sets; given two or more of them,
the bench checks that the widest's peak RSS is within `GROWTH`x the narrowest's.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bench_run
import orjson
from bench_run import HERE, SIZES, TOKEN, UNLIMITED, Bench, DataSet, Sample, SimHost, Spawner, say

from harvester.backends.v6 import V6Backend
from harvester.config import Settings, load_settings
from harvester.ratelimit import RateGate
from harvester.simulator.generated import generate_cloud
from harvester.simulator.k6import import load_k6_run
from harvester.simulator.k6wide import write_k6_wide
from harvester.simulator.server import Simulator
from harvester.simulator.state import SimState
from harvester.simulator.v6_model import v6_run
from harvester.stats import HarvestStats
from harvester.transport import Transport

TARGETS = {"requests": 1.0, "vs_floor": 1.5, "rss_mb": 150.0}
#: The widest `WIDE` size measured against the narrowest: peak RSS flat in series.
GROWTH = 1.3
STEP = 60
STACK = 1
#: v6-only sizes: one recorded run of this many tag sets (`k6wide.py`).
WIDE = {"wide-5k": 5_000, "wide": 20_000, "wide-40k": 40_000}
WIDE_RUN = 1


def bench_settings(base_url: str) -> Settings:
    """The harvester's settings as the bench runs it (for the backend's plan)."""
    flags = {"api": "v6", "stack_id": STACK, "step": STEP, "base_url": base_url, "token": TOKEN}
    return load_settings(flags, environ={})


def plan_run(state: SimState, run_id: int, backend: V6Backend) -> list[str]:
    """The paths the backend says one run given by id takes, in no particular order."""
    view = state.v5_view(run_id)
    assert view is not None
    for series in view.series:  # render the buckets now: nobody's clock pays for them
        view.buckets(series)
    run = v6_run(state.cloud.runs[run_id])
    return backend.minimum_paths(run, view.metrics(), view.label_names(), discovered=False)


class V6Host(SimHost):
    """The simulator with the v6 plan instead of v2's."""

    def __init__(self, data: DataSet, max_url_length: int, work: Path) -> None:
        super().__init__(data, max_url_length)
        self.work = work

    async def _serve(self) -> None:
        d = self.data
        if d.name in WIDE:
            recording = self.work / f"k6-{d.name}.json.gz"
            write_k6_wide(recording, WIDE[d.name])
            cloud = generate_cloud(0)
            cloud.add_run(load_k6_run(recording, run_id=WIDE_RUN, bucket_seconds=STEP))
        else:
            cloud = generate_cloud(d.runs, d.metrics, d.points, seed=0)
        self._stop = asyncio.Event()
        async with Simulator(cloud, token=TOKEN) as sim:
            sim.state.v6.stack_id = STACK
            self._sim, self.base_url = sim, sim.base_url
            d.run_ids = sorted(cloud.runs)
            settings = bench_settings(sim.base_url)
            transport = Transport(
                settings, gate=RateGate.for_settings(settings), stats=HarvestStats()
            )  # fmt: skip  (never opened: no request)
            backend = V6Backend(settings, transport)
            for run_id in d.run_ids:
                d.urls += [self.base_url + p for p in plan_run(sim.state, run_id, backend)]
            self._ready.set()
            await self._stop.wait()


class V6Bench(Bench):
    def floor(self) -> Sample:
        self.sim.take_log()
        cmd = [sys.executable, str(HERE / "bench_floor.py"), str(self.urls_file), "--token", TOKEN]
        cmd += ["--concurrency", str(self.ns.concurrency), "--stack-id", str(STACK)]
        child = self.spawner.measure(cmd, self.work, "floor", self.env)
        return self._finish("floor", child, int(orjson.loads(child.stdout)["records"]))

    def harvester(self, extra: Sequence[str] = (), name: str = "harvester") -> Sample:
        self.sim.take_log()
        out = self._fresh_out(name)
        exe = shutil.which("harvester", path=str(Path(sys.executable).parent)) or "harvester"
        cmd = [exe, "harvest", "--api", "v6", "--stack-id", str(STACK), "--step", str(STEP)]
        cmd += ["--base-url", self.sim.base_url, "--runs-file", str(self.runs_file)]
        cmd += ["--out", str(out), "--rate", str(UNLIMITED), "--force", "--quiet"]
        cmd += ["--concurrency", str(self.ns.concurrency)]
        cmd += ["--runs-in-flight", str(self.ns.runs_in_flight)]
        # The simulator computes a wide query for minutes under load: a retry would ask
        # it again (and count as a request more), so the harvester waits as the floor does.
        cmd += ["--read-timeout", "900", "--request-timeout", "1800"]
        child = self.spawner.measure([*cmd, *extra], self.work, name, self.env)
        lines = sum(p.read_bytes().count(b"\n") for p in out.glob("*.ndjson"))
        return self._finish(name, child, lines - self.data.runs)


def run_v6(ns: argparse.Namespace, name: str, work: Path, spawner: Spawner) -> dict[str, Any]:
    runs, metrics, points = (1, WIDE[name], 0) if name in WIDE else SIZES[name]
    data = DataSet(name, runs, metrics, points)
    shown = f"1 k6 recording of {metrics:,} tag sets" if name in WIDE else data.describe()
    say(f"{name} (v6): generating {shown} ...")
    samples: dict[str, list[Sample]] = {"floor": [], "harvester": []}
    with V6Host(data, ns.max_url_length, work) as sim:
        bench = V6Bench(ns, data, sim, work, spawner)
        for rep in range(1, ns.repeat + 1):
            for contender in samples:
                sample = getattr(bench, contender)()
                samples[contender].append(sample)
                say(f"{name} {rep}/{ns.repeat} {contender:<9} {sample.wall:7.2f} s")
    return {"min_requests": data.min_requests, "runs": runs, "metrics": metrics,
            "points": points, "median": bench_run.medians(samples)}  # fmt: skip


def report_v6(ns: argparse.Namespace, results: dict[str, Any]) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = []
    for name, r in results.items():
        floor, harvester = r["median"]["floor"], r["median"]["harvester"]
        shape = (
            f"1 k6 run of {r['metrics']:,} tag sets"
            if name in WIDE
            else f"{r['runs']} runs x {r['metrics']} metrics x {r['points']} points"
        )
        print(f"\n== {name} via v6: {shape}, step {STEP} s, repeat {ns.repeat} (medians)")
        print(f"   {'contender':<12}{'wall s':>8}{'requests':>10}{'records':>9}{'peak RSS MB':>13}")
        for label, m in (("floor", floor), ("harvester", harvester)):
            print(f"   {label:<12}{m['wall']:8.2f}{m['requests']:10.0f}{m['records']:9.0f}"
                  f"{m['rss_mb']:13.1f}")  # fmt: skip
        checks = [
            ("requests = minimum", harvester["requests"] / r["min_requests"], TARGETS["requests"],
             f"{harvester['requests']:.0f} vs {r['min_requests']}"),
            (f"wall <= {TARGETS['vs_floor']}x floor", harvester["wall"] / floor["wall"],
             TARGETS["vs_floor"], f"{harvester['wall'] / floor['wall']:.2f}x"),
            (f"peak RSS <= {TARGETS['rss_mb']:g} MB", harvester["rss_mb"], TARGETS["rss_mb"],
             f"{harvester['rss_mb']:.1f} MB"),
        ]  # fmt: skip
        targets += bench_run.verdicts(f"{name} v6", checks)
    return targets + report_growth(results)


def report_growth(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Peak RSS of the widest run measured against the narrowest's (8x the series from
    wide-5k to wide-40k): what an answer costs must not follow its series."""
    wide = sorted((WIDE[name], name) for name in results if name in WIDE)
    if len(wide) < 2:
        return []
    (few, low), (many, high) = wide[0], wide[-1]
    rss = [results[n]["median"]["harvester"]["rss_mb"] for n in (low, high)]
    print(f"\n== growth {high}/{low} ({many / few:g}x the series): peak RSS {rss[1] / rss[0]:.2f}x")
    check = (f"{high} peak RSS <= {GROWTH}x {low}", rss[1] / rss[0], GROWTH,
             f"{rss[1] / rss[0]:.2f}x ({rss[1]:.1f} MB vs {rss[0]:.1f} MB)")  # fmt: skip
    return bench_run.verdicts("v6", [check])
