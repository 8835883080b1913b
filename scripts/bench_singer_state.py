"""The STATE bytes of `--format singer` over a job of many runs, and the time to read a
big Singer state (README "Singer").

    PYTHONPATH=. .venv/bin/python scripts/bench_singer_state.py [--runs N] [--resumed M]
        [--stream NAME]...

Serves N generated runs (one metric, one point each: small runs, where STATEs weigh most)
on the simulator and harvests them all with `harvester harvest --format singer` into a
pipe, counting the bytes of the STATE messages against the others'. `--resumed M` gives
the job a Singer state of M runs done whose ids are never consecutive (as one account's
are not in k6 Cloud, where every account's runs share the ids), which every STATE carries.
Then the time of `read_state` on a state of 50,000 runs, consecutive and not.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from bench_run import TOKEN, DataSet, SimHost, say

#: The simulator's generated runs are numbered from here on.
FIRST_RUN = 100_001


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2000, help="runs harvested")
    parser.add_argument("--resumed", type=int, default=0, help="runs of the state given")
    parser.add_argument("--stream", action="append", default=[], help="--singer-stream")
    return parser.parse_args()


def sparse_state(count: int) -> dict[str, object]:
    """A state of `count` runs, none consecutive, below the simulator's runs."""
    return {"bookmarks": {"runs": {"done": list(range(1, 2 * count, 2))}}}


def harvest(ns: argparse.Namespace, work: Path) -> None:
    data = DataSet("states", ns.runs, 1, 1)
    runs_file = work / "runs.txt"
    runs_file.write_text("".join(f"{FIRST_RUN + i}\n" for i in range(ns.runs)))
    flags = ["--format", "singer", "--out", "-", "--runs-file", str(runs_file),
             "--rate", "100000", "--quiet"]  # fmt: skip
    flags += [a for name in ns.stream for a in ("--singer-stream", name)]
    if ns.resumed:
        state = work / "state.json"
        state.write_bytes(orjson.dumps(sparse_state(ns.resumed)))
        flags += ["--singer-state", str(state)]
    say(f"harvesting {ns.runs:,} runs (a given state of {ns.resumed:,}) ...")
    with SimHost(data, 8000) as sim:
        cmd = [sys.executable, "-m", "harvester", "harvest", "--base-url", sim.base_url, *flags]
        started = time.monotonic()
        env = {**os.environ, "K6_CLOUD_TOKEN": TOKEN}
        child = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env)
        assert child.stdout is not None
        states = state_bytes = other_bytes = last = 0
        for line in child.stdout:
            if line.startswith(b'{"type":"STATE"'):
                states, state_bytes, last = states + 1, state_bytes + len(line), len(line)
            else:
                other_bytes += len(line)
        assert child.wait() == 0
        wall = time.monotonic() - started
    print(f"runs {ns.runs:,}, resumed {ns.resumed:,}, streams {ns.stream or 'all'}: "
          f"{wall:.1f} s; {states:,} STATEs, {state_bytes:,} bytes (the last {last:,}); "
          f"other messages {other_bytes:,} bytes")  # fmt: skip


def time_read_state(work: Path) -> None:
    from harvester.formats.singer_state import read_state  # (harvest alone measures main)

    for name, done in [
        ("50,000 runs, none consecutive", list(range(1, 100_000, 2))),
        ("50,000 runs, consecutive", [[FIRST_RUN, FIRST_RUN + 49_999]]),
    ]:
        path = work / "big.json"
        path.write_bytes(orjson.dumps({"bookmarks": {"runs": {"done": done}}}))
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            read_state(str(path))
            best = min(best, time.perf_counter() - started)
        print(f"read_state, {name} ({path.stat().st_size:,} bytes): {best * 1000:.1f} ms")


def main() -> None:
    ns = parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        harvest(ns, Path(tmp))
        time_read_state(Path(tmp))


if __name__ == "__main__":
    main()
