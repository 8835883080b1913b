"""`objectstore.early`: a harvest to `--out s3://` makes botocore ready on a thread while it
opens its state, and its store uses what the thread made; a thread that failed changes
nothing (the store makes it again, and says what was wrong in one line)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from harvester.cli import main
from harvester.objectstore import early
from harvester.simulator.server import Simulator
from tests.harvest_helpers import canonical, cli_args, parse_lines, read_dir
from tests.s3_helpers import RUNS, S3Server, s3_args

pytest.importorskip("aiobotocore")
pytestmark = pytest.mark.timeout(120, method="thread")


def loads_on(monkeypatch: pytest.MonkeyPatch, fail_first: bool = False) -> list[str]:
    """The threads `early.load` runs on, in order; `fail_first`: its first call fails."""
    threads: list[str] = []
    load = early.load

    def recorded() -> early.Botocore:
        threads.append(threading.current_thread().name)
        if fail_first and len(threads) == 1:
            raise RuntimeError("the thread's load failed")
        return load()

    monkeypatch.setattr(early, "load", recorded)
    return threads


def test_the_store_uses_the_session_made_on_the_thread(
    sim: Simulator, s3: S3Server, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads = loads_on(monkeypatch)
    assert main(s3_args(sim, s3, f"s3://{bucket}/e/", tmp_path / "s.sqlite", *RUNS)) == 0
    assert threads == ["botocore-early"]  # made once, not again by the store
    assert main(cli_args(sim, tmp_path / "dir", *RUNS)) == 0
    expected = read_dir(tmp_path / "dir")
    stored = s3.objects(bucket, "e/")
    for run_id in (100001, 100002):
        got = parse_lines(stored[f"e/{run_id}.ndjson"])
        assert canonical(got) == canonical(expected[run_id])


def test_a_thread_that_failed_is_done_again_by_the_store(
    sim: Simulator, s3: S3Server, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads = loads_on(monkeypatch, fail_first=True)
    assert main(s3_args(sim, s3, f"s3://{bucket}/f/", tmp_path / "s.sqlite", *RUNS)) == 0
    assert threads == ["botocore-early", "MainThread"]
    assert {"f/100001.ndjson", "f/100002.ndjson"} <= set(s3.sizes(bucket, "f/"))


def test_without_the_s3_extra_the_harvest_says_so_in_one_line(
    sim: Simulator,
    s3: S3Server,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "aiobotocore.session", None)  # import fails, twice
    args = s3_args(sim, s3, f"s3://{bucket}/x/", tmp_path / "s.sqlite", *RUNS)
    assert main(args) == 2
    err = capfd.readouterr().err
    assert err.count("pip install 'k6-harvester[s3]'") == 1 and "Traceback" not in err
    assert not early._EARLY  # the thread's work was taken (and dropped)


def test_a_second_start_while_one_is_pending_starts_no_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads = loads_on(monkeypatch)
    early.start_early()
    early.start_early()
    first = early.botocore()
    assert early.botocore() is not first  # a session is used once
    assert sorted(threads) == ["MainThread", "botocore-early"]
