"""Helpers for tests that run `python -m harvester` as a child process against the
in-process simulator, and for waiting on conditions with a deadline (never bare sleeps)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import anyio

from harvester.simulator.server import Simulator

ROOT = Path(__file__).resolve().parents[1]


def cli_env(sim: Simulator) -> dict[str, str]:
    """The environment of a child harvester: the simulator's token, no stray settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARVESTER_")}
    env["K6_CLOUD_TOKEN"] = sim.token
    env["PYTHONUNBUFFERED"] = "1"
    return env


def cli_command(sim: Simulator, command: str, *args: str) -> list[str]:
    """`python -m harvester COMMAND --base-url <sim> --rate 1000 ARGS...`."""
    return [sys.executable, "-m", "harvester", command, "--base-url", sim.base_url,
            "--rate", "1000", *args]  # fmt: skip


async def run_cli(
    sim: Simulator, command: str, *args: str, within: float = 20.0
) -> subprocess.CompletedProcess[bytes]:
    """Run the CLI to its end (killed after `within` seconds); stdout and stderr captured."""
    with anyio.fail_after(within):
        return await anyio.run_process(
            cli_command(sim, command, *args), env=cli_env(sim), cwd=ROOT, check=False
        )


async def wait_for(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Poll `condition` until it holds; fail the test after `within` seconds."""
    with anyio.fail_after(within):
        while not condition():
            await anyio.sleep(0.01)
