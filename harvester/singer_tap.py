"""`tap-harvester`: the harvester called as a Singer tap, the way Meltano calls one.

Meltano runs an extractor as `EXECUTABLE --config CONFIG.json [--state STATE.json]`,
with no subcommand and a JSON config. `harvest_argv` turns that into a harvester command
line: `harvest --format singer --out -`, each config key a setting of the same name as in
the TOML file (`projects`, `since`, `methods` ...) given as its flag, `--state` given as
`--singer-state`. The token goes through the environment (K6_CLOUD_TOKEN), never argv,
which `ps` shows.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import orjson

from .cli_flags import SETTINGS_FLAGS
from .config import Settings, check_methods, parse_value
from .errors import ConfigError
from .formats.singer import catalog, selected_streams
from .formats.singer_state import read_state
from .sources import TOKEN_ENV, flag_name, read_limited
from .values import did_you_mean

#: What the tap decides itself: Singer messages, on stdout, resumed from Singer's state.
OWN = ("out", "format", "singer_state", "singer_streams")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tap-harvester",
        description="harvest k6 Cloud runs as a Singer tap: `harvester harvest --format "
        "singer` with Singer's --config JSON (the harvester's settings) and --state",
    )
    parser.add_argument("--config", required=True, metavar="FILE", help="settings as JSON")
    parser.add_argument("--state", metavar="FILE", help="the last STATE's value (resume)")
    parser.add_argument("--catalog", metavar="FILE", help="the streams to send (selected)")
    parser.add_argument("--properties", metavar="FILE", help="--catalog's older name")
    parser.add_argument("--discover", action="store_true", help="print the catalog")
    return parser.parse_args(argv)


def read_json(flag: str, path: str) -> Any:
    try:
        return orjson.loads(read_limited(path, f"the tap's {flag} {path}"))
    except OSError as exc:
        raise ConfigError(f"cannot read the tap's {flag} {path}: {exc.strerror}") from None
    except orjson.JSONDecodeError:
        raise ConfigError(f"the tap's {flag} {path} is not JSON") from None


def read_config(path: str) -> dict[str, Any]:
    doc = read_json("--config", path)
    if not isinstance(doc, dict):
        raise ConfigError(f"the tap's --config {path} is not a JSON object of settings")
    return doc


def config_flags(config: dict[str, Any], path: str) -> list[str]:
    """The flags of a config's settings (booleans as switches, lists as repeated flags).
    Each value is checked here, so that a bad one is named by the key the user wrote
    (`config.json: projects = 'abc' is not a project id`), not by the flag it becomes."""
    checked = {name: check_setting(name, value, path) for name, value in config.items()}
    if checked.get("methods"):
        api = checked.get("api") or Settings.api
        check_methods(api, checked["methods"], f"{path}: methods =")
    argv: list[str] = []
    for name, value in config.items():
        if checked[name] is None or checked[name] is False:
            continue
        if name == "log_level":  # its flags are --quiet and --verbose
            argv += [f"--{checked[name]}"] if checked[name] != "info" else []
            continue
        if checked[name] is True:  # a switch ("details": "yes" too, as in the TOML file)
            argv.append(flag_name(name))
            continue
        for item in value if isinstance(value, list) else [value]:
            argv += [flag_name(name), str(item)]
    return argv


def check_setting(name: str, value: Any, path: str) -> Any:
    """The config's `value` of setting `name`, parsed as any setting is (None: not set)."""
    if name in OWN:
        raise ConfigError(f"{path}: tap-harvester sets {name!r} itself; remove it")
    if name not in SETTINGS_FLAGS:
        known = sorted(n for n in SETTINGS_FLAGS if n not in OWN)
        raise ConfigError(
            f"{path}: unknown setting {name!r}{did_you_mean(name, known)}; settings are "
            + ", ".join(known)
        )
    return None if value is None else parse_value(name, value, f"{path}: {name} =")


def harvest_argv(argv: Sequence[str], environ: dict[str, str] | None = None) -> list[str]:
    """The harvester command line for this tap invocation; the config's token is put in
    `environ` (default: this process's environment)."""
    args = parse_args(argv)
    config = read_config(args.config)
    token = config.pop("token", None)
    if token:
        (os.environ if environ is None else environ)[TOKEN_ENV] = str(token)
    command = ["harvest", "--format", "singer", "--out", "-", *config_flags(config, args.config)]
    if args.state:
        read_state(args.state, "the tap's --state")  # a bad one named as the user gave it
        command += ["--singer-state", args.state]
    chosen = args.catalog or args.properties
    if chosen:
        where = f"the tap's catalog {chosen}"
        streams = selected_streams(read_json("--catalog", chosen), where)
        command += [arg for name in streams for arg in ("--singer-stream", name)]
    return command


def discover(argv: Sequence[str]) -> bytes | None:
    """The catalog when the tap is asked `--discover`, else None."""
    return orjson.dumps(catalog()) + b"\n" if parse_args(argv).discover else None


def entrypoint() -> NoReturn:
    """`tap-harvester --config FILE.json [--state FILE]`: Meltano's call of a tap made a
    `harvester harvest --format singer` command line, or the catalog for `--discover`."""
    from .cli import EXIT_OK, main, report_error

    try:
        found = discover(sys.argv[1:])
        if found is not None:
            sys.stdout.buffer.write(found)
            sys.exit(EXIT_OK)
        argv = harvest_argv(sys.argv[1:])
    except Exception as exc:
        sys.exit(report_error(exc, debug=False))
    sys.exit(main(argv))
