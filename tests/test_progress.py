"""Progress and logs (issue 4): a live display on a TTY, JSON lines otherwise, everything on
stderr, so `--out -` stays pure NDJSON."""

from __future__ import annotations

import fcntl
import io
import os
import re
import signal
import struct
import subprocess
import sys
import termios
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from rich.console import Console

from harvester.config import Settings, load_settings
from harvester.errors import AuthRejected
from harvester.job import JobResult, harvest_job
from harvester.live import LiveDisplay, wants_live
from harvester.progress import Reporter
from harvester.ratelimit import RateGate
from harvester.records import RECORD_TYPES
from harvester.scheduler import HarvestReport, RunOutcome, RunTarget
from harvester.simulator.cloud import SimCloud
from harvester.simulator.faults import FaultPlan
from harvester.simulator.generated import FIRST_PROJECT_ID, generate_cloud
from harvester.simulator.server import Simulator
from harvester.stats import HarvestStats
from harvester.tables import runs_table, summary_table
from tests.fs_helpers import tiny_tmpfs
from tests.harvest_helpers import parse_lines, settings_for
from tests.process_helpers import ROOT, cli_command, cli_env, run_cli


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
    assert "run" in text and "status" in text and "harvest" in text
    assert " 7 " in text and " 8 " in text


def test_a_tables_cells_are_shown_as_they_are_not_as_markup() -> None:
    """Names come from the API (a test's) or the disk (a file's): '[/b]' was an internal
    error (rich's MarkupError) and '[red]' vanished, coloring the rest."""
    stream = io.StringIO()
    odd = "a [/b] [red]c[/red] [link=x]d"
    runs_table(stream, [{"test_run_id": 7, "test_name": odd, "action": "harvest"}], width=200)
    assert odd in stream.getvalue()


def test_control_characters_in_a_name_are_shown_not_obeyed() -> None:
    """A test the API names `a\x1b[2Jb` cleared a terminal showing `harvester runs`; a
    newline or a carriage return broke the row."""
    stream = io.StringIO()
    odd = "a\x1b[2Jb\nc\rd"
    runs_table(stream, [{"test_run_id": 7, "test_name": odd, "action": "harvest"}], width=200)
    shown = stream.getvalue()
    assert "\x1b" not in shown and "\r" not in shown
    assert "a\ufffd[2Jb\ufffdc\ufffdd" in shown


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


def test_json_lines_carry_an_iso_time_and_a_level() -> None:
    stream = io.StringIO()
    reporter = Reporter(stream, json_lines=True)
    reporter.event("run_done", "run 1: 1 record")
    reporter.event("run_failed", "run 2 failed: not found")
    done, failed = map(orjson.loads, stream.getvalue().splitlines())
    moment = datetime.fromisoformat(done["time"].replace("Z", "+00:00"))
    assert moment.tzinfo is not None and abs(datetime.now(UTC) - moment) < timedelta(minutes=5)
    assert (done["level"], failed["level"]) == ("info", "error")


def test_worker_lines_on_a_terminal_start_with_a_timestamp() -> None:
    stream = TtyText()
    settings = options(out="archive")
    Reporter.for_settings(settings, stream, live_allowed=False, timestamps=True).event("x", "hi")
    Reporter.for_settings(settings, stream, live_allowed=False).event("x", "plain")
    stamped, plain = stream.getvalue().splitlines()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d harvester: hi", stamped)
    assert plain == "harvester: plain"


def test_a_stop_says_at_once_what_happens_with_the_signal_by_name() -> None:
    stream = io.StringIO()
    reporter = Reporter(stream, json_lines=False)
    reporter.run_started(1)
    reporter.stopping(signal.SIGINT, 10.0)
    reporter.run_started(2)
    reporter.stopping(signal.SIGTERM, 10.0)
    reporter.stopping_now(signal.SIGINT)
    reporter.discovering()
    reporter.stopping(signal.SIGINT, 10.0)
    assert stream.getvalue().splitlines() == [
        "harvester: stopping (SIGINT): 1 run in flight get 10 s; Ctrl-C again to stop now",
        "harvester: stopping (SIGTERM): 2 runs in flight get 10 s; SIGTERM again to stop now",
        "harvester: SIGINT again: stopping now",
        "harvester: stopping (SIGINT): discovering, nothing written yet; Ctrl-C again to stop now",
    ]


