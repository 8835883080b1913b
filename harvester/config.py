"""Settings: one immutable object, built from flags > environment > TOML file > defaults.

Everything the harvester can be told lives in `Settings`; it is validated here, at the
edge, so the rest of the code can trust it. `os.environ` is read only in this module.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError
from .methods import check_method

TOKEN_ENV = "K6_CLOUD_TOKEN"
#: Flags whose name differs from the setting they fill (repeatable flags are singular).
FLAG_NAMES = {"runs": "run", "methods": "method", "projects": "project", "tests": "test"}
ENV_PREFIX = "HARVESTER_"


class Secret:
    """A value that never shows itself in repr(), str(), logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _section(name: str, default: Any, *, repr_: bool = True) -> Any:
    return field(default=default, metadata={"section": name}, repr=repr_)


@dataclass(frozen=True)
class Settings:
    """Every setting, with its default. The TOML file groups them in the sections named."""

    # [api]
    base_url: str = _section("api", "https://api.k6.io")
    token: Secret = _section("api", Secret(""), repr_=False)
    rate: float = _section("api", 5.0)
    rate_recovery: float = _section("api", 5.0)
    concurrency: int = _section("api", 8)
    max_url_length: int = _section("api", 8000)
    connect_timeout: float = _section("api", 10.0)
    read_timeout: float = _section("api", 60.0)
    allow_insecure: bool = _section("api", False)
    # [retry]
    max_attempts: int = _section("retry", 6)
    retry_budget: float = _section("retry", 1200.0)
    backoff_base: float = _section("retry", 0.5)
    backoff_cap: float = _section("retry", 30.0)
    max_retry_after: float = _section("retry", 900.0)
    # [harvest]
    runs: tuple[int, ...] = _section("harvest", ())
    runs_file: str | None = _section("harvest", None)
    out: str = _section("harvest", "-")
    state: str | None = _section("harvest", None)
    methods: tuple[str, ...] = _section("harvest", ())
    details: bool = _section("harvest", False)
    run_record: bool = _section("harvest", False)
    runs_in_flight: int = _section("harvest", 4)
    channel_size: int = _section("harvest", 16)
    #: Mode of the archive files: octal ("0600", "0640") or "umask" to honour the umask.
    file_mode: str = _section("harvest", "0600")
    force: bool = _section("harvest", False)
    export_csv: bool = _section("harvest", False)
    export_timeout: float = _section("harvest", 600.0)
    # [discovery]
    projects: tuple[int, ...] = _section("discovery", ())
    tests: tuple[int, ...] = _section("discovery", ())
    since: str | None = _section("discovery", None)
    until: str | None = _section("discovery", None)
    page_size: int = _section("discovery", 50)
    # [worker]
    interval: str = _section("worker", "5m")
    listen_host: str = _section("worker", "127.0.0.1")
    listen_port: int = _section("worker", 9464)
    # [output]
    progress: str = _section("output", "auto")
    log_level: str = _section("output", "info")

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def to_stdout(self) -> bool:
        return self.out == "-"

    @property
    def file_mode_bits(self) -> int | None:
        """The archive files' mode, or None to leave it to the umask."""
        return None if self.file_mode == "umask" else int(self.file_mode, 8)


_FIELDS = {f.name: f for f in fields(Settings)}
_SECTIONS = {f.metadata["section"] for f in fields(Settings)}


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{name} must be greater than 0 (got {value})")


def _validate(s: Settings) -> None:
    for name in (
        "rate",
        "rate_recovery",
        "connect_timeout",
        "read_timeout",
        "retry_budget",
        "max_retry_after",
        "export_timeout",
    ):
        _positive(name, getattr(s, name))
    for name in ("concurrency", "runs_in_flight", "max_attempts", "channel_size", "page_size"):
        _positive(name, getattr(s, name))
    if s.retry_budget < s.max_retry_after:
        raise ConfigError(
            f"retry_budget ({s.retry_budget:g}s) is shorter than max_retry_after "
            f"({s.max_retry_after:g}s): a run could not wait as long as the server may ask; "
            "raise --retry-budget or lower --max-retry-after"
        )
    if s.max_url_length < 200:
        raise ConfigError(f"max_url_length must be at least 200 bytes (got {s.max_url_length})")
    if s.backoff_base < 0 or s.backoff_cap < s.backoff_base:
        raise ConfigError("backoff_base must be >= 0 and backoff_cap >= backoff_base")
    if s.progress not in ("auto", "on", "off"):
        raise ConfigError(f"progress must be auto, on or off (got {s.progress!r})")
    if s.log_level not in ("quiet", "info", "verbose"):
        raise ConfigError(f"log_level must be quiet, info or verbose (got {s.log_level!r})")
    for method in s.methods:
        check_method(method)
    for run_id in s.runs:
        if run_id <= 0:
            raise ConfigError(f"run ids are positive integers (got {run_id})")
    _validate_base_url(s.base_url, s.allow_insecure)
    if s.export_csv and s.to_stdout:
        raise ConfigError(
            "--export-csv writes <test_run_id>.csv files beside the NDJSON: give --out DIR"
        )
    _validate_file_mode(s.file_mode)
    if any(not ch.isprintable() or ch.isspace() for ch in s.token.reveal()):
        raise ConfigError(
            "the API token contains spaces or control characters; check K6_CLOUD_TOKEN "
            "(or --token) for a stray quote, space or line break"
        )


