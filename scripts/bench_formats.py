"""`scripts/bench --format F --compress C --verify`: what the archive formats cost (issue 11).

Each variant is `harvester harvest` with `--format F` and/or `--compress C` over the same
data set, interleaved with plain raw in the same run, `--repeat` times (medians): its wall
against raw's (a compressed variant: against its format uncompressed), its CPU, peak RSS
and bytes on disk. `--verify`: `harvester verify` over each variant's archive right
after it is written (its files read once beforehand, so the figure is verify's own work, not
the disk's), as MB/s of the archive's data files.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench_run import SIZES, Bench, DataSet, Sample, SimHost, Spawner, data_bytes, say
from bench_throttle import Check

#: Wall of each format against raw's, and of zstd against the same format uncompressed.
TARGETS = {"points": 1.3, "parquet": 1.5, "zstd": 1.15}
VERIFY_MBPS = 300.0  # of the medium archive
RSS_MB, GROWTH = 150.0, 1.3


def add_format_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--format",
        action="append",
        choices=("points", "parquet"),
        help="the formats' cost: harvester --format F against raw in the same run "
        "(repeatable; with --compress, each combination); floor and naive are not run",
    )
    p.add_argument(
        "--compress",
        action="append",
        choices=("zstd", "gzip"),
        help="the same for harvester --compress C, against uncompressed (repeatable)",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="harvester verify over the archive of each variant (raw, raw+zstd, points...), "
        "as MB/s of its data",
    )


def variants(ns: argparse.Namespace) -> list[tuple[str, str]]:
    """(format, codec) pairs: raw uncompressed first, then each asked for and combined."""
    formats = dict.fromkeys(["raw", *(ns.format or [])])
    codecs = dict.fromkeys(["none", *(ns.compress or [])])
    return [(fmt, codec) for fmt in formats for codec in codecs]


def label(fmt: str, codec: str) -> str:
    return fmt if codec == "none" else f"{fmt}+{codec}"


def flags(fmt: str, codec: str) -> list[str]:
    return (["--format", fmt] if fmt != "raw" else []) + (
        ["--compress", codec] if codec != "none" else []
    )


def verify_once(bench: Bench, name: str) -> dict[str, float]:
    """`harvester verify` over a variant's archive: wall, peak RSS, MB/s of its data."""
    out = bench.work / f"out-{name}"
    for path in out.iterdir():  # into the page cache: the figure is verify's, not the disk's
        path.read_bytes()
    exe = shutil.which("harvester", path=str(Path(sys.executable).parent)) or "harvester"
    cmd = [exe, "verify", str(out), "--output", "json"]
    child = bench.spawner.measure(cmd, bench.work, f"verify-{name}", bench.env)
    wall, size = child.end - child.start, data_bytes(out)
    return {"wall": wall, "cpu": child.cpu, "rss_mb": child.rss_mb, "bytes": size,
            "mbps": size / wall / 1e6}  # fmt: skip


def run_formats(ns: argparse.Namespace, name: str, work: Path, spawner: Spawner) -> dict[str, Any]:
    data = DataSet(name, *SIZES[name])
    say(f"{name}: generating and rendering {data.describe()} ...")
    pairs = variants(ns)
    samples: dict[str, list[Sample]] = {label(*p): [] for p in pairs}
    verifies: dict[str, list[dict[str, float]]] = {label(*p): [] for p in pairs}
    with SimHost(data, ns.max_url_length) as sim:
        bench = Bench(ns, data, sim, work, spawner)
        for rep in range(1, ns.repeat + 1):
            for pair in pairs:  # interleaved: noise hits all alike
                name_of = label(*pair)
                sample = bench.harvester(flags(*pair), name=name_of)
                samples[name_of].append(sample)
                shown = f"{name} {rep}/{ns.repeat} {name_of:<14} {sample.wall:7.2f} s"
                if ns.verify:
                    verifies[name_of].append(verify_once(bench, name_of))
                    v = verifies[name_of][-1]
                    shown += f", verify {v['mbps']:.0f} MB/s ({v['cpu']:.2f} s CPU, "
                    shown += f"{v['rss_mb']:.0f} MB)"
                say(shown)
    mid = statistics.median
    return {
        "dataset": {"runs": data.runs, "metrics": data.metrics, "points": data.points},
        "median": {
            k: {f: mid(getattr(s, f) for s in v) for f in asdict(v[0])} for k, v in samples.items()
        },
        "verify": {k: {f: mid(s[f] for s in v) for f in v[0]} for k, v in verifies.items() if v},
        "samples": {k: [asdict(s) for s in v] for k, v in samples.items()},
    }


def report_formats(ns: argparse.Namespace, results: dict[str, Any], check: Check) -> None:
    for name, r in results.items():
        d, m, v = r["dataset"], r["median"], r["verify"]
        shape = DataSet(name, d["runs"], d["metrics"], d["points"])
        print(f"\n== {shape.describe()}, repeat {ns.repeat} (medians)\n")
        head = f"{'variant':<16}{'wall s':>8}{'x raw':>7}{'CPU s':>8}{'peak RSS MB':>13}"
        head += f"{'MB on disk':>12}" + (f"{'verify MB/s':>13}" if v else "")
        print("   " + head + "\n   " + "-" * len(head))
        raw = m["raw"]["wall"]
        for k, s in m.items():
            row = f"{k:<16}{s['wall']:8.2f}{s['wall'] / raw:7.2f}{s['cpu']:8.2f}"
            row += f"{s['rss_mb']:13.1f}{s['bytes_out'] / 1e6:12.1f}"
            print("   " + row + (f"{v[k]['mbps']:13.0f}" if k in v else ""))
        print()
        for fmt, codec in variants(ns):
            k, s = label(fmt, codec), m[label(fmt, codec)]
            base = "raw" if codec == "none" else fmt
            if k != base and (codec == "zstd" or (codec == "none" and fmt in TARGETS)):
                limit = TARGETS[codec if codec != "none" else fmt]
                ratio = s["wall"] / m[base]["wall"]
                shown = f"{ratio:.2f}x ({s['wall']:.2f} s vs {m[base]['wall']:.2f} s)"
                check(f"{name}: {k} wall <= {limit}x {base}", ratio, limit, shown)
            elif k != base:
                print(f"  [info] {name}: {k} wall {s['wall'] / m[base]['wall']:.2f}x {base}")
            check(f"{name}: {k} peak RSS <= {RSS_MB:g} MB", s["rss_mb"], RSS_MB,
                  f"{s['rss_mb']:.1f} MB")  # fmt: skip
        if "raw" in v:
            mbps = v["raw"]["mbps"]
            shown = (
                f"{mbps:.0f} MB/s ({v['raw']['bytes'] / 1e6:.1f} MB in {v['raw']['wall']:.2f} s)"
            )
            if name == "medium":
                check(f"{name}: verify > {VERIFY_MBPS:g} MB/s", mbps, VERIFY_MBPS, shown, True)
            else:
                print(f"  [info] {name}: verify {shown}")
    if "medium" in results and "large" in results:
        print()
        for k, large in results["large"]["median"].items():
            medium = results["medium"]["median"][k]["rss_mb"]
            growth = large["rss_mb"] / medium
            check(f"{k}: large peak RSS <= {GROWTH}x medium", growth, GROWTH,
                  f"{growth:.2f}x ({large['rss_mb']:.1f} MB vs {medium:.1f} MB)")  # fmt: skip
