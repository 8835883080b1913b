"""The worker seen from Grafana (issue 12): the dashboard and the alert rules query only
metrics a running worker exports, and its /metrics and the rules pass promtool (Debian's
`prometheus` package; outside CI a missing promtool skips, in CI it fails)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator
from tests.process_helpers import ROOT, find_tool, wait_for
from tests.test_worker import make_worker, running, worker_settings

DASHBOARD = ROOT / "config" / "grafana-dashboard.json"
ALERTS = ROOT / "config" / "harvester-alerts.yml"
METRIC = re.compile(r"\bharvester_[a-z_]+\b")


def promtool() -> str:
    return find_tool("promtool", "apt-get install prometheus")


def expressions(node: Any) -> list[str]:
    """Every PromQL `expr` anywhere in a dashboard (panels, rows, templating queries)."""
    if isinstance(node, dict):
        found = [v for k, v in node.items() if k in ("expr", "query") and isinstance(v, str)]
        return found + [e for v in node.values() for e in expressions(v)]
    if isinstance(node, list):
        return [e for v in node for e in expressions(v)]
    return []


@pytest.fixture
async def exposition(tmp_path: Path) -> str:
    """A real worker's /metrics after one successful cycle."""
    cloud = generate_cloud(runs=2, metrics=3, points=2, projects=1, tests=1)
    async with Simulator(cloud) as sim:
        worker, _ = make_worker(worker_settings(sim, tmp_path))
        async with running(worker) as base:
            await wait_for(lambda: worker.status.last_success is not None)
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{base}/metrics") as resp:
                    return await resp.text()


def exported(text: str) -> set[str]:
    """Every series name /metrics declares: a labelled counter with no sample yet (no
    request error so far) is still declared by its HELP and TYPE lines."""
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name + ("_total" if family.type == "counter" else ""))
        names.update(sample.name for sample in family.samples)
    return names


async def test_every_metric_the_dashboard_and_alerts_query_is_one_the_worker_exports(
    exposition: str,
) -> None:
    dashboard = orjson.loads(DASHBOARD.read_bytes())
    queries = expressions(dashboard)
    rules = [r["expr"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    queried = {name for query in queries + rules for name in METRIC.findall(query)}
    assert len(queried) >= 10  # runs, failures, requests vs limit, 429s, retries, age, cycles
    assert queried <= exported(exposition), queried - exported(exposition)
    titles = " ".join(panel["title"] for panel in dashboard["panels"]).lower()
    for topic in ("harvested and failed", "rate vs limit", "429", "retries", "age", "cycle"):
        assert topic in titles


async def test_the_workers_metrics_and_the_alert_rules_pass_promtool(exposition: str) -> None:
    tool = promtool()
    with anyio.fail_after(30):
        done = await anyio.run_process([tool, "check", "metrics"], input=exposition.encode(),
                                       check=False)  # fmt: skip
        assert done.returncode == 0, (done.stdout + done.stderr).decode()
        done = await anyio.run_process([tool, "check", "rules", str(ALERTS)], check=False)
    assert done.returncode == 0, (done.stdout + done.stderr).decode()
    assert b"SUCCESS: 2 rules found" in done.stdout
