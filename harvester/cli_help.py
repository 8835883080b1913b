"""What `--help` says (each command's description, examples and exit statuses) and how a
mistyped command, flag or choice is answered: one line with the closest ("did you mean")."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any, NoReturn

from .values import did_you_mean

EXIT_STATUSES = """\
exit status:
  0    every run harvested (or nothing to do)
  1    at least one run failed (each named on stderr), or the output could not be written
  2    bad input (a flag, variable, config or runs file; named in one line), no token,
       the token rejected (401/403), or the API unreachable
  130  stopped by SIGINT (Ctrl-C); 143: by SIGTERM; 129: by SIGHUP (the terminal closed)"""

MAIN = """\
Archive k6 Cloud test runs as NDJSON: every metric, its time series, the thresholds and
the run overview, as fast as the API's rate limit allows, each record exactly once.

The token: --token, K6_CLOUD_TOKEN, HARVESTER_TOKEN, the config file, or the one
`k6 cloud login` stored."""

MAIN_EPILOG = f"""\
examples:
  harvester harvest --run 123456 --out archive/
  harvester runs --project 3458575 --since 7d
  harvester worker --project 3458575 --out /srv/k6-archive --interval 1h

`harvester COMMAND --help` tells more about each command.

{EXIT_STATUSES}"""

HARVEST = """\
Harvest test runs to NDJSON: given by id (or URL), in a runs file, or discovered from
projects and tests. With --out DIR each run is one file, published whole or not at all,
and runs already archived are skipped, so the same command can run every night."""

HARVEST_EPILOG = f"""\
examples:
  harvester harvest --run 123456 --run https://app.k6.io/runs/123457 --out archive/
  harvester harvest --project 3458575 --since 7d --out /srv/k6-archive
  cut -f1 runs.tsv | harvester harvest --runs-file - --out - | gzip > runs.ndjson.gz
  harvester harvest --project 3458575 --since 7d --format singer | target-jsonl

{EXIT_STATUSES}"""

RUNS = """\
List the runs a harvest with the same selectors would take, and what it would do with
each (harvest, skip: archived, wait: not finished), without harvesting anything. A table
on a terminal, NDJSON otherwise."""

RUNS_EPILOG = """\
examples:
  harvester runs --project 3458575 --since 7d
  harvester runs --test 720001 --out /srv/k6-archive | jq -r 'select(.action=="harvest").run_id'

