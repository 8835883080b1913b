"""The floor of `scripts/bench`: the least work any correct harvester must do.

A bare aiohttp loop: `--concurrency` workers GET exactly the URLs listed in URL_FILE
(the ones the harvester needs, built by the bench with the harvester's own batcher),
read each body, parse it with `orjson.loads` and discard it. Nothing is written. Prints
one JSON line on stdout: requests, records (objects in the answers) and bytes received.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
import orjson
from yarl import URL

#: The list in each answer whose entries the harvester writes as records (v2; v6's
#: metrics list is `value`, its query results `data.result`, a run object is one).
LIST_KEYS = ("k6-serie", "k6-metrics", "k6-thresholds", "k6-run-overviews", "value")


def records_in(doc: dict[str, Any]) -> int:
    found = sum(len(doc[k]) for k in LIST_KEYS if k in doc)
    data = doc.get("data")
    if isinstance(data, dict) and isinstance(data.get("result"), list):
        found += len(data["result"])
    return found or int("id" in doc)


async def fetch_all(
    urls: list[str], token: str, concurrency: int, stack_id: int | None = None
) -> dict[str, int]:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for url in urls:
        queue.put_nowait(url)
    totals = {"requests": 0, "records": 0, "bytes_in": 0}
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Authorization": f"Token {token}", "Accept": "application/json"}
    if stack_id is not None:  # v6 and v5
        headers |= {"Authorization": f"Bearer {token}", "X-Stack-Id": str(stack_id)}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker() -> None:
            while not queue.empty():
                url = URL(queue.get_nowait(), encoded=True)
                async with session.get(url) as resp:
                    body = await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"HTTP {resp.status} for {url}")
                doc = orjson.loads(body)
                totals["requests"] += 1
                totals["bytes_in"] += len(body)
                # A thresholds answer carries two lists: both are archived.
                totals["records"] += records_in(doc)

        workers = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
        await asyncio.gather(*workers)
    return totals


def run_loop(main: Coroutine[Any, Any, dict[str, int]]) -> dict[str, int]:
    """uvloop when installed, as the harvester does."""
    runner: Callable[[Coroutine[Any, Any, dict[str, int]]], dict[str, int]] = asyncio.run
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        pass
    return runner(main)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("url_file", help="one absolute URL a line, already encoded")
    parser.add_argument("--token", required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--stack-id", type=int, help="v6/v5: Bearer and X-Stack-Id")
    ns = parser.parse_args()
    with open(ns.url_file, encoding="utf-8") as fh:
        urls = [line.strip() for line in fh if line.strip()]
    totals = run_loop(fetch_all(urls, ns.token, ns.concurrency, ns.stack_id))
    sys.stdout.write(orjson.dumps(totals).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
