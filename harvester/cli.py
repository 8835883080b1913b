"""The command line: parse, build settings, call the library, turn errors into exit codes.

`main(argv)` is the one exit point; it prints a one-line message for every
`HarvesterError` (exit 2 for bad input or a rejected token, 1 when runs failed) and a
traceback only with `--debug`. Heavy modules are imported inside the commands so that
`harvester --version` starts fast (a cron job pays start-up every time).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from .cli_flags import (
    SETTINGS_FLAGS,
    add_api_flags,
    add_discovery_flags,
    add_harvest_flags,
    add_worker_flags,
)
from .cli_help import Parser as _Parser
from .cli_help import UsageError
from .cli_streams import reader_gone, stderr_to_devnull_if_closed
from .tables import printable  # at start: a reader may not read this checkout at the end

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_SIGINT = 130


class Reported(Exception):
    """An error already written to the log as a JSON line; only its exit status is left."""

    def __init__(self, exit_status: int) -> None:
        super().__init__(exit_status)
        self.exit_status = exit_status


class _Version(argparse.Action):
    """`--version`: the version is read only when asked (reading it costs ~0.06 s)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> NoReturn:
        from . import version

        print(f"harvester {version()}")
        parser.exit()


def build_parser(command: str | None = None, words: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser; `command` is the subcommand about to run, so only its flags are loaded.
    `words`, the command line's, say which (sub)command a mistyped flag is compared with."""
    from . import cli_help as text

    parser = _Parser(prog="harvester", description=text.MAIN, epilog=text.MAIN_EPILOG)
    parser.add_argument("--version", action=_Version, help="show the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name: str, summary: str, description: str, epilog: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=summary, description=description, epilog=epilog)

    harvest = add("harvest", "harvest test runs to NDJSON", text.HARVEST, text.HARVEST_EPILOG)
    add_harvest_flags(harvest)
    add_discovery_flags(harvest)
    add_api_flags(harvest)
    harvest.set_defaults(handler=_cmd_harvest)
    from .cli_listing import add_listing_commands

    add_listing_commands(add)
    worker = add(
        "worker", "discover and harvest new runs in a loop", text.WORKER, text.WORKER_EPILOG
    )
    add_harvest_flags(worker, worker=True)
    add_discovery_flags(worker)
    add_worker_flags(worker)
    add_api_flags(worker)
    worker.set_defaults(handler=_cmd_worker)
    from .cli_archive import add_archive_commands

    add_archive_commands(add, command)
    from .cli_config import add_config_command

    add_config_command(add("config", "write or show settings", text.CONFIG, text.CONFIG_EPILOG))
    simulate = add(
        "simulate", "serve a simulated k6 Cloud API", text.SIMULATE, text.SIMULATE_EPILOG
    )
    if command == "simulate":  # its module imports aiohttp.web: only load it when asked
        from .simulator import command as simulate_command

        simulate_command.add_arguments(simulate)
        simulate.set_defaults(handler=simulate_command.run)
    chosen = _chosen(parser, [command] if command else [], words)
    parser.known_options = [flag for action in chosen._actions for flag in action.option_strings]
    parser.help_prog = chosen.prog
    return parser


def _chosen(
    parser: argparse.ArgumentParser, command: list[str], words: Sequence[str]
) -> argparse.ArgumentParser:
    """The innermost command the words name (`config show`, not `config`: the flags of
    `show` are the ones a mistyped flag is meant to be)."""
    chosen = parser
    for word in [*command, *[w for w in words if not w.startswith("-")][1:]]:
        choices = next(
            (a.choices for a in chosen._actions if isinstance(a, argparse._SubParsersAction)),
            None,
        )
        if not choices or word not in choices:
            break
        chosen = choices[word]
    return chosen


def loaded_from_args(ns: argparse.Namespace) -> Any:
    """The settings of this command line (with where each came from); warnings about the
    environment are printed here, once."""
    from .sources import load

    flags = {name: getattr(ns, name, None) for name in SETTINGS_FLAGS}
    loaded = load(flags, config_file=ns.config)
    if loaded.warnings:  # as the command's log: a JSON line when stderr is not a terminal
        from .progress import Reporter

        reporter = Reporter.for_settings(loaded.settings, live_allowed=False)
        for warning in loaded.warnings:
            reporter.event("warning", f"warning: {warning}")
    return loaded


def settings_from_args(ns: argparse.Namespace) -> Any:
    return loaded_from_args(ns).settings


def _cmd_harvest(ns: argparse.Namespace) -> int:
    out = getattr(ns, "out", None) or "-"
    if getattr(ns, "format", None) == "points" and out != "-" and "://" not in out:
        from .writerpool import start_early

        start_early()  # their start overlaps with the imports below (`writerpool`)
    from .config import with_runs
    from .discovery import has_selectors
    from .errors import ConfigError
    from .sources import read_runs_file

    settings = settings_from_args(ns)
    if settings.runs_file:
        settings = with_runs(settings, read_runs_file(settings.runs_file))

    if not settings.runs and not has_selectors(settings):
        raise ConfigError(
            "no runs to harvest: give --run ID (repeatable), --runs-file FILE, or --project P"
            " / --test T / --organization O / --all-projects to discover them"
        )
    require_token(settings)
    from .progress import Reporter

    reporter = Reporter.for_settings(settings)
    result = _reporting(reporter, _harvest, settings, reporter)
    reporter.finish(result)
    return exit_status(result)


def _reporting(reporter: Any, func: Any, *args: Any) -> Any:
    """Run the command's async body. In JSON-lines mode an error that ends it becomes a
    JSON line, then the summary, so the log's last line still parses."""
    try:
        return run_async(func, *args)
    except Exception as exc:
        from .errors import ConfigError, unwrap

        # Bad input found before anything started stays one plain line (exit 2).
        if not reporter.json_lines or isinstance(unwrap(exc), ConfigError):
            raise
        message, status = error_message(exc)
        reporter.fatal(message, status)
        raise Reported(status) from exc


async def _harvest(settings: Any, reporter: Any) -> Any:
    """Discover (when selectors are given), then harvest, under one rate gate and one
    watch of the stop signals (`stopsignals.StopSignals`: none falls between the two)."""
    import functools

    from .job import SHUTDOWN_GRACE
    from .stopsignals import watching_stop_signals

    work = functools.partial(_discover_and_harvest, settings, reporter)
    return await watching_stop_signals(work, reporter, SHUTDOWN_GRACE)


async def _discover_and_harvest(settings: Any, reporter: Any, signals: Any) -> Any:
    from .discovery import Selection, discover_runs, with_explicit
    from .job import JobResult, harvest_job, open_state
    from .ratelimit import RateGate
    from .scheduler import HarvestReport, RunTarget
    from .stats import HarvestStats

    selection = Selection.from_settings(settings)
    stats = HarvestStats()
    gate = RateGate.for_settings(settings)
    not_found: list[str] = []
    if settings.to_object_store:
        from .objectstore.early import start_early

        start_early()  # botocore made ready meanwhile (`objectstore.early`)
    # The state (and its lock) first: discovery remembers waiting runs in it.
    with open_state(settings) as state:
        async with reporter.showing(stats, gate):
            targets = [RunTarget(run_id) for run_id in settings.runs]
            if selection.active:
                reporter.discovering()
                with signals.cutting():  # listing writes nothing: a signal ends it at once
                    found = await discover_runs(
                        settings, selection, gate=gate, stats=stats, state=state
                    )
                if signals.signum is not None:  # stopped while listing: nothing was written
                    return JobResult(HarvestReport(), stats, 0.0, interrupted_by=signals.signum)
                reporter.discovered(found)
                not_found = say_not_found(reporter, found)
                targets = with_explicit(found, settings.runs)
            result = await harvest_job(
                settings,
                targets,
                observers=[reporter],
                stats=stats,
                gate=gate,
                signals=signals,
                state=state,
                notify=reporter.event,
            )
    result.not_found = not_found
    return result


def say_not_found(reporter: Any, found: Any) -> list[str]:
    """One line per selected project or test the API does not know (exit status 1)."""
    for message in found.not_found:
        reporter.event("not_found", message)
    return list(found.not_found)


def require_token(settings: Any) -> None:
    from .errors import ConfigError

    if not settings.token:
        raise ConfigError("no API token: set K6_CLOUD_TOKEN (or pass --token)")


def _cmd_worker(ns: argparse.Namespace) -> int:
    """Runs until SIGTERM/SIGINT/SIGHUP; a worker stopped by a signal exits 0 (its normal end)."""
    from .errors import ConfigError
    from .progress import Reporter
    from .worker import run_worker

    settings = settings_from_args(ns)
    if settings.runs or settings.runs_file:
        raise ConfigError(
            "the worker harvests what discovery finds; --run/--runs-file are for "
            "`harvester harvest`"
        )
    require_token(settings)
    reporter = Reporter.for_settings(settings, live_allowed=False, timestamps=True)
    _reporting(reporter, run_worker, settings, reporter)
    return EXIT_OK


def exit_status(result: Any) -> int:
    """128 + the signal when one stopped the job (129 SIGHUP, 130 SIGINT, 143 SIGTERM), 1
    when any run failed or a selected project or test does not exist, else 0."""
    import signal

    if result.interrupted_by is not None:
        return 128 + signal.Signals(result.interrupted_by)  # the shell's 128+N: 129, 130, 143
    return EXIT_FAILED if result.report.failed or result.not_found else EXIT_OK


def run_async(func: Any, *args: Any, **kwargs: Any) -> Any:
    import functools
    import gc

    import anyio

    # Parsing one 2 MB answer makes ~90,000 objects, none of them cyclic garbage: at the
    # default threshold (700) that is ~130 collections per answer, some full ones. Move
    # what start-up built out of the collector's sight and collect young objects rarely
    # (measured by scripts/bench: -11% wall at the same peak memory).
    gc.freeze()
    gc.set_threshold(50_000, 10, 10)

    options: dict[str, Any] = {}
    try:
        import uvloop  # noqa: F401  (optional: a faster event loop when installed)

        options["use_uvloop"] = True
    except ImportError:  # pragma: no cover
        pass
    return anyio.run(functools.partial(func, *args, **kwargs), backend_options=options)


def main(argv: Sequence[str] | None = None) -> int:
    stderr_to_devnull_if_closed()
    args = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(next((a for a in args if not a.startswith("-")), None), args)
    debug = "--debug" in args
    try:
        ns = parser.parse_args(args)
        if not getattr(ns, "handler", None):
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return int(ns.handler(ns))
    except UsageError as exc:
        print(f"harvester: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Reported as done:
        if debug:
            import traceback

            traceback.print_exception(done.__cause__ or done, file=sys.stderr)
        return done.exit_status
    except KeyboardInterrupt:
        print("harvester: interrupted", file=sys.stderr)
        return EXIT_SIGINT
    except BrokenPipeError:  # `harvester projects | head -1`
        return reader_gone(EXIT_FAILED)
    except Exception as exc:
        return report_error(exc, debug)


def error_message(exc: BaseException) -> tuple[str, int]:
    """(one line saying what went wrong, the exit status) for an error that ends a command."""
    from .errors import HarvesterError, unwrap

    # The last line of defence: a task group's wrapper is never the message.
    exc = unwrap(exc)
    if isinstance(exc, HarvesterError):
        return str(exc), exc.exit_code
    return (
        f"internal error: {type(exc).__name__}: {exc} "
        "(run again with --debug for a traceback, and please report it)",
        EXIT_FAILED,
    )


def report_error(exc: BaseException, debug: bool) -> int:
    if debug:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    message, status = error_message(exc)
    print(f"harvester: {printable(message)}", file=sys.stderr)  # it may quote the API
    return status


def entrypoint() -> NoReturn:
    sys.exit(main())
