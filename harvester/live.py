"""The live display on a TTY: a two-line rich progress bar redrawn from the event loop.

Split from `progress.py` (which decides what to show and writes the events); rich is
imported only when a display is actually made, so `harvester --version` starts fast.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TextIO

from .tables import plural

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.progress import Progress, TaskID

    from .config import Settings
    from .ratelimit import RateGate
    from .stats import HarvestStats

#: Seconds between redraws of the live display.
TICK = 0.2


def wants_live(settings: Settings, stream: TextIO) -> bool:
    """`--progress on`, or `auto` on a TTY unless `--quiet` or the NDJSON itself is
    going to the same terminal (the display would be torn by it)."""
    if settings.progress == "on":
        return True
    if settings.progress != "auto" or settings.log_level == "quiet" or not stream.isatty():
        return False
    return not (settings.to_stdout and sys.stdout.isatty())


class LiveDisplay:
    """A rich progress bar on stderr, redrawn from the event loop (no refresh thread, so
    the counters are only ever read on the loop that updates them). Two lines, so it
    reads whole at 80 columns: the bar with its ETA, then the counters."""

    def __init__(self, console: Console, stats: HarvestStats, gate: RateGate | None) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        self.stats = stats
        self.gate = gate
        self.discovering = False
        self.counters = ""
        display = self

        class TwoLines(Progress):
            def get_renderables(self) -> Any:
                yield self.make_tasks_table(self.tasks)
                yield Text(display.counters, no_wrap=False)

        # redirect_stdout=False: with rich's default the NDJSON on stdout was captured
        # into the display and a redirected `--out -` file came out empty (STYLE.md #14).
        self.progress: Progress = TwoLines(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self.task: TaskID = self.progress.add_task("runs", total=None)

    def detail(self) -> str:
        """The counters line. The rate is what the gate admitted over the window its
        limit is kept over (`RateGate.recent_rate`): it never reads above the limit."""
        s = self.stats
        parts = [plural(s.request_count, "request")]
        if self.gate is not None:
            parts.append(f"{self.gate.recent_rate():.1f}/{self.gate.current:g} req/s")
        parts += [plural(s.record_count, "record"), plural(s.retries, "retry", "retries")]
        if s.runs_failed:
            parts.append(f"{s.runs_failed} failed")
        paused = self.gate.paused_for if self.gate is not None else 0.0
        if paused > 0:
            parts.append(f"paused {paused:.0f}s (429)")
        return " · ".join(parts)

    def tick(self) -> None:
        s = self.stats
        total = s.runs_total or None
        done = s.runs_done + s.runs_failed
        self.counters = self.detail()
        what = "discovering" if self.discovering else "runs"
        self.progress.update(self.task, description=what, total=total, completed=done)
        self.progress.refresh()

    def renderable(self) -> RenderableType:
        """What the display shows now (for tests: rendered at a given width)."""
        from rich.console import Group

        self.tick()
        return Group(*self.progress.get_renderables())

    def __enter__(self) -> LiveDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.tick()
        self.progress.stop()
