"""`scripts/bench --out s3`: the harvester archiving to an object store against the same
harvest into a directory (issue 13).

The bench starts moto's S3 server on loopback as the tests do (`tests/s3_helpers.py`;
moto is a dev dependency) and makes a bucket; each repetition writes to a prefix of its
own, removed after it. Both contenders run `harvest --runs-file` with the same flags,
interleaved, medians of `--repeat`. Reported: wall of `--out s3://` against `--out DIR`
and its peak RSS (from `os.wait4`, like every contender's); the records stored are
counted back.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import bench_run
from bench_run import HERE, SIZES, UNLIMITED, Bench, DataSet, Sample, SimHost, Spawner, say

TARGETS = {"vs_dir": 1.3, "rss_mb": 150.0}
BUCKET = "bench"


@contextmanager
def store() -> Iterator[tuple[str, Any]]:
    """moto's server as the tests start it, with the bucket: (endpoint URL, client)."""
    sys.path.insert(0, str(HERE.parent))  # the repository: tests/s3_helpers.py
    from tests.s3_helpers import moto_server

    with moto_server() as server:
        client = server.client()
        client.create_bucket(Bucket=BUCKET)
        yield server.url, client


class S3Bench(Bench):
    def __init__(self, *args: Any, endpoint: str, client: Any) -> None:
        super().__init__(*args)
        self.endpoint, self.client, self.rep = endpoint, client, 0

    def s3(self) -> Sample:
        self.sim.take_log()
        self.rep += 1
        prefix = f"r{self.rep}/"
        exe = shutil.which("harvester", path=str(Path(sys.executable).parent)) or "harvester"
        cmd = [exe, "harvest", "--base-url", self.sim.base_url, "--runs-file", str(self.runs_file)]
        cmd += ["--out", f"s3://{BUCKET}/{prefix}", "--s3-endpoint-url", self.endpoint]
        cmd += ["--state", str(self.work / f"s3-state-{self.rep}.sqlite")]
        cmd += ["--rate", str(UNLIMITED), "--quiet", "--concurrency", str(self.ns.concurrency)]
        cmd += ["--runs-in-flight", str(self.ns.runs_in_flight)]
        cmd += ["--max-url-length", str(self.ns.max_url_length)]
        from tests.s3_helpers import CREDENTIALS

        child = self.spawner.measure(cmd, self.work, "s3", {**self.env, **CREDENTIALS})
        lines = self._count_and_remove(prefix)
        return self._finish("s3", child, lines - self.data.runs)  # less the summaries

    def _count_and_remove(self, prefix: str) -> int:
        """The lines of the runs' objects (read back), then the prefix emptied."""
        lines = 0
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", []):
                if item["Key"].endswith(".ndjson"):
                    body = self.client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
                    lines += body.count(b"\n")
                self.client.delete_object(Bucket=BUCKET, Key=item["Key"])
        return lines


def run_s3(ns: argparse.Namespace, name: str, work: Path, spawner: Spawner) -> dict[str, Any]:
    runs, metrics, points = SIZES[name]
    data = DataSet(name, runs, metrics, points)
    say(f"{name} (--out s3): generating and rendering {data.describe()} ...")
    samples: dict[str, list[Sample]] = {"directory": [], "s3": []}
    with SimHost(data, ns.max_url_length) as sim, store() as (endpoint, client):
        bench = S3Bench(ns, data, sim, work, spawner, endpoint=endpoint, client=client)
        runners = {"directory": bench.harvester, "s3": bench.s3}
        for rep in range(1, ns.repeat + 1):
            for contender, run in runners.items():  # interleaved: noise hits both alike
                sample = run()
                samples[contender].append(sample)
                say(f"{name} {rep}/{ns.repeat} {contender:<9} {sample.wall:7.2f} s "
                    f"{sample.rss_mb:6.1f} MB")  # fmt: skip
    return {
        "runs": runs,
        "metrics": metrics,
        "points": points,
        "median": bench_run.medians(samples),
    }


def report_s3(ns: argparse.Namespace, results: dict[str, Any]) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = []
    for name, r in results.items():
        directory, s3 = r["median"]["directory"], r["median"]["s3"]
        shape = f"{r['runs']} runs x {r['metrics']} metrics x {r['points']} points"
        print(f"\n== {name} to --out s3:// (moto on loopback): {shape}, repeat {ns.repeat}")
        print(f"   {'output':<12}{'wall s':>8}{'cpu s':>8}{'records':>10}{'peak RSS MB':>13}")
        for label, m in (("directory", directory), ("s3", s3)):
            print(f"   {label:<12}{m['wall']:8.2f}{m['cpu']:8.2f}{m['records']:10.0f}"
                  f"{m['rss_mb']:13.1f}")  # fmt: skip
        if s3["records"] != directory["records"]:
            say(f"WARNING: s3 stored {s3['records']} records, the directory {directory['records']}")
        ratio = s3["wall"] / directory["wall"]
        checks = [
            (f"wall <= {TARGETS['vs_dir']}x the directory's", ratio, TARGETS["vs_dir"],
             f"{ratio:.2f}x ({s3['wall']:.2f} s vs {directory['wall']:.2f} s)"),
            (f"peak RSS <= {TARGETS['rss_mb']:g} MB", s3["rss_mb"], TARGETS["rss_mb"],
             f"{s3['rss_mb']:.1f} MB (directory: {directory['rss_mb']:.1f} MB)"),
        ]  # fmt: skip
        targets += bench_run.verdicts(f"{name} s3", checks)
    return targets


if __name__ == "__main__":  # pragma: no cover
    os.execv(sys.executable, [sys.executable, str(Path(__file__).with_name("bench.py")),
                              "--out", "s3", *sys.argv[1:]])  # fmt: skip
