"""`scripts/bench`: the harvester side by side with the floor and the naive script.

This process hosts the simulator (pre-rendered bodies, no faults, no rate limit) on a
thread of its own; each contender runs as a child process, measured from the OS (wall
clock, CPU and peak RSS from `os.wait4`), its requests counted in the simulator's log.
Contenders run interleaved, `--repeat` times each, and medians are reported, so the
ratios hold on a noisy machine. `--rate R` measures the rate-limited case instead;
`--format`/`--compress`/`--verify` the archive formats' cost (`bench_formats.py`).
The machinery is in `bench_run.py`, the contenders in `bench_floor.py`/`bench_naive.py`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson
from bench_formats import add_format_arguments, report_formats, run_formats
from bench_run import HERE, SIZES, Bench, DataSet, Sample, SimHost, Spawner, say
from bench_s3 import report_s3, run_s3
from bench_throttle import DEFAULT_RATE, Check, report_throttled, run_throttled
from bench_v6 import WIDE, report_v6, run_v6

from harvester.batching import POINTS_PER_REQUEST

TARGETS = {"vs_floor": 1.5, "fewer_requests": 20.0, "rss_mb": 150.0, "growth": 1.3}
#: Peak RSS targets of data sets whose answers are larger than most (issue 14.3).
RSS_TARGETS = {"long": 250.0}
TARGET_RATE_SLACK, TARGET_STARTUP = 1.05, 0.3
#: `--gaps`: share of each run's metrics without a serie (k6 Cloud has none for a metric
#: without samples; ~6% was seen on real data).
GAP_SHARE = 0.06


# --- orchestration -----------------------------------------------------------------------


def median(samples: Sequence[Sample]) -> Sample:
    def mid(name: str) -> Any:
        value = statistics.median(getattr(s, name) for s in samples)
        return round(value) if isinstance(getattr(samples[0], name), int) else value

    return Sample(**{name: mid(name) for name in asdict(samples[0])})


def run_size(ns: argparse.Namespace, name: str, work: Path, spawner: Spawner) -> dict[str, Any]:
    runs, metrics, points = SIZES[name]
    data = DataSet(name, runs, metrics, points, gaps=round(metrics * GAP_SHARE) if ns.gaps else 0)
    say(f"{name}: generating and rendering {data.describe()} ...")
    with SimHost(data, ns.max_url_length) as sim:
        bench = Bench(ns, data, sim, work, spawner)
        contenders: dict[str, Callable[[], Sample]] = {
            "naive": bench.naive,
            "harvester": bench.harvester,
        }
        if not ns.rate:
            contenders = {"floor": bench.floor, **contenders}
        samples: dict[str, list[Sample]] = {k: [] for k in contenders}
        for rep in range(1, ns.repeat + 1):
            for contender, run in contenders.items():  # interleaved: noise hits all alike
                sample = run()
                samples[contender].append(sample)
                say(f"{name} {rep}/{ns.repeat} {contender:<9} {sample.wall:7.2f} s")
    medians = {k: median(v) for k, v in samples.items()}
    capped = bench.naive_runs < data.runs  # then its records are of fewer runs
    records = {k: m.records for k, m in medians.items() if not (capped and k == "naive")}
    if len(set(records.values())) > 1:
        say(f"WARNING: the contenders delivered different numbers of records: {records}")
    return {
        "dataset": data.facts(),
        "min_requests": data.min_requests,
        "naive_runs": bench.naive_runs,
        "median": {k: asdict(v) for k, v in medians.items()},
        "samples": {k: [asdict(s) for s in v] for k, v in samples.items()},
        "ratios": ratios(ns, data, medians, bench.naive_runs),
    }


def ratios(
    ns: argparse.Namespace, data: DataSet, m: dict[str, Sample], naive_runs: int
) -> dict[str, float]:
    scale = data.runs / naive_runs  # 1 unless the naive script was capped (rate mode)
    naive, harvester = m["naive"], m["harvester"]
    out = {
        "naive_over_harvester_wall": naive.wall * scale / harvester.wall,
        "naive_over_harvester_requests": naive.requests * scale / harvester.requests,
        "harvester_over_min_requests": harvester.requests / data.min_requests,
    }
    if "floor" in m:
        out["harvester_over_floor_wall"] = harvester.wall / m["floor"].wall
    if ns.rate:
        bound = data.min_requests / ns.rate
        out["lower_bound_s"] = bound
        out["harvester_over_lower_bound"] = harvester.wall / bound
        out["naive_scaled_wall_s"] = naive.wall * scale
    return out


def startup_seconds(times: int = 7) -> float:
    exe = shutil.which("harvester", path=str(Path(sys.executable).parent)) or "harvester"
    subprocess.run([exe, "--version"], check=True, capture_output=True)  # warm the caches
    walls = []
    for _ in range(times):
        started = time.perf_counter()
        subprocess.run([exe, "--version"], check=True, capture_output=True)
        walls.append(time.perf_counter() - started)
    return statistics.median(walls)


# --- report ---------------------------------------------------------------------------


def table(result: dict[str, Any], rate: float | None) -> list[str]:
    head = f"{'contender':<16}{'wall s':>8}{'requests':>10}{'records/s':>11}{'MB/s out':>10}"
    head += f"{'CPU s':>8}{'peak RSS MB':>13}{'1st req s':>11}{'exit s':>8}"
    head += f"{'max req/1s':>12}" if rate else ""
    lines = [head, "-" * len(head)]
    for name, m in result["median"].items():
        label = name
        if name == "naive" and result["naive_runs"] < result["dataset"]["runs"]:
            label = f"naive ({result['naive_runs']} runs)"
        mbps = f"{m['bytes_out'] / m['wall'] / 1e6:10.1f}" if m["bytes_out"] else f"{'-':>10}"
        row = f"{label:<16}{m['wall']:8.2f}{m['requests']:10,}{m['records'] / m['wall']:11,.0f}"
        row += f"{mbps}{m['cpu']:8.2f}{m['rss_mb']:13.1f}{m['lead_in']:11.2f}{m['tail']:8.2f}"
        lines.append(row + (f"{m['max_per_second']:12}" if rate else ""))
    return lines


def checker(targets: list[dict[str, Any]]) -> Check:
    """A function that prints a target's verdict and keeps it in `targets`."""

    def check(label: str, value: float, limit: float, shown: str, at_least: bool = False) -> None:
        ok = value >= limit if at_least else value <= limit
        targets.append({"target": label, "value": round(value, 4), "ok": ok})
        print(f"  [{'ok' if ok else 'MISSED'}] {label}: {shown}")

    return check


