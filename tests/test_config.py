"""Settings: layers and precedence, validation at the edge, and the token kept secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from harvester.config import Secret, Settings, load_settings, with_runs
from harvester.errors import ConfigError
from harvester.sources import read_config_file, read_runs_file

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_config_file_loads(path: Path) -> None:
    settings = load_settings(config_file=str(path), environ={})
    assert isinstance(settings, Settings)


def test_precedence_is_flags_then_environment_then_file_then_defaults(tmp_path: Path) -> None:
    config = tmp_path / "h.toml"
    config.write_text("[api]\nrate = 2.0\nconcurrency = 3\nread_timeout = 7\n")
    env = {"HARVESTER_CONCURRENCY": "4", "HARVESTER_READ_TIMEOUT": "9"}
    settings = load_settings({"read_timeout": "11"}, config_file=str(config), environ=env)
    assert settings.rate == 2.0  # file over default
    assert settings.concurrency == 4  # environment over file
    assert settings.read_timeout == 11.0  # flag over environment
    assert settings.max_url_length == 8000  # default


def test_token_comes_from_k6_cloud_token_and_never_shows_in_repr() -> None:
    settings = load_settings(environ={"K6_CLOUD_TOKEN": "s3cr3t-value"})
    assert settings.token.reveal() == "s3cr3t-value"
    assert "s3cr3t" not in repr(settings)
    assert "s3cr3t" not in str(settings.token)
    assert Secret("a") == Secret("a") and Secret("a") != Secret("b")


def test_unknown_key_names_the_file_and_the_key(tmp_path: Path) -> None:
    config = tmp_path / "h.toml"
    config.write_text("[api]\nrat = 2\n")
    with pytest.raises(ConfigError, match=r"unknown key 'rat' in \[api\]"):
        read_config_file(config)


def test_unknown_section_is_rejected(tmp_path: Path) -> None:
    config = tmp_path / "h.toml"
    config.write_text("[apis]\nrate = 2\n")
    with pytest.raises(ConfigError, match=r"unknown section \[apis\]"):
        read_config_file(config)


def test_broken_toml_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    config = tmp_path / "h.toml"
    config.write_text("[api\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        read_config_file(config)
    with pytest.raises(ConfigError, match="does not exist"):
        read_config_file(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"runs": ["abc"]}, "--run 'abc' is not a run id"),
        ({"rate": "0"}, "--rate '0' must be at least 0.01"),
        ({"concurrency": "1.5"}, "--concurrency '1.5' is not a whole number"),
        ({"max_url_length": "50"}, "--max-url-length '50' must be at least 200"),
        ({"base_url": "ftp://x"}, "is not an http"),
        ({"base_url": "http://api.example.com"}, "refusing to send the token in clear text"),
        ({"progress": "maybe"}, "--progress 'maybe' must be one of auto, on, off"),
        ({"runs": ["-3"]}, "--run '-3' is not a run id"),
        ({"retry_budget": "600"}, "retry_budget .600s. is shorter than max_retry_after .900s."),
    ],
)
def test_bad_values_get_a_message_naming_them(flags: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_settings(flags, environ={})


def test_http_is_allowed_to_loopback_or_with_allow_insecure() -> None:
    assert load_settings({"base_url": "http://127.0.0.1:1"}, environ={}).base_url
    assert load_settings({"base_url": "http://[::1]:1"}, environ={}).base_url
    insecure = load_settings({"base_url": "http://h.example", "allow_insecure": True}, environ={})
    assert insecure.allow_insecure


def test_environment_values_are_coerced_and_checked() -> None:
    settings = load_settings(environ={"HARVESTER_DETAILS": "yes", "HARVESTER_METHODS": "max,p95"})
    assert settings.details is True
    assert settings.methods == ("max", "p95")
    with pytest.raises(ConfigError, match="HARVESTER_DETAILS"):
        load_settings(environ={"HARVESTER_DETAILS": "perhaps"})


def test_runs_file_reads_ids_and_names_a_bad_line(tmp_path: Path) -> None:
    good = tmp_path / "runs.txt"
    good.write_text("# nightly\n101\n\n102  # second\n101\n")
    merged = with_runs(load_settings({"runs": ["100"]}, environ={}), read_runs_file(str(good)))
    assert merged.runs == (100, 101, 102)
    bad = tmp_path / "bad.txt"
    bad.write_text("101\nabc\n")
    with pytest.raises(ConfigError, match=r"bad.txt:2: 'abc' is not a run id"):
        read_runs_file(str(bad))
    with pytest.raises(ConfigError, match="cannot read runs file"):
        read_runs_file(str(tmp_path / "missing.txt"))


def test_the_example_config_documents_every_setting() -> None:
    text = (ROOT / "config" / "harvester.example.toml").read_text()
    for name, spec in Settings.__dataclass_fields__.items():
        assert f"[{spec.metadata['section']}]" in text
        # Each setting appears as a key line, set or commented out, with a comment above it.
        assert f"\n{name} = " in text or f"\n# {name} = " in text, name


def test_the_example_config_states_the_compression_defaults_in_effect() -> None:
    from harvester.compression import DEFAULT_LEVEL

    text = (ROOT / "config" / "harvester.example.toml").read_text()
    gzip, zstd = DEFAULT_LEVEL["gzip"], DEFAULT_LEVEL["zstd"]
    assert f"# gzip 1-9 (default {gzip}), zstd 1-22 (default {zstd});" in text


def test_a_token_keeps_no_surrounding_whitespace_and_refuses_inner_garbage() -> None:
    settings = load_settings(environ={"K6_CLOUD_TOKEN": "abc123\n"})
    assert settings.token.reveal() == "abc123"
    for bad in ("abc 123", "abc\n123", "abc\x00"):
        with pytest.raises(ConfigError, match="token contains spaces or control characters") as err:
            load_settings({"token": bad}, environ={})
        assert bad.strip() not in str(err.value)


def test_a_bad_value_in_the_file_names_the_file_section_and_key(tmp_path: Path) -> None:
    config = tmp_path / "h.toml"
    config.write_text('[api]\nrate = "fast"\n')
    with pytest.raises(ConfigError, match=r"h.toml: \[api\] rate = 'fast' is not a number"):
        read_config_file(config)


@pytest.mark.parametrize("key", ["out", "state", "runs_file", "singer_state"])
def test_a_path_holding_a_nul_is_one_line_naming_it(tmp_path: Path, key: str) -> None:
    """TOML can say "\\u0000", no path can hold it: the OS's refusal (ValueError:
    embedded null byte) was an internal error once the job opened it."""
    config = tmp_path / "h.toml"
    config.write_text(f'[harvest]\n{key} = "a\\u0000b"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(config_file=str(config), environ={})
    assert str(err.value) == (
        f"{config}: [harvest] {key} = 'a\\x00b' holds a NUL character, which no path can"
    )
