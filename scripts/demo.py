"""The demo: the built-in simulator in-process, the real CLI against it, where it all went,
and a report of what was harvested (`report.html`, an HTML page).

The demo never deletes a file it did not create. It writes into a new or empty
directory, or into one an earlier demo wrote (named in its `.harvester-demo` file): it
then removes the files that demo created, and only those, for a fresh start. Any other
non-empty directory is refused: pointing --out at a real archive must not mix simulated
runs into it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anyio.from_thread
import orjson

from harvester.cli import main
from harvester.outdir import LOCK_FILE_NAME
from harvester.simulator.cloud import SimCloud
from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator
from harvester.state import STATE_FILE_NAME

ROOT = Path(__file__).resolve().parents[1]


#: The report of the harvested runs, in --out.
REPORT = "report.html"
#: In a directory the demo wrote: the names of the files it created there, one a line.
MARKER = ".harvester-demo"


class NotDemoOutput(Exception):
    """--out holds files the demo did not write."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        default=str(ROOT / "harvest-out"),
        help="output directory (default ./harvest-out): new, empty, or an earlier demo's, "
        "whose files are replaced; files the demo did not create are never deleted, and "
        "a non-empty directory it did not write is refused (exit 2)",
    )
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


def names_in(out: Path) -> set[str]:
    return {path.name for path in out.iterdir()} if out.is_dir() else set()


def clear_earlier_demo(out: Path) -> set[str]:
    """Remove what an earlier demo created in `out`; the names left (not the demo's).
    Raises `NotDemoOutput` for a non-empty directory no demo wrote."""
    if out.exists() and not out.is_dir():
        raise NotDemoOutput(f"{out} is a file; give a directory with --out")
    marker = out / MARKER
    if not marker.is_file():
        if names_in(out):
            raise NotDemoOutput(
                f"{out} is not empty and no demo wrote it; give a new or empty directory "
                "with --out (the demo deletes only files it created)"
            )
        return set()
    for name in marker.read_text().splitlines():
        path = out / name
        if name and "/" not in name and path.is_file() and not path.is_symlink():
            path.unlink()
    marker.unlink()
    return names_in(out)


def remember_created(out: Path, created: set[str]) -> None:
    """Name in the marker the files this demo created, for the next demo to remove."""
    (out / MARKER).write_text("".join(f"{name}\n" for name in sorted(created - {MARKER})))


def files_to_create(cloud: SimCloud) -> set[str]:
    """What the harvest will create: run files and their manifests, the state file and the
    locks; the report."""
    state = [STATE_FILE_NAME + suffix for suffix in ("", "-wal", "-shm", ".lock")]
    runs = (f"{run_id}.{kind}" for run_id in cloud.runs for kind in ("ndjson", "manifest.json"))
    return {*runs, *state, LOCK_FILE_NAME, REPORT}


def demo() -> int:
    args = parse_args()
    out = Path(args.out)
    try:
        before = clear_earlier_demo(out)
    except NotDemoOutput as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    # Two tests, so the report shows each one's trend across its runs.
    cloud = generate_cloud(runs=args.runs, metrics=args.metrics, points=args.points, tests=2)
    out.mkdir(parents=True, exist_ok=True)
    # Claimed before the harvest (a demo killed half-way is cleared next time too), then
    # exactly what it created.
    remember_created(out, files_to_create(cloud) - before)
    try:
        return harvest_demo(args, cloud, out)
    finally:
        remember_created(out, names_in(out) - before)


def harvest_demo(args: argparse.Namespace, cloud: SimCloud, out: Path) -> int:
    with anyio.from_thread.start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(Simulator(cloud)) as sim:
            runs = [arg for run_id in sorted(cloud.runs) for arg in ("--run", str(run_id))]
            print(f"simulator on {sim.base_url}: {len(cloud.runs)} runs x {args.metrics} "
                  f"metrics x {args.points} points")  # fmt: skip
            print(f"$ harvester harvest --base-url {sim.base_url} --token *** "
                  f"{' '.join(runs)} --run-record --out {out} --rate {args.rate}\n")  # fmt: skip
            sys.stdout.flush()
            code = main(["harvest", "--base-url", sim.base_url, "--token", sim.token, *runs,
                         "--run-record", "--out", str(out), "--rate", args.rate])  # fmt: skip
            requests = len(sim.log)
    print(f"\nexit status {code}; the simulator answered {requests} requests")
    show(out)
    if code == 0:
        page = out / REPORT
        print(f"\n$ harvester report {out} --out {page}")
        code = main(["report", str(out), "--out", str(page)])
        print(f"open it in a browser: {page.resolve().as_uri()}")
    return code


if __name__ == "__main__":
    sys.exit(demo())
