"""Something that is no file where a run's file goes in `--out DIR` (a directory named
`100001.ndjson`, made by hand or by a tool): the job ended at once as "cannot write to
DIR: Is a directory", exit 1, naming neither the path nor what to do (it was being read,
to seal the run). Now it is one line naming it, exit 2, before any request; and the job
does not take it for the run archived."""

from __future__ import annotations

from pathlib import Path

import pytest

from harvester.cli import main
from harvester.simulator.server import Simulator
from tests.harvest_helpers import cli_args


def test_a_directory_where_a_runs_file_goes_is_one_line_and_exit_2(
    sim: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "100001.ndjson").mkdir()
    args = cli_args(sim, tmp_path, "--run", "100001", "--run", "100002")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err == (
        f"harvester: {tmp_path / '100001.ndjson'} is a directory, not run 100001's file, "
        "where that file goes: move it out of the archive, then run again\n"
    )
    assert sim.requests_for("metrics") == []  # before any run's request