async def test_the_summary_counts_only_records_that_were_kept(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    """Every run fails at its overview after its metrics and series were written: their
    files are removed, so the summary counts no record and no byte."""
    simulator.faults = FaultPlan(p_500=1.0, fault_endpoints=frozenset({"overview"}))
    stream = io.StringIO()
    settings = settings_for(simulator, tmp_path, max_attempts=1)
    reporter = Reporter.for_settings(settings, stream)
    targets = [RunTarget(run_id) for run_id in sorted(cloud.runs)]
    result = await harvest_job(settings, targets, observers=[reporter])
    reporter.finish(result)
    assert result.stats.record_count > 0 and len(result.report.failed) == len(cloud.runs)
    summary = orjson.loads(stream.getvalue().splitlines()[-1])
    assert (summary["event"], summary["records"], summary["bytes"]) == ("summary", 0, 0)
    assert not list(tmp_path.glob("*.ndjson"))


def rendered(renderable: object, width: int = 80) -> list[str]:
    console = Console(width=width, file=io.StringIO(), force_terminal=False)
    console.print(renderable)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    return [line.rstrip() for line in text.splitlines()]


async def test_the_live_display_reads_whole_at_80_columns() -> None:
    stats = HarvestStats(runs_total=1200, runs_done=345, retries=1, runs_failed=2)
    stats.requests[("series", 200)] = 123_456
    stats.records["series"] = 9_876_543
    gate = RateGate(5)
    gate.throttled(30)
    display = LiveDisplay(Console(width=80, file=io.StringIO()), stats, gate)
    lines = rendered(display.renderable())
    text = "\n".join(lines)
    assert all(len(line) <= 80 for line in lines)
    assert "…" not in text  # nothing cut short
    assert "347/1200" in text and "ETA" in text  # done and failed
    for part in ("123456 requests", "/2.5 req/s", "9876543 records", "1 retry", "2 failed"):
        assert part in text
    assert "paused" in text and "(429)" in text
    display.discovering = True
    assert "discovering" in "\n".join(rendered(display.renderable()))


@pytest.mark.parametrize("limit", [20.0, 2.5])
async def test_the_shown_rate_never_exceeds_the_limit_the_gate_kept(limit: float) -> None:
    """Many tasks go through the gate for 1.5 s; the display is read at every admission
    and between them: the rate it shows is never above the limit, a fractional one (as
    after a 429 halves 5) included, though a second may hold ceil(2.5) = 3 admissions."""
    gate = RateGate(limit)
    display = LiveDisplay(Console(width=80, file=io.StringIO()), HarvestStats(), gate)
    shown: list[float] = []

    def read() -> None:
        match = re.search(r"([\d.]+)/([\d.]+) req/s", display.detail())
        assert match is not None and float(match[2]) == limit
        shown.append(float(match[1]))

    async def hammer() -> None:
        while True:
            await gate.acquire()
            read()

    async def watch() -> None:
        while True:
            read()
            await anyio.sleep(0.01)

    with anyio.move_on_after(1.5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            for _ in range(8):
                tg.start_soon(hammer)
    assert max(shown) <= limit
    assert max(shown) >= limit / 2  # it does show the rate, not a constant


async def test_a_fatal_worker_error_is_a_json_line_then_the_summary(
    simulator: Simulator, tmp_path: Path
) -> None:
    """Not a terminal: the rejected token ends the worker with an `error` line and a
    `summary` last, so a log pipeline can parse the last line."""
    args = ("--project", str(FIRST_PROJECT_ID), "--out", str(tmp_path), "--listen-port", "0")
    done = await run_cli(simulator, "worker", *args, "--token", "wrong-token")
    assert done.returncode == 2
    events = [orjson.loads(line) for line in done.stderr.splitlines()]
    *_, error, summary = events
    assert (error["event"], error["level"], error["exit_status"]) == ("error", "error", 2)
    assert "rejected the token" in error["message"]
    assert summary["event"] == "summary" and summary["runs_done"] == 0
    assert all("time" in e and "level" in e for e in events)


async def test_a_job_ended_before_it_knew_its_runs_says_how_many_it_left_is_unknown(
    simulator: Simulator, tmp_path: Path
) -> None:
    """Discovery refused (the token rejected): the summary said `runs_not_harvested: 0`,
    which reads as "nothing was left" though the job never learnt what it had to do."""
    args = ("--project", str(FIRST_PROJECT_ID), "--out", str(tmp_path), "--token", "wrong")
    done = await run_cli(simulator, "harvest", *args)
    assert done.returncode == 2
    *_, error, summary = [orjson.loads(line) for line in done.stderr.splitlines()]
    assert error["event"] == "error" and summary["event"] == "summary"
    assert summary["runs_not_harvested"] is None
    assert "how many not harvested unknown" in summary["message"]


@pytest.mark.parametrize("command", [["config", "show"], ["harvest", "--help"]])
def test_commands_that_never_show_the_version_do_not_read_it(command: list[str]) -> None:
    """importlib.metadata costs ~0.06 s a start: only --version and a harvest pay it."""
    probe = (
        "import sys\nfrom harvester.cli import main\n"
        f"try:\n    main({command!r})\nexcept SystemExit:\n    pass\n"
        "print('importlib.metadata' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, cwd=ROOT, timeout=20, check=True
    )
    assert done.stdout.decode().splitlines()[-1] == "False"


@pytest.mark.parametrize("cloud", [generate_cloud(runs=6, metrics=60, points=240)])
async def test_a_job_ended_by_a_full_disk_sums_up_what_it_kept_and_what_it_did_not_reach(
    simulator: Simulator, cloud: SimCloud, tmp_path: Path
) -> None:
    """Runs of ~0.8 MB, one at a time, into a 2 MB filesystem: the third fills it. The
    summary counts the runs published and their records (not the lines of the run that
    was cut), and says how many runs the job did not harvest, so none goes unmentioned."""
    with tiny_tmpfs(tmp_path / "tiny", size="2m") as out:
        args = ("--all-projects", "--out", str(out), "--runs-in-flight", "1")
        done = await run_cli(simulator, "harvest", *args, within=60)
        published = sorted(out.glob("*.ndjson"))
        lines = sum(len(path.read_bytes().splitlines()) for path in published)
    assert done.returncode == 1
    *_, error, summary = [orjson.loads(line) for line in done.stderr.splitlines()]
    assert "No space left on device" in error["message"]
    assert summary["runs_done"] == len(published) >= 1
    assert summary["runs_not_harvested"] == 6 - len(published) - summary["runs_failed"] >= 1
    assert f"{summary['runs_not_harvested']} not harvested" in summary["message"]
    assert summary["records"] == lines  # each file's lines, its summary line included


def test_the_summary_table_names_the_runs_not_harvested_only_when_there_are() -> None:
    """On a terminal too, a stopped job says how many runs it left for the next one."""

    def shown(not_done: list[int]) -> str:
        text = io.StringIO()
        result = JobResult(HarvestReport(), HarvestStats(), 1.0, not_done=not_done)
        summary_table(Console(width=80, file=text), result, 1.0, Counter(), 0)
        return text.getvalue()

    assert re.search(r"runs not harvested\s+│\s+3", shown([1, 2, 3]))
    assert "not harvested" not in shown([])


def test_a_run_failing_every_cycle_is_kept_once_for_the_final_summary() -> None:
    """A worker's reporter lives for months: a run that fails every cycle took one more
    entry each time (memory growing for ever, and a fatal summary listing it thousands of
    times); a run that failed and was harvested later is no failure."""
    stream = io.StringIO()
    reporter = Reporter(stream, json_lines=True, level="quiet")
    for _ in range(1000):
        reporter.run_ended(RunOutcome(7, ok=False, reason="HTTP 403"))
    reporter.run_ended(RunOutcome(9, ok=False, reason="timed out"))
    reporter.run_ended(RunOutcome(9, ok=True, summary={"counts": {"metric": 1}}))
    assert len(reporter._failed) == 1
    reporter.fatal("the API rejected the token", 2)
    summary = orjson.loads(stream.getvalue().splitlines()[-1])
    assert summary["failed"] == [{"run_id": 7, "reason": "HTTP 403"}]
    assert summary["runs_failed"] == 1
