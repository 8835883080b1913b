"""How many CPUs this process may use: what sizes its pools of worker processes
(`verify`'s scanners, `writerpool`'s writers)."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """The CPUs this process may run on (a container's or `taskset`'s share, not the
    machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1  # pragma: no cover (macOS, Windows)
