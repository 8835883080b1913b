"""Where settings come from: flags, the environment, a TOML file, k6's stored token.

`load` merges them (flags > environment > file > the token `k6 cloud login` stored >
defaults) and remembers where each value came from, for `harvester config show` and for
error messages that name the flag, the variable, or the file and key. `os.environ` is
read only here. Also the runs file (`--runs-file`), which is input of the same kind.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from . import values
from .config import FIELDS, SECTIONS, Secret, Settings, parse_value
from .errors import ConfigError

TOKEN_ENV = "K6_CLOUD_TOKEN"
STACK_ENV = "K6_CLOUD_STACK_ID"
#: Flags whose name differs from the setting they fill (repeatable flags are singular).
FLAG_NAMES = {
    "runs": "run",
    "methods": "method",
    "projects": "project",
    "tests": "test",
    "organizations": "organization",
    "singer_streams": "singer-stream",
}
ENV_PREFIX = "HARVESTER_"
CONFIG_ENV = "HARVESTER_CONFIG"


@dataclass(frozen=True)
class Loaded:
    """The settings, where each came from (a flag, a variable, a file, or `default`),
    and warnings for the user (unknown variables, an unreadable k6 config)."""

    settings: Settings
    origins: Mapping[str, str]
    warnings: tuple[str, ...] = ()
    config_file: str | None = None


def flag_name(name: str) -> str:
    return "--" + FLAG_NAMES.get(name, name.replace("_", "-"))


def env_names() -> dict[str, str]:
    """Variable -> setting: HARVESTER_ and the flag's name (HARVESTER_PROJECT, like
    --project) or the file's key (HARVESTER_PROJECTS), upper case."""
    names = {ENV_PREFIX + name.upper(): name for name in FIELDS}
    names.update(
        {ENV_PREFIX + flag.upper().replace("-", "_"): name for name, flag in FLAG_NAMES.items()}
    )
    return names


