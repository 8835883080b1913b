"""The C library's allocator, set once: a large buffer (an answer's body, a batch of
lines, Arrow's arrays) gets a mapping of its own, handed back when it is freed.

glibc's malloc maps an allocation of 128 KiB or more on its own, but each time such a
mapping is freed it raises that threshold to the freed size (up to 32 MiB) and its heap's
trim threshold to twice that: from then on answers of megabytes come from the heap, whose
freed memory stays resident. A fixed threshold (`mallopt(M_MMAP_THRESHOLD)`, what
`MALLOC_MMAP_THRESHOLD_=131072` does) keeps every such buffer mapped: the large bench's
heap at peak went from 42 MB to 10 MB (`--format parquet`: 175 -> 143 MB peak RSS).
It costs CPU (each buffer's pages are faulted in afresh: raw large 4.4 -> 5.4 s), so
only `--format parquet` sets it (`formats/parquet.py`), whose peak is over 150 MB
without; its harvester process (`sinks.py`) at 1 MiB with a 2 MiB trim threshold: the
answers' pieces and bodies (aiohttp's, up to 256 KiB each, twice; the series answers
joined, ~0.85 MB at the bench's batch size) come from the heap and are used again
instead of being faulted in afresh. A user's own MALLOC_MMAP_THRESHOLD_ (and
MALLOC_TRIM_THRESHOLD_) stands; other C libraries (musl, macOS) are left as they are.
"""

from __future__ import annotations

import ctypes
import os

#: glibc's `mallopt` parameter numbers, and its own default threshold, kept fixed.
M_MMAP_THRESHOLD = -3
M_TRIM_THRESHOLD = -1
THRESHOLD = 128 * 1024


def fix_mmap_threshold(threshold: int = THRESHOLD, trim: int | None = None) -> bool:
    """Fix glibc's mmap threshold (and, given `trim`, its heap's trim threshold: the free
    bytes its top keeps); False where there is no glibc `mallopt` to call."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own symbols: its C library's
    except (OSError, AttributeError):  # pragma: no cover (not glibc)
        return False
    if trim is not None and "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        mallopt(M_TRIM_THRESHOLD, trim)
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))


def trim_heap() -> None:
    """Hand the C heap's free pages back to the system (glibc `malloc_trim(0)`): freed
    buffers of megabytes in the middle of a heap otherwise stay resident. A no-op where
    there is no glibc."""
    try:
        malloc_trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # pragma: no cover (not glibc)
        return
    malloc_trim(0)
