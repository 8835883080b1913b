"""`harvester config init` and `harvester config show`: the documented example, and the
settings in effect with where each came from."""

from __future__ import annotations

import argparse
import os
import sys

from . import cli, cli_flags
from .cli_help import Parser
from .errors import ConfigError


def add_config_command(config: argparse.ArgumentParser) -> None:
    from . import cli_help as text

    actions = config.add_subparsers(
        dest="action", metavar="ACTION", parser_class=Parser, required=True
    )
    init = actions.add_parser("init", help=text.CONFIG_INIT, description=text.CONFIG_INIT)
    init.add_argument(
        "path",
        nargs="?",
        default="harvester.toml",
        metavar="PATH",
        help="where to write it; - for stdout (default: harvester.toml)",
    )
    init.set_defaults(handler=cmd_config_init)
    show = actions.add_parser("show", help=text.CONFIG_SHOW, description=text.CONFIG_SHOW)
    cli_flags.add_harvest_flags(show)
    cli_flags.add_discovery_flags(show)
    cli_flags.add_worker_flags(show)
    cli_flags.add_api_flags(show)
    show.set_defaults(handler=cmd_config_show)


def cmd_config_init(ns: argparse.Namespace) -> int:
    """Write the documented example (shipped in the package) where asked, never over a file."""
    from importlib.resources import files  # (~10 ms to import: only `config init` reads it)

    example = files("harvester").joinpath("example.toml").read_text(encoding="utf-8")
    if ns.path == "-":
        sys.stdout.write(example)
        return cli.EXIT_OK
    path = os.path.expanduser(ns.path)
    try:
        with open(path, "x", encoding="utf-8") as fh:
            fh.write(example)
    except (FileExistsError, IsADirectoryError):
        if os.path.isdir(path):  # not something to remove
            example_path = os.path.join(path, "harvester.toml")
            raise ConfigError(
                f"{path} is a directory; give a file such as {example_path}"
            ) from None
        raise ConfigError(f"{path} exists; remove it or give another path") from None
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
    sys.stderr.write(f"harvester: wrote {path}; use it with --config {path}\n")
    return cli.EXIT_OK


def cmd_config_show(ns: argparse.Namespace) -> int:
    from .sources import render

    sys.stdout.write(render(cli.loaded_from_args(ns)))
    return cli.EXIT_OK
