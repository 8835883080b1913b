"""The command line's standard streams when they are not what a program expects: stderr
closed from the start (`2>&-`), stdout's reader gone (`| head -1`)."""

from __future__ import annotations

import contextlib
import os
import sys


def stderr_to_devnull_if_closed() -> None:
    """Started with stderr closed (`2>&-`): Python leaves `sys.stderr` None, and the next
    file opened would take descriptor 2, so a stray write to stderr could land in an
    archive. Give descriptor 2 to /dev/null: messages are dropped, the harvest goes on."""
    if sys.stderr is not None:
        return
    try:
        os.fstat(2)
    except OSError:
        os.open(os.devnull, os.O_WRONLY)  # the lowest free descriptor: 2
    sys.stderr = open(2, "w", closefd=False)  # for the life of the process


def reader_gone(exit_status: int) -> int:
    """stdout's reader went away (`harvester projects | head -1`): the rest has nowhere to
    go, which is no bug of ours. One line, and `exit_status`, as for a harvest to `--out
    -`. stdout goes to /dev/null, or Python's last flush of it would fail again."""
    stdout_to_devnull()
    with contextlib.suppress(OSError):  # stderr may be the pipe that broke
        sys.stderr.write("harvester: cannot write to stdout: Broken pipe\n")
        sys.stderr.flush()
    return exit_status


def stdout_to_devnull() -> None:
    """stdout can take no more (its reader gone, its disk full): what Python still holds
    for it goes to /dev/null, or its last flush at exit would fail again."""
    with contextlib.suppress(OSError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