def report(ns: argparse.Namespace, results: dict[str, Any], startup: float) -> list[dict[str, Any]]:
    """Print the tables and the targets; returns the targets with their verdicts."""
    targets: list[dict[str, Any]] = []
    check = checker(targets)
    if ns.throttle:
        report_throttled(ns, results, check)
        results = {}
    if ns.formats:
        report_formats(ns, results, check)
        results = {}
    for name, r in results.items():
        d, ra = r["dataset"], r["ratios"]
        series = f"{d['series_requests'] - d['probe_extra']:,} series"
        probe = (
            f" + {d['probe_extra']} for the job's first series request (at most 16 ids)"
            if d["probe_extra"]
            else ""
        )
        reasks = f" + {d['reasks']} series re-asking the gaps" if d["reasks"] else ""
        shape = DataSet(name, d["runs"], d["metrics"], d["points"], gaps=d["gaps"])
        print(f"\n== {shape.describe()}")
        print(
            f"   repeat {ns.repeat} (medians), concurrency {ns.concurrency}, "
            f"runs in flight {ns.runs_in_flight}, URL cap {ns.max_url_length} bytes"
        )
        print(
            f"   minimum requests {r['min_requests']:,} = {d['runs']} runs x (1 metrics + "
            f"1 thresholds + 1 overview) + {series} (at most {d['ids_per_request']} ids, "
            f"{POINTS_PER_REQUEST:,} points a request){probe}{reasks}"
        )
        if ns.rate:
            print(
                f"   --rate {ns.rate:g}: lower bound {r['min_requests']} / {ns.rate:g} = "
                f"{ra['lower_bound_s']:.2f} s; the naive script paces itself at {ns.rate:g}/s"
            )
            if r["naive_runs"] < d["runs"]:
                print(
                    f"   naive script capped at {r['naive_runs']} of {d['runs']} runs; "
                    f"scaled to all runs: {ra['naive_scaled_wall_s']:.1f} s"
                )
        print()
        print("\n".join("   " + line for line in table(r, ns.rate)))
        print()
        m = r["median"]
        if d["gaps"]:
            print(
                "   ids per series request: "
                + ", ".join(f"{k} {v['ids_per_request']:.1f}" for k, v in m.items())
            )
        if "harvester_over_floor_wall" in ra:
            check(
                f"{name}: harvester wall <= {TARGETS['vs_floor']}x floor",
                ra["harvester_over_floor_wall"],
                TARGETS["vs_floor"],
                f"{ra['harvester_over_floor_wall']:.2f}x "
                f"({m['harvester']['wall']:.2f} s vs {m['floor']['wall']:.2f} s)",
            )
        check(
            f"{name}: requests = minimum",
            ra["harvester_over_min_requests"],
            1.0,
            f"{m['harvester']['requests']:,} vs {r['min_requests']:,}",
        )
        if name in RSS_TARGETS:  # answers bounded by their points, not by the URL cap
            print(f"  [info] naive/harvester requests: {ra['naive_over_harvester_requests']:.1f}x")
        else:
            check(
                f"{name}: >= 20x fewer requests than naive",
                ra["naive_over_harvester_requests"],
                TARGETS["fewer_requests"],
                f"{ra['naive_over_harvester_requests']:.1f}x",
                True,
            )
        if ns.rate:
            check(
                f"{name}: wall <= {TARGET_RATE_SLACK}x lower bound at --rate {ns.rate:g}",
                ra["harvester_over_lower_bound"],
                TARGET_RATE_SLACK,
                f"{ra['harvester_over_lower_bound']:.3f}x ({m['harvester']['wall']:.2f} s vs "
                f"{ra['lower_bound_s']:.2f} s)",
            )
            check(
                f"{name}: wall >= 20x shorter than naive at --rate {ns.rate:g}",
                ra["naive_over_harvester_wall"],
                TARGETS["fewer_requests"],
                f"{ra['naive_over_harvester_wall']:.1f}x",
                True,
            )
            check(
                f"{name}: never more than {ns.rate:g} requests in any 1 s",
                m["harvester"]["max_per_second"],
                ns.rate,
                f"{m['harvester']['max_per_second']}",
            )
        else:
            print(f"  [info] naive/harvester wall: {ra['naive_over_harvester_wall']:.1f}x")
        rss_target = RSS_TARGETS.get(name, TARGETS["rss_mb"])
        check(
            f"{name}: peak RSS <= {rss_target:g} MB",
            m["harvester"]["rss_mb"],
            rss_target,
            f"{m['harvester']['rss_mb']:.1f} MB",
        )
    if "medium" in results and "large" in results:
        rss = [results[s]["median"]["harvester"]["rss_mb"] for s in ("medium", "large")]
        wall = [results[s]["median"]["harvester"]["wall"] for s in ("medium", "large")]
        print(f"\n== growth large/medium (4x the data): wall {wall[1] / wall[0]:.2f}x")
        check(
            f"large peak RSS <= {TARGETS['growth']}x medium",
            rss[1] / rss[0],
            TARGETS["growth"],
            f"{rss[1] / rss[0]:.2f}x ({rss[1]:.1f} MB vs {rss[0]:.1f} MB)",
        )
    print()
    check(
        f"start-up (harvester --version) < {TARGET_STARTUP} s",
        startup,
        TARGET_STARTUP,
        f"{startup:.3f} s (median of 7)",
    )
    return targets


