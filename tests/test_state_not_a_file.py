"""`--state` naming something that is no regular file: a FIFO (`mkfifo`, a `<(...)`
given by mistake) hung the job for ever in its first look at the file, deaf to SIGTERM;
a directory was "cannot open state file (unable to open database file); check its
permissions". Each is one line, exit 2, before any request."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harvester.cli import main

pytestmark = pytest.mark.timeout(60, method="thread")


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_state_that_is_no_regular_file_is_one_line_and_exit_2(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    if kind == "fifo":
        os.mkfifo(state)
    else:
        state.mkdir()
    args = ["harvest", "--run", "1", "--token", "t", "--base-url", "http://127.0.0.1:9",
            "--out", str(tmp_path / "out"), "--state", str(state)]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    what = "a FIFO" if kind == "fifo" else "a directory"
    assert f"{state} is {what}, not a state file: give --state a file's path" in err
    assert [line for line in err.splitlines() if '"level":"error"' in line] == [
        line for line in err.splitlines() if what in line
    ]
    assert err.count('"level":"error"') == 1
