"""allocator: glibc's mmap threshold stays fixed, so a big buffer is mapped on its own
(and handed back when freed) even after another was freed."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from harvester.allocator import fix_mmap_threshold
from tests.process_helpers import ROOT

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc")

#: Frees an 8 MiB buffer, makes another, and says whether the second is in the heap.
CODE = """
import ctypes, sys
from harvester.allocator import fix_mmap_threshold
fixed = sys.argv[1] == "fix" and fix_mmap_threshold()
if sys.argv[1] == "parquet":  # --format parquet's writer sets it
    import io
    from harvester.formats.parquet import ParquetPoints
    fixed = bool(ParquetPoints(io.BytesIO()))
if sys.argv[1].endswith("-sink"):  # the harvester's own process, its writer a child
    import pathlib
    from harvester.sinks import DirectorySink
    fixed = bool(DirectorySink(pathlib.Path("."), output_format=sys.argv[1][: -len("-sink")]))
size = int(sys.argv[2]) << 10 if len(sys.argv) > 2 else 8 << 20
first = bytearray(size)
del first
second = bytearray(size)
address = ctypes.addressof((ctypes.c_char * 1).from_buffer(second))
[heap] = [line.split()[0] for line in open("/proc/self/maps") if line.rstrip().endswith("[heap]")]
low, high = (int(end, 16) for end in heap.split("-"))
print(fixed, low <= address < high)
"""


def second_buffer(how: str, *args: str, code: str = CODE, **environ: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | environ
    done = subprocess.run(
        [sys.executable, "-c", code, how, *args], cwd=ROOT, env=env, capture_output=True,
        text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_a_big_buffer_is_mapped_on_its_own_after_another_was_freed() -> None:
    assert second_buffer("leave") == ["False", "True"]  # glibc alone: in the heap
    assert second_buffer("fix") == ["True", "False"]
    assert second_buffer("parquet") == ["True", "False"]


def test_the_harvesters_own_process_fixes_it_for_parquet_only() -> None:
    """--format parquet builds its files in the writer process (`writeproc`); the
    harvester's own process keeps the threshold fixed as when it built them itself."""
    assert second_buffer("parquet-sink") == ["True", "False"]
    assert second_buffer("points-sink") == ["True", "True"]


#: Frees 1.5 MiB of small buffers at the heap's top: does the heap keep them?
KEEPS = """
import sys, pathlib
from harvester.sinks import DirectorySink
DirectorySink(pathlib.Path("."), output_format=sys.argv[1])
def heap():
    [span] = [l.split()[0] for l in open("/proc/self/maps") if l.rstrip().endswith("[heap]")]
    low, high = (int(end, 16) for end in span.split("-"))
    return high - low
heap()  # once first: what its first call allocates (a tracer's caches) is not on top
blocks = [bytearray(100 << 10) for _ in range(15)]
before = heap()
del blocks
print(heap() > before - (1 << 20))
"""


def test_the_harvesters_answers_come_from_its_heap_for_parquet() -> None:
    """Its answers' buffers (aiohttp's pieces, a series answer joined: under 1 MiB) come
    from the heap and are used again, the heap's top kept up to 2 MiB; a bigger buffer is
    still mapped on its own (above), and the writer process's at 128 KiB."""
    assert second_buffer("parquet-sink", "512") == ["True", "True"]
    assert second_buffer("parquet", "512") == ["True", "False"]
    assert second_buffer("parquet", code=KEEPS) == ["True"]
    assert second_buffer("points", code=KEEPS) == ["False"]  # glibc's own: trimmed


def test_a_users_own_threshold_stands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert fix_mmap_threshold() is False
    assert second_buffer("fix", MALLOC_MMAP_THRESHOLD_="65536") == ["False", "False"]
