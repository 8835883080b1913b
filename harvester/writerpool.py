"""The writer processes of a `--format points` or `parquet` harvest into a directory
(`writeproc.WriterProcess`), and which one writes each run.

Why two for points: a run's points file is 5x its raw bytes (large: 2 GB), and a writer
spends about as much CPU on them as the event loop spends on the whole harvest (building
the lines, hashing and writing them: ~2.9 s against ~1.4 s at large). One writer was
the harvest's critical path: its main thread and its hashing thread each ran about half
the time, the cores ~17% idle over the harvest. With two, each writes its runs in turn,
hashing each piece it built while the bytes are still in its CPU's cache (1.9 GB/s,
against ~1.3 GB/s for a thread on the other core), and the cores are ~8% idle: large
3.4 -> 3.1 s. Never more than two (`POINTS_WRITERS`): each then has about as much work
as the event loop that feeds them (~1.4 s at large), so a third would wait for it, and
each costs ~30 MB. Parquet keeps one: its writer imports pyarrow (~40 MB), and Arrow
already encodes on threads of its own.

A run goes to the writer with the fewest runs open, so that a long run does not hold
the runs behind it. A writer that died (killed, out of memory) fails the run writing to
it, which stops the job as any write error does ("cannot write to DIR: the writer
process stopped: killed by SIGKILL"; the runs published are kept, the next job
harvests the rest); meanwhile no new run goes to it while another writer lives.
"""

from __future__ import annotations

import contextlib

from .cpus import usable_cpus
from .writeproc import WriterProcess

#: Writer processes of a points harvest, at most (one a CPU this process may use).
POINTS_WRITERS = 2

#: A writer process started before it was needed (`start_early`), for the first pool.
_EARLY: list[WriterProcess] = []


def pool_size(output_format: str) -> int:
    """The writer processes for `output_format`: two for points when two CPUs are usable
    (the harvest's event loop runs beside them), else one."""
    if output_format != "points":
        return 1
    return max(1, min(POINTS_WRITERS, usable_cpus()))


def start_early() -> None:
    """Start a writer process now, while this process imports and sets the job up (~0.2
    s): its own start (an interpreter and its imports, ~0.05 s of CPU) then overlaps with
    them instead of delaying the first lines, which a points harvest would wait for. One
    only: a second, started here too, delayed the first request by ~0.04 s (two
    interpreters starting beside this one's imports on two cores); the pool starts it
    when a second run opens, while the first answers come. A process not taken ends with
    this one (its pipe closes)."""
    if not _EARLY:
        _EARLY.append(WriterProcess())


def writer_process() -> WriterProcess:
    """A writer process started early, once; else a new one."""
    return _EARLY.pop() if _EARLY else WriterProcess()


class WriterPool:
    """The writer processes of one sink: the first when its first run opens, each other
    (up to `size`) when a run opens while every live writer has a run open, so that a
    job of one run, or `--runs-in-flight 1`, starts no writer it would not use (~30 MB
    and ~0.05 s of CPU each)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.writers = [writer_process()]

    def for_run(self) -> WriterProcess:
        """The writer for a new run (call it for one run at a time): a new one while the
        live ones are all busy and the pool has room, else the live one with the fewest
        runs open (the first of them on a tie); a dead one only when none lives and no
        other may start (opening the run then says why)."""
        live = [w for w in self.writers if w.failed is None]
        if len(self.writers) < self.size and all(w.open_runs for w in live):
            self.writers.append(writer_process())
            return self.writers[-1]
        return min(live or self.writers, key=lambda writer: writer.open_runs)

    def close(self) -> None:
        """End every writer (each closes what it still has open) and wait for them."""
        with contextlib.ExitStack() as closing:  # each is closed, whatever one raised
            for writer in reversed(self.writers):
                closing.callback(writer.close)