exit status:
  0    listed
  1    a selected project, test or organization the API does not know (named on stderr;
       the others are listed)
  2    bad input, no token, the token rejected, or the API unreachable"""

PROJECTS = """\
List the organizations the token sees and their projects, one row per project with its
number of tests: the ids to give --organization and --project (with --api v6: the
stack's projects, the stack id where v2 has the organization). A table on a terminal,
NDJSON otherwise."""

PROJECTS_EPILOG = """\
examples:
  harvester projects
  harvester projects --organization 5001 --output csv
  harvester projects --api v6 --stack-id 12345

exit status:
  0    listed
  2    bad input (an organization the token does not see), no token, the token rejected,
       or the API unreachable"""

WORKER = """\
Discover and harvest new runs in a loop, every --interval, into --out DIR. Serves
/healthz and /metrics (Prometheus). An outage is waited out; SIGTERM (or SIGHUP) stops
it cleanly."""

WORKER_EPILOG = """\
examples:
  harvester worker --project 3458575 --out /srv/k6-archive --interval 5m
  harvester worker --test 720001 --out archive/ --listen-host 0.0.0.0 --listen-port 9464

exit status:
  0    stopped by SIGTERM, SIGINT or SIGHUP (its normal end)
  2    bad input, no token, the token rejected, or an unusable state file"""

STATUS = """\
What the state file says, without sqlite3: runs by state, each failure with its reason,
and the runs waiting to be harvested. Read-only: safe while a harvester runs."""

STATUS_EPILOG = """\
examples:
  harvester status --out /srv/k6-archive
  harvester status --state /var/lib/harvester/state.sqlite --output json | jq .failed

exit status:
  0    shown
  2    no state file there, or not a harvester state file"""

SIMULATE = """\
Serve a simulated k6 Cloud API on loopback, with generated data or a recorded k6 run,
misbehaving on purpose when asked: for trying a pipeline without an account."""

SIMULATE_EPILOG = """\
examples:
  harvester simulate --port 8080 --runs 20 --metrics 200
  harvester simulate --from-k6 results.json --summary summary.json --run-id 1 --port 8080
  K6_CLOUD_TOKEN=sim-token harvester harvest --base-url http://127.0.0.1:8080 --run 100001

exit status:
  0    stopped by SIGINT, SIGTERM or SIGHUP (a closed terminal; ignored under nohup)
  2    bad input (a flag or an unreadable k6 output file)"""

CONFIG = """\
Write the example config file, or show the settings in effect and where each comes from."""

CONFIG_EPILOG = """\
examples:
  harvester config init ~/.config/harvester.toml
  harvester config show --config ~/.config/harvester.toml --rate 2

Precedence: flags, then environment (K6_CLOUD_TOKEN; HARVESTER_ and a flag's name, e.g.
HARVESTER_PROJECT=1 or HARVESTER_RATE=2), then the config file (--config or
HARVESTER_CONFIG), then the token `k6 cloud login` stored, then defaults.

exit status:
  0    done
  2    bad input (the file exists, a bad value: named in one line)"""

CONFIG_INIT = "Write the documented example config, every setting with its default."
CONFIG_SHOW = "Print the settings in effect as TOML, each with where it came from; token masked."


def unrecognized_hint(message: str, options: Iterable[str]) -> str:
    """For argparse's "unrecognized arguments: --runs-fil x": the closest known flag."""
    if not message.startswith("unrecognized arguments: "):
        return ""
    typed = [word.split("=", 1)[0] for word in message.split()[2:] if word.startswith("-")]
    known = list(options)
    return next((hint for word in typed if (hint := did_you_mean(word, known))), "")


class UsageError(Exception):
    """argparse's complaint, reported as one line like every other bad input."""


class Parser(argparse.ArgumentParser):
    #: Flags a mistyped one is compared with (the chosen command's; see build_parser).
    known_options: list[str]
    #: Whose --help the message points to: the chosen command's (an unknown flag of
    #: `harvest` is found by the top parser, whose help does not list it).
    help_prog: str

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # No prefix matching: `--run 5` must never quietly mean `--runs-in-flight 5`.
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        self.known_options = []
        self.help_prog = self.prog

    def error(self, message: str) -> NoReturn:
        hint = unrecognized_hint(message, self.known_options)
        raise UsageError(f"{message}{hint} (see {self.help_prog} --help)")

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        # A mistyped command or choice: name the closest ("did you mean harvest?").
        if action.choices is not None and value not in action.choices:
            choices = ", ".join(map(str, action.choices))
            hint = did_you_mean(str(value), map(str, action.choices))
            raise argparse.ArgumentError(
                action, f"invalid choice {value!r}{hint}; choose from {choices}"
            )


VERIFY = """\
Check every run of an archive against its manifest (<id>.manifest.json): each file is
there, of the size and sha256 the manifest says, every line parses, and the records of
each type are as many. Files are read streaming, a few at once (one thread per CPU),
and the rows come in order. An object-store archive (s3://BUCKET/PREFIX/) is checked
the same way, its objects read as they come."""
VERIFY_EPILOG = """\
statuses: ok, missing (a named file, or a data file's manifest), truncated, corrupt,
orphan (a file no manifest names; the state file, locks and temporary files are not),
unreadable, unverified (a data file whose manifest is corrupt or unreadable)

examples:
  harvester verify ./archive
  harvester verify s3://archive/k6/ --s3-endpoint-url http://127.0.0.1:9000
  harvester verify ./archive --output json | jq 'select(.status != "ok")'

exit status:
  0    every file intact
  1    anything missing, truncated, corrupt, orphan, unreadable or unverified, or
       nothing to verify (no run in DIR: a wrong path?)
  2    bad usage (DIR not a directory; a missing bucket, denied access)"""

REPORT = """\
Write an archive (the --out DIR of a harvest, or its s3://BUCKET/PREFIX/) as one
self-contained HTML page: one run's charts and tables, or trends across many runs of a
test with regressions marked. --format png writes each chart as a PNG file instead."""

REPORT_EPILOG = """\
examples:
  harvester report archive/ --out report.html
  harvester report archive/ --run 103054 --out - > run.html
  harvester report archive/ --test 7001 --since 30d --regression 10% --out nightly.html
  harvester report archive/ --run 103054 --format png --out charts/

exit status:
  0    written
  1    a run file cut short or damaged (named; `harvester verify DIR` tells more), a
       directory of the archive that could not be listed (the page is written without
       its runs), or the page could not be written
  2    bad input: a flag, DIR not a directory or holding no archived run, or no run that
       matches --run/--test/--since"""
