"""Helpers for tests that run `python -m harvester` as a child process against the
in-process simulator, and for waiting on conditions with a deadline (never bare sleeps)."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process

from harvester.simulator.server import Simulator

ROOT = Path(__file__).resolve().parents[1]


def find_tool(name: str, install: str) -> str:
    """The executable `name`, in this environment's scripts directory (a tool a wheel of the
    dev extra ships, found without an activated venv) or on PATH. Missing: a skip saying
    how to `install` it outside CI, a failure in CI (CI=true), where scripts/test installs
    it."""
    search = os.pathsep.join([sysconfig.get_path("scripts"), os.environ.get("PATH", "")])
    found = shutil.which(name, path=search)
    if found is None:
        reason = f"{name} is not installed ({install})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}: CI needs it (scripts/test installs it)")
        pytest.skip(reason)
    return found


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


async def stderr_until(process: Process, text: bytes) -> bytes:
    """What `process` writes to its stderr until `text` appears (b"": until its end)."""
    assert process.stderr is not None
    said = b""
    with anyio.fail_after(30):
        while not text or text not in said:
            try:
                said += await process.stderr.receive()
            except anyio.EndOfStream:
                break
    return said


async def wait_for(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Poll `condition` until it holds; fail the test after `within` seconds."""
    with anyio.fail_after(within):
        while not condition():
            await anyio.sleep(0.01)


def recorded_running(path: Path) -> set[int]:
    """The runs the state file at `path` holds as `running` (none before a job created
    it), read only: a job records a run once its writer task has begun the run's files,
    after the run's first requests, so a test that waits on those sees it unrecorded."""
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT run_id FROM runs WHERE status = 'running'").fetchall()
    except sqlite3.Error:  # not created yet, or its schema not yet
        return set()
    return {run_id for (run_id,) in rows}


def run_as_reader(setup: str, work: str, archive: Path) -> subprocess.CompletedProcess[bytes]:
    """Python `setup` (its imports), then `work` (`archive`: the archive's path), run as a
    reader who is not the archive's owner: `nobody` when the tests run as root, who reads
    everything (the imports come first: `nobody` may not read this checkout), else this
    user, who cannot read what is mode 000."""
    script = "\n".join(
        [
            "import os, sys",
            setup,
            "if os.geteuid() == 0:",
            "    os.setgroups([])",
            "    os.setgid(65534)",
            "    os.setuid(65534)",
            "archive = sys.argv[1]",
            work,
        ]
    )
    return subprocess.run(
        [sys.executable, "-c", script, str(archive)],
        capture_output=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