def _validate_file_mode(mode: str) -> None:
    if mode != "umask" and not re.fullmatch(r"0?[0-7]{3}", mode):
        raise ConfigError(
            f"file_mode must be an octal mode such as 0600 or 0640, or umask (got {mode!r})"
        )


def _validate_base_url(url: str, allow_insecure: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"base URL {url!r} is not an http(s) URL; use e.g. https://api.k6.io")
    if parts.scheme == "http" and not allow_insecure and not is_loopback(parts.hostname):
        raise ConfigError(
            f"refusing to send the token in clear text to {parts.hostname}: use https, "
            "or pass --allow-insecure if you really mean it"
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# --- coercion -------------------------------------------------------------------------


def _coerce(name: str, raw: Any, origin: str) -> Any:
    """Turn a value from TOML, the environment or a flag into the field's type."""
    kind = _FIELDS[name].type
    try:
        if kind == "Secret":
            # A token read from a file often ends with a newline: it is not part of it.
            return Secret((raw.reveal() if isinstance(raw, Secret) else str(raw)).strip())
        if kind == "bool":
            return _to_bool(raw)
        if kind == "int":
            return _to_int(raw)
        if kind == "float":
            return _to_float(raw)
        if kind == "tuple[int, ...]":
            return tuple(_to_int(v) for v in _as_list(raw))
        if kind == "tuple[str, ...]":
            return tuple(str(v) for v in _as_list(raw))
        if kind in ("str", "str | None"):
            return None if raw is None else str(raw)
    except (TypeError, ValueError) as exc:
        shown = raw if not isinstance(raw, list | tuple) else " ".join(map(str, raw))
        raise ConfigError(f"{origin} {shown!r} is not valid: {exc}") from None
    raise AssertionError(f"unhandled settings type {kind}")  # pragma: no cover


def _to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


def _to_int(raw: Any) -> int:
    text = str(raw).strip()
    if isinstance(raw, bool | float) or not text.lstrip("-").isdigit():
        raise ValueError(f"{raw!r} is not a whole number")
    return int(text)


def _to_float(raw: Any) -> float:
    if isinstance(raw, bool):
        raise ValueError("expected a number")
    return float(str(raw).strip()) if isinstance(raw, str) else float(raw)


def _as_list(raw: Any) -> list[Any]:
    if isinstance(raw, list | tuple):
        return list(raw)
    if isinstance(raw, str):
        return [part for part in raw.replace(",", " ").split() if part]
    return [raw]


# --- layers ---------------------------------------------------------------------------


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file into flat settings, rejecting unknown sections and keys."""
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; check --config") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    flat: dict[str, Any] = {}
    for section, table in doc.items():
        if section not in _SECTIONS or not isinstance(table, dict):
            known = ", ".join(sorted(_SECTIONS))
            raise ConfigError(f"{path}: unknown section [{section}]; sections are {known}")
        for key, value in table.items():
            spec = _FIELDS.get(key)
            if spec is None or spec.metadata["section"] != section:
                raise ConfigError(f"{path}: unknown key {key!r} in [{section}]")
            flat[key] = _coerce(key, value, f"{path}: [{section}] {key} =")
    return flat


def read_environment(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """K6_CLOUD_TOKEN for the token, HARVESTER_<SETTING> (upper case) for any other."""
    env = os.environ if environ is None else environ
    flat: dict[str, Any] = {}
    if env.get(TOKEN_ENV):
        flat["token"] = _coerce("token", env[TOKEN_ENV], f"environment {TOKEN_ENV} =")
    for name in _FIELDS:
        value = env.get(ENV_PREFIX + name.upper())
        if value is not None and value != "":
            flat[name] = _coerce(name, value, f"environment {ENV_PREFIX}{name.upper()} =")
    return flat


def read_runs_file(path: str) -> tuple[int, ...]:
    """One run id a line; blank lines and `#` comments are skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read runs file {path}: {exc.strerror}") from None
    ids: list[int] = []
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        if not entry.isdigit() or int(entry) <= 0:
            raise ConfigError(
                f"{path}:{number}: {entry!r} is not a test run id (a positive integer)"
            )
        ids.append(int(entry))
    return tuple(ids)


def load_settings(
    flags: Mapping[str, Any] | None = None,
    *,
    config_file: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge the layers (flags > environment > file > defaults) and validate once."""
    merged: dict[str, Any] = {}
    if config_file:
        merged.update(read_config_file(config_file))
    merged.update(read_environment(environ))
    for name, value in (flags or {}).items():
        if value is not None and value != () and value != []:
            merged[name] = _coerce(name, value, "--" + FLAG_NAMES.get(name, name.replace("_", "-")))
    return Settings(**merged)


def with_runs(settings: Settings, extra: Iterable[int]) -> Settings:
    """The settings with more run ids appended (from a runs file or discovery), deduplicated."""
    combined = tuple(dict.fromkeys((*settings.runs, *extra)))
    return replace(settings, runs=combined)
