"""The demo: the built-in simulator in-process, the real CLI against it, and where it all went."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import anyio.from_thread
import orjson

from harvester.cli import main
from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(ROOT / "harvest-out"), help="output directory")
    parser.add_argument("--runs", type=int, default=6, help="simulated test runs")
    parser.add_argument("--metrics", type=int, default=80, help="metrics per run")
    parser.add_argument("--points", type=int, default=120, help="points per series")
    parser.add_argument("--rate", default="20", help="--rate for the harvest")
    return parser.parse_args()


def show(out: Path) -> None:
    files = sorted(out.glob("*.ndjson"))
    total = sum(f.stat().st_size for f in files)
    print(f"\n{len(files)} files, {total / 1e6:.1f} MB in {out}/")
    for path in files[:3]:
        print(f"  {path.name}")
    if len(files) > 3:
        print("  ...")
    if files:
        first = orjson.loads(files[0].read_bytes().split(b"\n", 1)[0])
        print(f"\nfirst line of {files[0].name}:\n  {orjson.dumps(first).decode()[:160]}...")
        print(f"\nlook inside: head -c 600 {files[0]}")


def demo() -> int:
    args = parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)  # a fresh demo each time
    cloud = generate_cloud(runs=args.runs, metrics=args.metrics, points=args.points)
    with anyio.from_thread.start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(Simulator(cloud)) as sim:
            runs = [arg for run_id in sorted(cloud.runs) for arg in ("--run", str(run_id))]
            print(f"simulator on {sim.base_url}: {len(cloud.runs)} runs x {args.metrics} "
                  f"metrics x {args.points} points")  # fmt: skip
            print(f"$ harvester harvest --base-url {sim.base_url} --token *** "
                  f"{' '.join(runs)} --out {out} --rate {args.rate}\n")  # fmt: skip
            sys.stdout.flush()
            code = main(["harvest", "--base-url", sim.base_url, "--token", sim.token,
                         *runs, "--out", str(out), "--rate", args.rate])  # fmt: skip
            requests = len(sim.log)
    print(f"\nexit status {code}; the simulator answered {requests} requests")
    show(out)
    return code


if __name__ == "__main__":
    sys.exit(demo())
