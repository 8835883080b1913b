"""Where settings come from: environment names that follow the flags, k6's stored token,
runs files from stdin or with run URLs, byte-order marks, `~` in paths."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from harvester.cli import main
from harvester.config import load_settings
from harvester.errors import ConfigError
from harvester.sources import k6_config_paths, load, read_runs_file


@pytest.mark.parametrize(
    ("variable", "value", "setting", "expected"),
    [
        ("HARVESTER_PROJECT", "7, 8", "projects", (7, 8)),
        ("HARVESTER_PROJECTS", "7", "projects", (7,)),
        ("HARVESTER_RUN", "https://app.k6.io/runs/5 6", "runs", (5, 6)),
        ("HARVESTER_METHOD", "p95", "methods", ("p95",)),
        ("HARVESTER_TEST", "9", "tests", (9,)),
        ("HARVESTER_RUNS_IN_FLIGHT", "2", "runs_in_flight", 2),
        ("HARVESTER_VERBOSE", "1", "log_level", "verbose"),
        ("HARVESTER_QUIET", "yes", "log_level", "quiet"),
    ],
)
def test_environment_names_follow_the_flags(
    variable: str, value: str, setting: str, expected: object
) -> None:
    assert getattr(load_settings(environ={variable: value}), setting) == expected


def test_k6_variables_come_before_harvester_token_and_stack_id() -> None:
    """The README's order: --token, K6_CLOUD_TOKEN, HARVESTER_TOKEN, the file."""
    env = {"K6_CLOUD_TOKEN": "k6-tok", "HARVESTER_TOKEN": "h-tok",
           "K6_CLOUD_STACK_ID": "3", "HARVESTER_STACK_ID": "4"}  # fmt: skip
    loaded = load(environ=env)
    assert (
        loaded.settings.token.reveal() == "k6-tok" and loaded.origins["token"] == "K6_CLOUD_TOKEN"
    )
    assert loaded.settings.stack_id == 3 and loaded.origins["stack_id"] == "K6_CLOUD_STACK_ID"
    alone = load(environ={"HARVESTER_TOKEN": "h-tok", "HARVESTER_STACK_ID": "4"})
    assert alone.settings.token.reveal() == "h-tok" and alone.settings.stack_id == 4


def test_a_missing_config_file_names_where_it_was_given(tmp_path: Path) -> None:
    """HARVESTER_CONFIG's file missing is not "check --config": no such flag was given."""
    missing = str(tmp_path / "h.toml")
    with pytest.raises(ConfigError, match=r"does not exist; check HARVESTER_CONFIG$"):
        load(environ={"HARVESTER_CONFIG": missing})
    with pytest.raises(ConfigError, match=r"does not exist; check --config$"):
        load(config_file=missing, environ={"HARVESTER_CONFIG": missing})


def test_an_unknown_harvester_variable_is_a_warning_naming_it(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    loaded = load(environ={"HARVESTER_PROJCT": "1", "HARVESTER_CONFIG": ""})
    assert loaded.warnings == (
        "unknown environment variable HARVESTER_PROJCT ignored (did you mean HARVESTER_PROJECT?)",
    )
    # The common prefix does not count: nothing is close to HARVESTER_X.
    assert load(environ={"HARVESTER_X": "1"}).warnings == (
        "unknown environment variable HARVESTER_X ignored",
    )
    monkeypatch.setenv("HARVESTER_RUNZ", "5")
    assert main(["harvest", "--token", "t"]) == 2  # no runs: the variable was not taken
    err = capfd.readouterr().err.splitlines()  # not a terminal: the log is JSON lines
    warning = json.loads(err[0])
    assert warning["level"] == "warning" and warning["message"] == (
        "warning: unknown environment variable HARVESTER_RUNZ ignored (did you mean HARVESTER_RUN?)"
    )
    assert "no runs to harvest" in err[1]


def write_k6_config(path: Path, token: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"collectors": {"cloud": {"token": token, "host": "x"}}}))
    return path