def git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=HERE,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=HERE,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/bench", description=__doc__.splitlines()[0] if __doc__ else None
    )
    p.add_argument(
        "--size",
        action="append",
        choices=sorted(SIZES.keys() | WIDE.keys()),
        help="data set (repeatable; default medium): "
        + ", ".join(f"{k} = {r}x{m}x{pt}" for k, (r, m, pt) in SIZES.items())
        + ", wide = one k6 run of 20,000 tag sets, wide-5k and wide-40k of 5,000 and 40,000 "
        "(--api v6 only)",
    )
    p.add_argument(
        "--gaps",
        action="store_true",
        help=f"{GAP_SHARE * 100:.0f}%% of each run's metrics have no serie (the harvester "
        "re-asks them in one batch per run: the minimum counts it)",
    )
    p.add_argument("--repeat", type=int, default=3, help="runs of each contender (default 3)")
    p.add_argument(
        "--rate",
        type=float,
        default=None,
        help="rate-limited mode: harvester --rate R, naive script paced at R",
    )
    p.add_argument(
        "--naive-seconds",
        type=float,
        default=20.0,
        help="--rate mode: cap the naive script's runs to about this long (default 20)",
    )
    p.add_argument(
        "--throttle",
        type=float,
        metavar="P",
        help="the rate under 429s: the simulator answers a share P of data requests 429, "
        f"the harvester runs at --rate (default {DEFAULT_RATE:g}); reports the most requests "
        "in any 1 s at the server (default size: small)",
    )
    p.add_argument(
        "--retry-after", type=float, default=0.0, help="--throttle: the 429s' Retry-After"
    )
    p.add_argument(
        "--rate-recovery", type=float, default=1.0, help="--throttle: harvester's (default 1)"
    )
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    p.add_argument("--runs-in-flight", type=int, default=4, help="harvester's (default 4)")
    p.add_argument("--max-url-length", type=int, default=8000, help="URL cap (default 8000)")
    p.add_argument(
        "--api", choices=("v2", "v6"), default="v2", help="which API the harvester speaks"
    )
    add_format_arguments(p)
    p.add_argument(
        "--out",
        choices=("dir", "s3"),
        default="dir",
        help="s3: the harvester to --out s3:// (moto's server, started here) against --out DIR",
    )
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    ns = p.parse_args(argv)
    ns.size = ns.size or ["small" if ns.throttle else "medium"]
    ns.formats = bool(ns.format or ns.compress or ns.verify)
    if WIDE.keys() & set(ns.size) and (
        ns.api != "v6" or ns.formats or ns.throttle or ns.out == "s3"
    ):
        p.error("--size wide, wide-5k and wide-40k are for --api v6 alone")
    if ns.repeat < 1 or (ns.rate is not None and ns.rate <= 0):
        p.error("--repeat and --rate must be positive")
    if ns.throttle is not None:
        if not 0 < ns.throttle <= 1:
            p.error("--throttle is a share of requests: more than 0, at most 1")
        ns.rate = ns.rate or DEFAULT_RATE
    return ns


