"""What the kernel is told about the archive's pages: start writing them out early, and
forget them once they are on disk.

An archive is written once and not read back by the job that writes it, so its pages
are of no use in the page cache once fsynced. Both calls are hints (`posix_fadvise`,
a no-op where it is missing): durability comes from the fsync of the run's commit.
"""

from __future__ import annotations

import contextlib
import os
from typing import BinaryIO

WRITEBACK_AFTER = 1 << 20  # bytes of a run written between two writeback hints


def start_writeback(fh: BinaryIO) -> None:
    """Have the kernel start writing the file's dirty pages to disk now, without waiting.

    Otherwise they all wait for the commit's fsync, and the writer with them: publishing
    a 7.5 MB run (fsync, rename, fsync of the directory) took a median 11 ms, 6 ms with
    the hint, and while the writer waits the fetchers fill the channel and hold their
    parsed answers. On Linux, DONTNEED starts asynchronous writeback and drops the pages
    already clean (an archive is not read back). Only a hint: durability still comes
    from the fsync in `commit`.
    """
    _dont_need(fh)


def release_pages(fh: BinaryIO) -> None:
    """After the fsync, drop every page of the file from the page cache: all are clean now,
    and an archive is written once and not read back by this job.

    The pages go back to the kernel at once, and the next run's writes reuse them. Kept,
    they filled the cache (2 GB a large points harvest; a Kubernetes job's cgroup counts
    them), and each new write took a page never touched before. On a virtual machine that
    gives freed memory back to its host (this project's, and many a cloud node), such a
    page costs the host's fault: writing 1 GB into fresh pages took 1.6-1.8 s of system
    CPU, into reused ones 0.2 s (measured, `python` writes of 1 MiB). scripts/bench, large,
    medians of 3: points 8.65 -> 5.64 s (the writer's copies into the page cache 4.7 ->
    0.3 s of CPU; the job's CPU 10.8 -> 8.1 s), raw 3.92 -> 3.04 s."""
    _dont_need(fh)


def _dont_need(fh: BinaryIO) -> None:
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