#: Switches whose variable sets a setting to a value: HARVESTER_VERBOSE=1 like --verbose.
_ENV_SWITCHES = {"HARVESTER_QUIET": ("log_level", "quiet"),
                 "HARVESTER_VERBOSE": ("log_level", "verbose")}  # fmt: skip


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A TOML config file as flat settings, rejecting unknown sections and keys."""
    return {name: value for name, (value, _) in _file_layer(str(path)).items()}


#: The most of a runs file or a config file that is read: one past it is no such file.
#: (`--runs-file /dev/zero`, a log given by mistake, was read whole: 5.8 GB in 5 s.)
TEXT_LIMIT = 64 << 20


def read_limited(source: BinaryIO | str, name: str) -> bytes:
    """The bytes of a file (a path) or a stream, refused past `TEXT_LIMIT` (OSError as
    the caller's to say)."""
    if isinstance(source, str):
        with Path(source).open("rb") as fh:
            return read_limited(fh, name)
    data = source.read(TEXT_LIMIT + 1)
    if len(data) > TEXT_LIMIT:
        raise ConfigError(
            f"{name} holds more than {TEXT_LIMIT >> 20} MiB, more than any such file; "
            "is it the right one?"
        )
    return data


def _file_layer(path: str, given_by: str = "--config") -> dict[str, tuple[Any, str]]:
    try:
        data = read_limited(path, f"config file {path}")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; check {given_by}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        doc = tomllib.loads(decode_text(data, f"config file {path}"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    layer: dict[str, tuple[Any, str]] = {}
    for section, table in doc.items():
        if section not in SECTIONS or not isinstance(table, dict):
            known = ", ".join(sorted(SECTIONS))
            raise ConfigError(f"{path}: unknown section [{section}]; sections are {known}")
        for key, value in table.items():
            spec = FIELDS.get(key)
            if spec is None or spec.metadata["section"] != section:
                hint = values.did_you_mean(
                    key, [k for k, f in FIELDS.items() if f.metadata["section"] == section]
                )
                raise ConfigError(f"{path}: unknown key {key!r} in [{section}]{hint}")
            origin = f"{path}: [{section}] {key} ="
            layer[key] = (parse_value(key, value, origin), f"{path} [{section}]")
    return layer


def _env_layer(env: Mapping[str, str]) -> tuple[dict[str, tuple[Any, str]], list[str]]:
    layer: dict[str, tuple[Any, str]] = {}
    known = env_names()
    warnings = []
    for var in sorted(v for v in env if v.startswith(ENV_PREFIX)):
        value = env[var]
        if var in _ENV_SWITCHES:
            name, switched = _ENV_SWITCHES[var]
            if parse_value("details", value, f"{var} ="):  # any boolean's parser
                layer[name] = (switched, var)
        elif var in known:
            if value != "":
                layer[known[var]] = (parse_value(known[var], value, f"{var} ="), var)
        elif var != CONFIG_ENV:
            names = [*known, *_ENV_SWITCHES, CONFIG_ENV]
            hint = values.did_you_mean(var, names, prefix=ENV_PREFIX)
            warnings.append(f"unknown environment variable {var} ignored{hint}")
    # k6's own variables come before HARVESTER_TOKEN and HARVESTER_STACK_ID (the README's
    # order): tap-harvester hands its configured token over as K6_CLOUD_TOKEN.
    if env.get(TOKEN_ENV):
        layer["token"] = (parse_value("token", env[TOKEN_ENV], f"{TOKEN_ENV} ="), TOKEN_ENV)
    if env.get(STACK_ENV):
        layer["stack_id"] = (parse_value("stack_id", env[STACK_ENV], f"{STACK_ENV} ="), STACK_ENV)
    return layer, warnings


def read_environment(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The settings the environment gives (see `env_names`)."""
    layer, _ = _env_layer(os.environ if environ is None else environ)
    return {name: value for name, (value, _) in layer.items()}


def _utf16(head: bytes) -> bool:
    """UTF-16 by its byte-order mark, or without one by its zeros: every other byte of
    ASCII text. (Any NUL was taken for UTF-16, so a gzip or SQLite file given as a runs
    file was told to go through iconv.)"""
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return True
    return len(head) >= 2 and (not any(head[1::2]) or not any(head[0::2]))


def decode_text(data: bytes, name: str) -> str:
    """UTF-8 text, a byte-order mark allowed (Notepad writes one); UTF-16 (PowerShell's
    `>` writes it) and other encodings are refused with what to do."""
    if _utf16(data[:4096]):
        raise ConfigError(
            f"{name} is UTF-16 text; save it as UTF-8 (e.g. iconv -f UTF-16 -t UTF-8)"
        )
    if (nul := data.find(b"\x00")) >= 0:  # no text holds one: a gzip file, a database...
        raise ConfigError(f"{name} is not text (a NUL byte at offset {nul}); give a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{name} is not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from None


def read_runs_file(path: str, stdin: BinaryIO | None = None) -> tuple[int, ...]:
    """One run id (or run URL) a line; blank lines and `#` comments are skipped.
    `-` reads standard input."""
    name = "stdin" if path == "-" else f"runs file {path}"
    if path == "-" and stdin is None and sys.stdin is None:  # started with `<&-`
        raise ConfigError("--runs-file - reads stdin, which is closed; pipe the run ids in")
    try:
        data = read_limited((stdin or sys.stdin.buffer) if path == "-" else path, name)
    except OSError as exc:
        raise ConfigError(f"cannot read {name}: {exc.strerror}") from None
    parse = values.resource_id("runs")
    ids: list[int] = []
    for number, line in enumerate(decode_text(data, name).splitlines(), 1):
        entry = _COMMENT.split(line, maxsplit=1)[0].strip()
        if entry:
            try:
                ids.append(parse(entry))
            except ValueError as exc:
                where = "stdin" if path == "-" else path
                raise ConfigError(f"{where}:{number}: {entry!r} {exc}") from None
    return tuple(ids)


#: A comment starts a line or follows a space (a `#` inside a URL is its fragment).
_COMMENT = re.compile(r"(?:^|\s)#")


def load(
    flags: Mapping[str, Any] | None = None,
    *,
    config_file: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Loaded:
    """Merge the layers (flags > environment > file > k6's stored token > defaults) and
    validate once, remembering where each value came from."""
    env = os.environ if environ is None else environ
    given_by = "--config" if config_file else CONFIG_ENV
    config_file = config_file or env.get(CONFIG_ENV) or None
    if config_file:
        config_file = os.path.expanduser(config_file)
    merged: dict[str, tuple[Any, str]] = {}
    if config_file:
        merged.update(_file_layer(config_file, given_by))
    env_layer, warnings = _env_layer(env)
    merged.update(env_layer)
    for name, value in (flags or {}).items():
        if value is not None and value != () and value != []:
            flag = f"--{value}" if name == "log_level" else flag_name(name)
            merged[name] = (parse_value(name, value, flag), flag)
    if "token" not in merged:
        stored, problem = k6_stored_token(env)
        if stored is not None:
            merged["token"] = stored
        warnings += [problem] if problem else []
    settings = Settings(**{name: value for name, (value, _) in merged.items()})
    origins = {name: merged[name][1] if name in merged else "default" for name in FIELDS}
    return Loaded(settings, origins, tuple(warnings), config_file)


# --- the token `k6 cloud login` stored ------------------------------------------------


def k6_config_paths(env: Mapping[str, str]) -> list[Path]:
    """Where k6 keeps its config: $K6_CONFIG, else the user config directory's
    k6/config.json (k6 >= 0.57), else loadimpact/k6/config.json (older k6)."""
    if env.get("K6_CONFIG"):
        return [Path(env["K6_CONFIG"]).expanduser()]
    base = _user_config_dir(env)
    return [base / "k6" / "config.json", base / "loadimpact" / "k6" / "config.json"]


def _user_config_dir(env: Mapping[str, str]) -> Path:
    """Go's os.UserConfigDir, which k6 uses."""
    if sys.platform == "win32":  # pragma: no cover
        return Path(env.get("APPDATA", "."))
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    if sys.platform == "darwin":  # pragma: no cover
        return home / "Library" / "Application Support"
    return Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else home / ".config"


def k6_stored_token(env: Mapping[str, str]) -> tuple[tuple[Secret, str] | None, str | None]:
    """(the token and its file, None), or (None, a warning when a k6 config exists but
    cannot be read), from k6's `collectors.cloud.token`."""
    path = next((p for p in k6_config_paths(env) if p.is_file()), None)
    if path is None:
        return None, None
    try:
        token = json.loads(path.read_bytes())["collectors"]["cloud"]["token"]
    except (KeyError, TypeError):
        return None, None  # k6 config without a stored token (`k6 cloud login -r`)
    except (OSError, ValueError) as exc:
        return None, f"cannot read k6's config {path} for a stored token: {exc}"
    if not isinstance(token, str) or not token.strip():
        return None, None
    return (parse_value("token", token, f"{path}: collectors.cloud.token ="), str(path)), None


# --- `harvester config show` -----------------------------------------------------------


def render(loaded: Loaded) -> str:
    """The settings in effect as a TOML file, each key with where it came from; the token
    masked. Unset optional settings are shown commented out."""
    lines = ["# harvester settings in effect: `# from` says which flag, variable or file set a"]
    lines.append(f"# value (config file: {loaded.config_file or 'none'})")
    for section in dict.fromkeys(spec.metadata["section"] for spec in FIELDS.values()):
        lines += ["", f"[{section}]"]
        for name, spec in FIELDS.items():
            if spec.metadata["section"] == section:
                lines.append(
                    _render_line(name, getattr(loaded.settings, name), loaded.origins[name])
                )
    return "\n".join(lines) + "\n"


def _render_line(name: str, value: Any, origin: str) -> str:
    where = "default" if origin == "default" else f"from {origin}"
    if isinstance(value, Secret):
        return f'{name} = "***"  # {where}' if value else f"# {name} = (not set)"
    if value is None:
        return f"# {name} = (not set)"
    return f"{name} = {_toml(value)}  # {where}"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string
    return repr(value)
