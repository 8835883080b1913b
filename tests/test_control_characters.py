"""An error answer whose words hold control characters (an ESC sequence, a CR, C1's CSI)
is quoted in a run's reason: `run N failed: <reason>` wrote them to the terminal raw (a
`\x1b[2J` cleared it), while the tables showed them as U+FFFD. Every line for people now
shows them as the tables do; the state file keeps the API's words exact."""

from __future__ import annotations

import io
import re
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
from aiohttp import web

from harvester.job import harvest_job
from harvester.progress import Reporter
from harvester.scheduler import RunTarget
from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator
from harvester.state import STATE_FILE_NAME
from tests.harvest_helpers import settings_for
from tests.process_helpers import run_cli

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SAID = "bad \x1b[2Jrequest\r\x9b31mX\x7f"
CONTROLS = ("\x1b", "\r", "\x9b", "\x7f")
STYLES = r"\x1b\[[0-9;]*m"  # rich's own colours in the live summary table


class TtyText(io.StringIO):
    def isatty(self) -> bool:
        return True


def refusing(status: int, run_id: int | None) -> Simulator:
    """The simulator, whose metrics (of `run_id`, or of every run) answer `status` with
    `SAID` as the API's words."""

    @web.middleware
    async def refuse(request: web.Request, handler: Handler) -> web.StreamResponse:
        if "metrics" in request.path and (run_id is None or str(run_id) in request.raw_path):
            return web.json_response({"detail": SAID}, status=status)
        return await handler(request)

    sim = Simulator(generate_cloud(runs=2, metrics=5, points=5))
    sim.app.middlewares.insert(0, refuse)
    return sim


async def test_a_runs_reason_is_shown_not_obeyed_and_kept_exact(tmp_path: Path) -> None:
    lines, live, machine = TtyText(), TtyText(), io.StringIO()
    async with refusing(400, 100001) as sim:
        settings = settings_for(sim, tmp_path)
        reporters = [
            Reporter(lines, json_lines=False),
            Reporter(live, json_lines=False, live=True),
            Reporter.for_settings(settings, machine),
        ]
        result = await harvest_job(settings, [RunTarget(100001)], observers=reporters)
    for reporter in reporters:
        reporter.finish(result)
    [failed] = result.report.failed
    assert "\x1b[2J" in str(failed.reason)  # the API's words, as said
    for shown in (lines.getvalue(), re.sub(STYLES, "", live.getvalue())):
        assert "run 100001 failed: " in shown and "bad \ufffd[2Jrequest" in shown
        assert not any(c in shown for c in CONTROLS), repr(shown)
    # JSON lines: the message for people shown, the reason field exact (JSON escapes it).
    [line] = [orjson.loads(x) for x in machine.getvalue().splitlines() if "run_failed" in x]
    assert not any(c in line["message"] for c in CONTROLS)
    assert line["reason"] == failed.reason
    with sqlite3.connect(tmp_path / STATE_FILE_NAME) as db:
        [(kept,)] = db.execute("SELECT reason FROM runs WHERE run_id = 100001").fetchall()
    assert "\x1b[2J" in kept


async def test_an_error_ending_the_job_is_shown_not_obeyed(tmp_path: Path) -> None:
    async with refusing(401, None) as sim:
        done = await run_cli(sim, "harvest", "--run", "100001", "--out", str(tmp_path))
    assert done.returncode == 2
    said = done.stderr.decode()
    assert "bad \ufffd[2Jrequest" in said and not any(c in said for c in CONTROLS), said