def main(argv: Sequence[str] | None = None) -> int:
    ns = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="harvester-bench-"))
    spawner = Spawner()  # first, while this process is still small
    try:
        run = run_throttled if ns.throttle else run_v6 if ns.api == "v6" else run_size
        run = run_formats if ns.formats else run
        run = run_s3 if ns.out == "s3" else run
        results = {name: run(ns, name, work, spawner) for name in dict.fromkeys(ns.size)}
        startup = startup_seconds()
    finally:
        spawner.close()
        if ns.keep:
            say(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    mode = f"--rate {ns.rate:g}" if ns.rate else "no rate limit"
    mode += f", 429s on {ns.throttle:.0%} of requests" if ns.throttle else ""
    mode += ", formats against raw" if ns.formats else ""
    print(
        f"harvester bench ({mode}) at {git_commit()}, {os.cpu_count()} CPUs, "
        f"Python {sys.version.split()[0]}"
    )
    if ns.out == "s3":
        targets = report_s3(ns, results)
    else:
        targets = report_v6(ns, results) if ns.api == "v6" else report(ns, results, startup)
    if ns.json:
        doc = {
            "commit": git_commit(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "mode": next(m for m in ("formats", "throttle", "rate") if getattr(ns, m))
            if ns.formats or ns.throttle or ns.rate
            else "throughput",
            "rate": ns.rate,
            "repeat": ns.repeat,
            "concurrency": ns.concurrency,
            "runs_in_flight": ns.runs_in_flight,
            "startup_s": startup,
            "sizes": results,
            "targets": targets,
        }
        Path(ns.json).write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
        say(f"results written to {ns.json}")
    return 0 if all(t["ok"] for t in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
