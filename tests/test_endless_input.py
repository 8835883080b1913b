"""A runs file or config file that never ends, or is far larger than any such file
(`--runs-file /dev/zero`, a log given by mistake, a generator piped into `--runs-file -`):
it was read whole into memory before its first line was looked at (5.8 GB of RSS within
5 seconds of `--runs-file /dev/zero`). Past 64 MiB it is refused in one line, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from harvester.cli import main
from harvester.errors import ConfigError
from harvester.sources import read_runs_file

ZERO = "/dev/zero"


@pytest.mark.parametrize(
    "args",
    [["--runs-file", ZERO], ["--run", "1", "--config", ZERO]],
    ids=["runs file", "config file"],
)
def test_an_endless_file_is_refused_in_one_line(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["harvest", "--token", "t", "--base-url", "http://127.0.0.1:9", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{ZERO} holds more than 64 MiB" in err


def test_endless_stdin_is_refused_too() -> None:
    with Path(ZERO).open("rb") as endless, pytest.raises(ConfigError, match="^stdin holds more"):
        read_runs_file("-", stdin=endless)


def test_a_long_runs_file_under_the_limit_is_read(tmp_path: Path) -> None:
    runs = tmp_path / "runs.txt"
    runs.write_text("".join(f"{n}\n" for n in range(1, 200_001)))
    assert len(read_runs_file(str(runs))) == 200_000


def test_an_endless_singer_state_is_refused_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["harvest", "--token", "t", "--base-url", "http://127.0.0.1:9", "--run", "1",
            "--format", "singer", "--singer-state", ZERO]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--singer-state {ZERO} holds more than 64 MiB" in err


def test_an_endless_tap_config_is_refused() -> None:
    from harvester.singer_tap import harvest_argv

    with pytest.raises(ConfigError, match=f"^the tap's --config {ZERO} holds more than 64 MiB"):
        harvest_argv(["--config", ZERO])
