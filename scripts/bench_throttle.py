"""`scripts/bench --throttle P`: the rate limit while 429s change the rate.

The simulator answers a share P of the data requests with an injected 429 (Retry-After
`--retry-after`, 0 by default, so the pauses do not hide the spacing); each one halves the
harvester's rate and every `--rate-recovery` calm seconds step it back up, so the rate
changes again and again under load. The figure is the most requests the simulator saw
in any one-second window, against `--rate R`: it must never be above R.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench_run import SIZES, Bench, DataSet, Sample, SimHost, Spawner, say

from harvester.simulator.faults import FaultPlan

DEFAULT_RATE = 5.0
#: Prints a target's verdict and keeps it (`bench.checker`).
Check = Callable[..., None]


def run_throttled(
    ns: argparse.Namespace, name: str, work: Path, spawner: Spawner
) -> dict[str, Any]:
    data = DataSet(name, *SIZES[name])
    plan = FaultPlan(seed=1, p_429=ns.throttle, retry_after=ns.retry_after)
    say(f"{name}: generating and rendering {data.describe()} ...")
    with SimHost(data, ns.max_url_length, faults=plan) as sim:
        bench = Bench(ns, data, sim, work, spawner)
        samples: list[Sample] = []
        for rep in range(1, ns.repeat + 1):
            sample = bench.harvester()
            samples.append(sample)
            say(
                f"{name} {rep}/{ns.repeat} harvester {sample.wall:7.2f} s, "
                f"{sample.throttled} 429s, at most {sample.max_per_second} requests in 1 s"
            )
    return {
        "dataset": data.facts(),
        "min_requests": data.min_requests,
        "samples": [asdict(s) for s in samples],
        "max_per_second": max(s.max_per_second for s in samples),
    }


def report_throttled(ns: argparse.Namespace, results: dict[str, Any], check: Check) -> None:
    """The table of every repeat (the worst one is the figure) and the target."""
    for name, r in results.items():
        d = r["dataset"]
        print(f"\n== {DataSet(name, d['runs'], d['metrics'], d['points']).describe()}")
        print(
            f"   --rate {ns.rate:g}, --rate-recovery {ns.rate_recovery:g}; the simulator "
            f"answers {ns.throttle:.0%} of data requests 429 (Retry-After {ns.retry_after:g} s)"
        )
        print(f"   minimum requests {r['min_requests']:,}\n")
        head = f"{'repeat':<8}{'wall s':>8}{'requests':>10}{'429s':>7}{'max req/1s':>12}"
        print("   " + head + "\n   " + "-" * len(head))
        for rep, s in enumerate(r["samples"], 1):
            print(
                f"   {rep:<8}{s['wall']:8.2f}{s['requests']:10,}{s['throttled']:7}"
                f"{s['max_per_second']:12}"
            )
        print()
        check(
            f"{name}: never more than {ns.rate:g} requests in any 1 s under 429s",
            r["max_per_second"],
            ns.rate,
            f"{r['max_per_second']} (worst of {ns.repeat})",
        )
