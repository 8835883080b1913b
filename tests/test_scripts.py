"""The scripts a user runs first answer --help (a help string with a bare % once crashed
`scripts/bench --help` with a traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script", ["bench.py", "demo.py"])
def test_each_script_answers_help(script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
    assert "Traceback" not in done.stderr


def test_the_benches_share_one_median_and_one_verdict(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """bench_s3 and bench_v6 take their medians and print their targets' verdicts with one
    helper of bench_run (they had a copy each)."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import bench_run

    def sample(wall: float) -> bench_run.Sample:
        return bench_run.Sample(wall, 1.0, 90.0, 3, 4, 5, 6, 1.0, 0.1, 0.1)

    taken = [sample(w) for w in (3.0, 1.0, 2.0)]
    assert bench_run.medians({"s3": taken})["s3"]["wall"] == 2.0
    checks = [("wall", 1.3, 1.3, "1.30x"), ("rss", 151.0, 150.0, "151 MB")]
    verdicts = bench_run.verdicts("small s3", checks)
    assert [(v["target"], v["ok"]) for v in verdicts] == [("small s3: wall", True),
                                                         ("small s3: rss", False)]  # fmt: skip
    assert capsys.readouterr().out.splitlines() == [
        "  [ok] small s3: wall: 1.30x",
        "  [MISSED] small s3: rss: 151 MB",
    ]
