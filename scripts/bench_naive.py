"""The naive script of `scripts/bench`: what a user writes in an afternoon.

Standard library only. Sequential requests, one metric id per series request, the `json`
module, one `<test_run_id>.ndjson` per run in the harvester's line format. It is given
the benefit of the doubt where that costs nothing: one keep-alive connection (no new
TCP connection per request), and with `--rate R` requests start exactly 1/R apart
(rather than sleeping 1/R after each answer). Prints one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

V2 = "/loadtests/v2"


class Client:
    def __init__(self, base_url: str, token: str, rate: float | None) -> None:
        parts = urlsplit(base_url)
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port)
        self.headers = {"Authorization": f"Token {token}", "Accept": "application/json"}
        self.spacing = 1.0 / rate if rate else 0.0
        self.next_at = 0.0
        self.requests = 0

    def get(self, path: str, params: list[tuple[str, Any]]) -> Any:
        if self.spacing:
            now = time.monotonic()
            if now < self.next_at:
                time.sleep(self.next_at - now)
            self.next_at = max(now, self.next_at) + self.spacing
        self.conn.request("GET", f"{V2}{path}?{urlencode(params)}", headers=self.headers)
        resp = self.conn.getresponse()
        body = resp.read()
        self.requests += 1
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status} for {path}: {body[:200]!r}")
        return json.loads(body)


def harvest_run(client: Client, run_id: int, out_dir: str) -> int:
    records = 0
    with open(os.path.join(out_dir, f"{run_id}.ndjson"), "w", encoding="utf-8") as out:

        def write(kind: str, item: Any) -> None:
            nonlocal records
            out.write(json.dumps({"type": kind, "test_run_id": run_id, "data": item}) + "\n")
            records += 1

        metrics = client.get("/metrics", [("test_run_id", run_id)])["k6-metrics"]
        for metric in metrics:
            write("metric", metric)
        for metric in metrics:
            params = [("test_run_id", run_id), ("ids[]", metric["id"])]
            for serie in client.get("/series", params)["k6-serie"]:
                write("series", serie)
        thresholds = client.get("/thresholds", [("test_run_id", run_id)])
        for metric in thresholds["k6-metrics"]:
            write("threshold_metric", metric)
        for threshold in thresholds["k6-thresholds"]:
            write("threshold", threshold)
        for overview in client.get("/run-overviews", [("test_run_id", run_id)])["k6-run-overviews"]:
            write("overview", overview)
    return records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--runs-file", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--rate", type=float, default=None, help="requests per second")
    ns = parser.parse_args()
    with open(ns.runs_file, encoding="utf-8") as fh:
        runs = [int(line) for line in fh if line.strip()]
    client = Client(ns.base_url, ns.token, ns.rate)
    records = sum(harvest_run(client, run_id, ns.out) for run_id in runs)
    sys.stdout.write(json.dumps({"requests": client.requests, "records": records}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
