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
first = bytearray(8 << 20)
del first
second = bytearray(8 << 20)
address = ctypes.addressof((ctypes.c_char * 1).from_buffer(second))
[heap] = [line.split()[0] for line in open("/proc/self/maps") if line.rstrip().endswith("[heap]")]
low, high = (int(end, 16) for end in heap.split("-"))
print(fixed, low <= address < high)
"""


def second_buffer(how: str, **environ: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | environ
    done = subprocess.run(
        [sys.executable, "-c", CODE, how], cwd=ROOT, env=env, capture_output=True, text=True
    )
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


def test_a_users_own_threshold_stands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert fix_mmap_threshold() is False
    assert second_buffer("fix", MALLOC_MMAP_THRESHOLD_="65536") == ["False", "False"]
