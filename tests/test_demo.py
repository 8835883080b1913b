"""scripts/demo (issue 14, point 6): a fresh demo each time, without ever deleting a file
the demo did not create."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.process_helpers import ROOT

SMALL = ["--metrics", "3", "--points", "2"]


def demo(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--out", str(out), *SMALL, *args],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
    )  # fmt: skip


def test_the_demo_refuses_a_directory_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("years of work")
    done = demo(tmp_path, "--runs", "1")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"demo: {tmp_path} is not empty and no demo wrote it; give a new or empty "
        "directory with --out (the demo deletes only files it created)"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["thesis.tex"]
    assert (tmp_path / "thesis.tex").read_text() == "years of work"


def test_a_second_demo_removes_only_the_files_the_first_created(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    assert demo(out, "--runs", "2").returncode == 0
    assert sorted(p.name for p in out.glob("*.ndjson")) == ["100001.ndjson", "100002.ndjson"]
    (out / "notes.txt").write_text("mine")  # the user's, added beside the demo's files
    again = demo(out, "--runs", "1")
    assert again.returncode == 0, again.stderr
    # The first demo's files are gone (100002 is not harvested this time) ...
    assert sorted(p.name for p in out.glob("*.ndjson")) == ["100001.ndjson"]
    # ... the user's file is untouched, and the next demo will not take it for its own.
    assert (out / "notes.txt").read_text() == "mine"
    assert "notes.txt" not in (out / ".harvester-demo").read_text().split()
    assert demo(out, "--runs", "1").returncode == 0
    assert (out / "notes.txt").read_text() == "mine"


def test_harvester_verify_finds_the_demos_archive_intact_its_report_included(
    tmp_path: Path,
) -> None:
    out = tmp_path / "demo"
    assert demo(out, "--runs", "2").returncode == 0
    assert (out / "report.html").is_file()
    checked = subprocess.run(
        [sys.executable, "-m", "harvester", "verify", str(out), "--output", "json"],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert '"orphan"' not in checked.stdout
    (out / "notes.txt").write_text("mine")  # a file the demo did not make is still named
    again = subprocess.run(
        [sys.executable, "-m", "harvester", "verify", str(out), "--output", "json"],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
    )  # fmt: skip
    assert again.returncode == 1 and '"file":"notes.txt","status":"orphan"' in again.stdout


def test_every_file_a_demo_creates_is_claimed_before_its_harvest(tmp_path: Path) -> None:
    """A demo killed half-way is cleared by the next one only if the marker written before
    the harvest names what it creates: its manifests too, not only the run files."""
    import importlib.util

    from harvester.simulator.generated import generate_cloud

    spec = importlib.util.spec_from_file_location("demo_script", ROOT / "scripts" / "demo.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "demo"
    assert demo(out, "--runs", "2").returncode == 0
    claimed = script.files_to_create(generate_cloud(runs=2, metrics=3, points=2, tests=2))
    created = {path.name for path in out.iterdir()} - {script.MARKER}
    assert created - claimed == set()
