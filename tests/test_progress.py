"""Progress and logs (issue 4): a live display on a TTY, JSON lines otherwise, everything on
stderr, so `--out -` stays pure NDJSON."""

from __future__ import annotations

import fcntl
import io
import os
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from harvester.config import Settings, load_settings
from harvester.errors import AuthRejected
from harvester.job import harvest_job
from harvester.progress import Reporter, runs_table, wants_live
from harvester.ratelimit import RateGate
from harvester.records import RECORD_TYPES
from harvester.scheduler import RunTarget
from harvester.simulator.cloud import SimCloud
from harvester.simulator.generated import FIRST_PROJECT_ID
from harvester.simulator.server import Simulator
from harvester.stats import HarvestStats
from tests.harvest_helpers import parse_lines, settings_for
from tests.process_helpers import ROOT, cli_command, cli_env


class TtyText(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def options(**flags: Any) -> Settings:
    return load_settings(flags, environ={})


@pytest.mark.parametrize(
    ("progress", "level", "tty", "live", "json_lines"),
    [
        ("auto", "info", True, True, False),
        ("auto", "info", False, False, True),
        ("auto", "quiet", True, False, False),
        ("on", "info", False, True, False),
        ("off", "info", True, False, False),
        ("off", "info", False, False, True),
    ],
)
def test_the_renderer_is_chosen_once_from_the_settings_and_the_stream(
    progress: str, level: str, tty: bool, live: bool, json_lines: bool
) -> None:
    stream = TtyText() if tty else io.StringIO()
    settings = options(progress=progress, log_level=level, out="archive")
    reporter = Reporter.for_settings(settings, stream)
    assert (reporter.live, reporter.json_lines) == (live, json_lines)
    assert wants_live(settings, stream) is live
    assert not Reporter.for_settings(settings, stream, live_allowed=False).live


async def test_json_lines_one_per_run_and_one_summary(
    simulator: Simulator, cloud: SimCloud
) -> None:
    stream = io.StringIO()
    reporter = Reporter.for_settings(settings_for(simulator, "-"), stream)
    targets = [RunTarget(run_id) for run_id in sorted(cloud.runs)]
    result = await harvest_job(
        settings_for(simulator, "-"), targets, stdout=io.BytesIO(), observers=[reporter]
    )
    reporter.finish(result)
    events = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["run_done"] * len(cloud.runs) + ["summary"]
    assert {e["run_id"] for e in events[:-1]} == set(cloud.runs)
    assert events[-1]["runs_done"] == len(cloud.runs)
    assert events[-1]["requests"] == len(simulator.log)


async def test_quiet_keeps_only_the_summary_and_verbose_adds_run_starts(
    simulator: Simulator, cloud: SimCloud
) -> None:
    for level, expected in (("quiet", ["summary"]), ("verbose", ["run_started", "run_done"])):
        stream = io.StringIO()
        settings = settings_for(simulator, "-", log_level=level)
        reporter = Reporter.for_settings(settings, stream)
        result = await harvest_job(
            settings, [RunTarget(100001)], stdout=io.BytesIO(), observers=[reporter]
        )
        reporter.finish(result)
        events = [orjson.loads(line)["event"] for line in stream.getvalue().splitlines()]
        assert events[: len(expected)] == expected


async def test_the_live_display_and_summary_table_go_to_the_stream_never_stdout(
    simulator: Simulator, cloud: SimCloud, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = TtyText()
    settings = settings_for(simulator, "-", rate=200)
    reporter = Reporter.for_settings(settings, stream)
    assert reporter.live
    stats, gate = HarvestStats(), RateGate(settings.rate)
    ndjson = io.BytesIO()
    targets = [RunTarget(run_id) for run_id in sorted(cloud.runs)]
    async with reporter.showing(stats, gate):
        result = await harvest_job(
            settings, targets, stdout=ndjson, observers=[reporter], stats=stats, gate=gate
        )
    reporter.finish(result)
    shown = stream.getvalue()
    assert "req/s" in shown and f"{len(cloud.runs)}/{len(cloud.runs)}" in shown
    assert "run 100001: " in shown  # per-run lines printed above the bar
    assert "harvest summary" in shown and "runs harvested" in shown
    assert capsys.readouterr().out == ""
    assert all(r["type"] in RECORD_TYPES for r in parse_lines(ndjson.getvalue()))


async def test_an_error_under_the_live_display_comes_out_as_itself(simulator: Simulator) -> None:
    settings = settings_for(simulator, "-", token="wrong-token")
    reporter = Reporter.for_settings(settings, TtyText())
    with pytest.raises(AuthRejected):
        async with reporter.showing(HarvestStats()):
            await harvest_job(settings, [RunTarget(100001)], stdout=io.BytesIO())


def test_runs_table_shows_one_row_per_run() -> None:
    stream = io.StringIO()
    rows: list[dict[str, Any]] = [{"test_run_id": 7, "action": "harvest"}, {"test_run_id": 8}]
    runs_table(stream, rows)
    text = stream.getvalue()
    assert "run" in text and "processing" in text and "harvest" in text
    assert " 7 " in text and " 8 " in text


def drain(fd: int) -> bytes:
    """Everything written to a pty until its other side is closed."""
    chunks = []
    while True:
        try:
            data = os.read(fd, 1 << 16)
        except OSError:  # EIO: the child has exited and closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


async def test_stdout_stays_pure_ndjson_while_progress_shows_on_a_terminal(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    master, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    projects = ("--project", str(FIRST_PROJECT_ID), "--project", str(FIRST_PROJECT_ID + 1))
    command = cli_command(simulator, "harvest", *projects, "--out", "-", "--progress", "on")
    out_path = tmp_path / "out.ndjson"
    shown: list[bytes] = []

    async def read_terminal() -> None:
        shown.append(await anyio.to_thread.run_sync(drain, master))

    try:
        with out_path.open("wb") as out:
            process = await anyio.open_process(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=terminal,
                env=cli_env(simulator),
                cwd=ROOT,
            )
        os.close(terminal)
        terminal = -1
        async with process, anyio.create_task_group() as tg:
            tg.start_soon(read_terminal)
            with anyio.fail_after(20):
                assert await process.wait() == 0
    finally:
        if terminal >= 0:
            os.close(terminal)
        os.close(master)
    lines = out_path.read_bytes().splitlines()
    records = [orjson.loads(line) for line in lines]  # every line is JSON, nothing else
    assert {r["type"] for r in records} >= {"run", "metric", "series", "summary"}
    assert sorted(r["test_run_id"] for r in records if r["type"] == "summary") == sorted(cloud.runs)
    terminal_text = b"".join(shown).decode(errors="replace")
    assert "harvest summary" in terminal_text and "req/s" in terminal_text


def test_version_starts_without_loading_rich_aiohttp_or_prometheus() -> None:
    probe = (
        "import sys\nfrom harvester.cli import main\n"
        "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('rich', 'aiohttp', 'prometheus_client') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, cwd=ROOT, timeout=20, check=True
    )
    assert done.stdout.decode().splitlines()[-1] == "[]"
