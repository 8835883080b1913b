"""What a user meets first: --help that describes the tool, hints for mistyped words,
`harvester config init/show`."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from harvester.cli import main

ROOT = Path(__file__).resolve().parents[1]


def help_of(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize(
    "command",
    [[], ["harvest"], ["runs"], ["projects"], ["worker"], ["status"], ["verify"], ["report"],
     ["config"], ["simulate"]],
)  # fmt: skip
def test_every_help_describes_the_tool_with_examples_and_exit_statuses(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    text = help_of(command, capsys)
    assert "examples:\n  harvester " in text
    assert "exit status:\n  0 " in text and "\n  2 " in text
    assert "The command line: parse" not in text  # not the module's docstring


def test_every_simulate_flag_says_what_it_does(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a bare "(default: 1.0)", nor "probability of a unlisted"."""
    monkeypatch.setenv("COLUMNS", "100")  # argparse's width: the lines below as shown
    text = help_of(["simulate"], capsys)
    assert "\n                        (default:" not in text
    assert "a unlisted" not in text and "a latin1" not in text
    assert "--rate-window SECONDS\n                        the window --rate-limit" in text


def test_runs_verbose_promises_no_line_per_run_started(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`runs` lists runs and starts none: --verbose adds the runs left for later."""
    text = " ".join(help_of(["runs"], capsys).split())
    assert "--verbose also a line per run left for later" in text
    assert "started" not in text


def test_flags_have_help_consistent_placeholders_and_say_when_repeatable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = " ".join(help_of(["harvest"], capsys).split())
    for flag in ("--run ID", "--project ID", "--test ID", "--runs-file FILE", "--state FILE",
                 "--config FILE", "--out DIR", "--method METHOD"):  # fmt: skip
        assert flag in text, flag
    assert "--quiet only failures and the summary" in text
    assert "--verbose also a line per run started" in text
    options = text[text.index("what and where:") :]  # past the usage line
    for repeatable in ("--run ID", "--method METHOD", "--project ID", "--test ID"):
        after = options[options.index(repeatable) :]
        assert "repeatable" in after[: after.index(" --", 3)], repeatable


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["harvets", "--run", "1"], "invalid choice 'harvets' (did you mean harvest?)"),
        (["harvest", "--runs-fil", "x"],
         "arguments: --runs-fil x (did you mean --runs-file?) (see harvester harvest --help)"),
        (["config", "show", "--rtae", "2"],
         "--rtae 2 (did you mean --rate?) (see harvester config show --help)"),
        (["worker", "--project", "1", "--intervall", "5m"],
         "(did you mean --interval?) (see harvester worker --help)"),
        (["harvest", "--run", "1", "--progress", "auot"], "'auot' (did you mean auto?)"),
        (["config", "shwo"], "invalid choice 'shwo' (did you mean show?)"),
        (["config"], "the following arguments are required: ACTION"),
    ],
)  # fmt: skip
def test_a_mistyped_word_gets_the_closest_one_suggested(
    args: list[str], hint: str, capfd: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    err = capfd.readouterr().err
    assert hint in err and err.count("\n") == 1, err


def test_the_shipped_example_is_the_documented_one() -> None:
    shipped = ROOT / "harvester" / "example.toml"
    documented = ROOT / "config" / "harvester.example.toml"
    assert shipped.read_bytes() == documented.read_bytes(), (
        "copy config/harvester.example.toml to harvester/example.toml (the package data)"
    )


def test_config_init_writes_the_example_and_never_over_a_file(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "h.toml"
    assert main(["config", "init", str(target)]) == 0
    assert target.read_bytes() == (ROOT / "config" / "harvester.example.toml").read_bytes()
    assert f"--config {target}" in capfd.readouterr().err
    assert main(["config", "init", str(target)]) == 2
    assert f"{target} exists" in capfd.readouterr().err
    assert main(["config", "init", "-"]) == 0
    assert tomllib.loads(capfd.readouterr().out)["api"]["rate"] == 5.0
    assert main(["config", "init", str(tmp_path)]) == 2  # a directory is not "remove it"
    err = capfd.readouterr().err
    suggested = tmp_path / "harvester.toml"
    assert err == f"harvester: {tmp_path} is a directory; give a file such as {suggested}\n"


def test_config_show_prints_each_setting_with_its_origin_and_masks_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "h.toml"
    config.write_text('[api]\nrate = 3\nconcurrency = 2\n[harvest]\nout = "~/archive"\n')
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("K6_CLOUD_TOKEN", "tok-SECRET-1")
    monkeypatch.setenv("HARVESTER_CONCURRENCY", "5")
    monkeypatch.setenv("HARVESTER_PROJECT", "42")
    assert main(["config", "show", "--config", str(config), "--rate", "2"]) == 0
    out = capfd.readouterr().out
    assert "tok-SECRET" not in out
    doc = tomllib.loads(out)
    assert doc["api"]["rate"] == 2.0 and doc["api"]["concurrency"] == 5
    assert doc["harvest"]["out"] == str(tmp_path / "archive")  # ~ expanded
    assert doc["discovery"]["projects"] == [42]
    lines = dict(line.split(" = ", 1) for line in out.splitlines() if " = " in line)
    assert lines["rate"] == "2.0  # from --rate"
    assert lines["concurrency"] == "5  # from HARVESTER_CONCURRENCY"
    assert lines["out"].endswith(f"# from {config} [harvest]")
    assert lines["token"] == '"***"  # from K6_CLOUD_TOKEN'
    assert lines["max_attempts"] == "6  # default"
    assert lines["projects"] == "[42]  # from HARVESTER_PROJECT"