def test_the_token_k6_cloud_login_stored_is_used_when_no_other_is_given(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    assert k6_config_paths(env)[0] == tmp_path / "k6" / "config.json"
    legacy = write_k6_config(tmp_path / "loadimpact" / "k6" / "config.json", "legacy-tok")
    loaded = load(environ=env)
    assert loaded.settings.token.reveal() == "legacy-tok"
    assert loaded.origins["token"] == str(legacy)
    current = write_k6_config(tmp_path / "k6" / "config.json", "current-tok")
    assert load(environ=env).settings.token.reveal() == "current-tok"  # k6 >= 0.57's place
    assert load(environ={**env, "K6_CLOUD_TOKEN": "env-tok"}).settings.token.reveal() == "env-tok"
    elsewhere = write_k6_config(tmp_path / "k6.json", "own-tok")
    assert load(environ={**env, "K6_CONFIG": str(elsewhere)}).settings.token.reveal() == "own-tok"
    write_k6_config(current, None)  # `k6 cloud login --reset`
    assert not load(environ=env).settings.token
    current.write_text("{not json")
    broken = load(environ=env)
    assert not broken.settings.token
    assert broken.warnings[0].startswith(f"cannot read k6's config {current}")


def test_a_harvest_uses_the_stored_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("K6_CLOUD_TOKEN", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert main(["harvest", "--run", "1"]) == 2
    assert "no API token" in capfd.readouterr().err
    write_k6_config(tmp_path / "k6" / "config.json", "stored")
    settings = load_settings()
    assert settings.token.reveal() == "stored"


def test_runs_file_takes_urls_a_bom_and_stdin(tmp_path: Path) -> None:
    runs = tmp_path / "runs.txt"
    runs.write_bytes(
        b"\xef\xbb\xbf101\n"
        b"https://app.k6.io/runs/102  # copied from the browser\n"
        b"https://acme.grafana.net/a/k6-app/runs/103?tab=thresholds#top\n"
        b"app.k6.io/runs/104/\n"
    )
    assert read_runs_file(str(runs)) == (101, 102, 103, 104)
    assert read_runs_file("-", io.BytesIO(b"5\n6 # six\n")) == (5, 6)
    with pytest.raises(ConfigError, match="stdin:1: '7x' is not a run id"):
        read_runs_file("-", io.BytesIO(b"7x\n"))


def test_runs_file_dash_reads_the_command_s_stdin(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"12\nhttps://x.y/runs/oops\n")))
    args = ["harvest", "--token", "t", "--runs-file", "-", "--base-url", "http://127.0.0.1:9"]
    assert main(args) == 2
    assert "harvester: stdin:2: 'https://x.y/runs/oops' is not a run id" in capfd.readouterr().err


def test_config_with_a_bom_is_read(tmp_path: Path) -> None:
    config = tmp_path / "h.toml"
    config.write_bytes(b"\xef\xbb\xbf[api]\nrate = 2\n")
    assert load_settings(config_file=str(config), environ={}).rate == 2.0


def test_a_tilde_is_expanded_in_every_path(tmp_path: Path) -> None:
    home = str(tmp_path)
    config = tmp_path / "h.toml"
    config.write_text('[harvest]\nout = "~/archive"\nstate = "~/state.sqlite"\n')
    env = {"HOME": home, "HARVESTER_CONFIG": "~/h.toml", "HARVESTER_RUNS_FILE": "~/runs.txt"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", home)  # os.path.expanduser reads the process's HOME
        settings = load_settings(environ=env)
        flag = load_settings({"out": "~/flag-out"}, environ={})
    assert settings.out == f"{home}/archive"
    assert settings.state == f"{home}/state.sqlite"
    assert settings.runs_file == f"{home}/runs.txt"
    assert flag.out == f"{home}/flag-out"


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"tests": ["https://app.k6.io/tests/720001"]}, ("tests", (720001,))),
        ({"projects": ["https://acme.grafana.net/a/k6-app/projects/3458575"]},
         ("projects", (3458575,))),
        ({"runs": ["+12"]}, ("runs", (12,))),
    ],
)  # fmt: skip
def test_web_app_urls_work_for_tests_and_projects_too(
    flags: dict[str, list[str]], expected: tuple[str, tuple[int, ...]]
) -> None:
    name, value = expected
    assert getattr(load_settings(flags, environ={}), name) == value
