"""What each command accepts: the flags of the settings, grouped as `--help` shows them.
Every flag that fills a setting is listed in SETTINGS_FLAGS (its `dest` is the setting)."""

from __future__ import annotations

import argparse
from typing import Any


def add_api_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("API")
    g.add_argument("--base-url", metavar="URL", help="API base URL (default https://api.k6.io)")
    g.add_argument(
        "--token",
        help="API token (default: K6_CLOUD_TOKEN, else the one `k6 cloud login` stored; "
        "prefer those: flags show in ps)",
    )
    g.add_argument("--api", choices=("v2", "v6"), help="which k6 Cloud API (default v2)")
    g.add_argument("--stack-id", metavar="N", help="v6: the Grafana stack id (K6_CLOUD_STACK_ID)")
    g.add_argument("--stack-url", metavar="URL", help="v6: https://NAME.grafana.net, to ask the id")
    g.add_argument("--rate", metavar="N", help="most requests in any one-second window (default 5)")
    g.add_argument(
        "--rate-recovery", metavar="SECONDS", help="without a 429 before the rate steps up (5)"
    )
    g.add_argument("--concurrency", metavar="N", help="most requests in flight at once (default 8)")
    g.add_argument(
        "--max-url-length", metavar="BYTES", help="cap on a request's path+query (default 8000)"
    )
    g.add_argument("--connect-timeout", metavar="SECONDS", help="to connect (default 10)")
    g.add_argument("--read-timeout", metavar="SECONDS", help="between bytes of an answer (60)")
    g.add_argument(
        "--request-timeout", metavar="SECONDS", help="for a whole request, its body included (300)"
    )
    g.add_argument("--max-answer-size", metavar="MB", help="largest answer read (default 512)")
    g.add_argument("--max-attempts", metavar="N", help="tries per request when transient (6)")
    g.add_argument(
        "--retry-budget", metavar="SECONDS", help="a run may spend waiting to retry (1200)"
    )
    g.add_argument(
        "--max-retry-after", metavar="SECONDS", help="longest Retry-After honoured (900)"
    )
    add_insecure_flag(g, "allow http:// to non-loopback")
    g.add_argument(
        "--config",
        metavar="FILE",
        help="TOML settings (default: HARVESTER_CONFIG; `harvester config init` writes one)",
    )
    g.add_argument("--debug", action="store_true", help="show tracebacks for errors")


def add_store_flags(p: argparse.ArgumentParser) -> None:
    """The object store of an `s3://` archive, for the commands that read one back
    (`status`, `verify`, `report`): as a harvest reaches it."""
    add_s3_endpoint_flag(p)
    add_insecure_flag(p, "allow an http:// --s3-endpoint-url to non-loopback")


def add_s3_endpoint_flag(
    g: Any, help_text: str = "S3-compatible store (else AWS_ENDPOINT_URL)"
) -> None:
    """`--s3-endpoint-url`, for the commands that reach an `s3://` archive."""
    g.add_argument("--s3-endpoint-url", metavar="URL", help=help_text)


def add_insecure_flag(g: Any, help_text: str) -> None:
    """`--allow-insecure`, for the URLs a command's `help_text` names (no command takes
    both sets of flags). Left unset it is None, not False: not passed to `load_settings`,
    so HARVESTER_ALLOW_INSECURE or the config file may set it."""
    g.add_argument("--allow-insecure", action="store_true", default=None, help=help_text)


def store_flags(out: str, ns: argparse.Namespace) -> dict[str, Any]:
    """The settings `add_store_flags` gave, for `load_settings` (a switch left unset is not
    passed: HARVESTER_ALLOW_INSECURE or the config file may set it)."""
    flags = {"out": out, "s3_endpoint_url": ns.s3_endpoint_url}
    return flags | ({"allow_insecure": True} if ns.allow_insecure else {})


def add_harvest_flags(p: argparse.ArgumentParser, *, worker: bool = False) -> None:
    """What to fetch and where it goes; the worker takes its runs from discovery only (with
    their run objects) and has no live display: no --run/--runs-file/--run-record/--progress."""
    g = p.add_argument_group("what and where")
    if not worker:
        g.add_argument(
            "--run",
            dest="runs",
            action="append",
            metavar="ID",
            help="a test run id or its URL (https://app.k6.io/runs/ID); repeatable",
        )
        g.add_argument(
            "--runs-file", metavar="FILE", help="one run id or URL a line; - reads stdin"
        )
    g.add_argument(
        "--out",
        metavar="DIR",
        help="directory for <run_id>.ndjson files, or s3://BUCKET/PREFIX/"
        if worker
        else "directory for <run_id>.ndjson files, s3://BUCKET/PREFIX/, or - for stdout (-)",
    )
    add_s3_endpoint_flag(g)
    g.add_argument(
        "--method",
        dest="methods",
        action="append",
        metavar="METHOD",
        help="series aggregation instead of the API's default: mean, max, p95, 0.99 ..., "
        "or 'default'; repeatable",
    )
    g.add_argument(
        "--details",
        action="store_true",
        default=None,
        help="also fetch each metric's details (one request per metric)",
    )
    if not worker:
        g.add_argument(
            "--run-record",
            action="store_true",
            default=None,
            help="for runs given by id, also fetch the k6-run object (one request per run)",
        )
    g.add_argument(
        "--export-csv",
        action="store_true",
        default=None,
        help="also fetch each run's CSV export into DIR/<id>.csv[.gz] (directory output only)",
    )
    g.add_argument(
        "--export-timeout", metavar="SECONDS", help="to wait for a CSV export to be ready (600)"
    )
    files = "raw: the API's records (default); points: <id>.points.ndjson, one line a "
    files += "point, and <id>.meta.ndjson; parquet: <id>.parquet (the [parquet] extra)"
    if worker:  # it keeps an archive: Singer messages go to stdout, for `harvest` only
        g.add_argument("--format", choices=("raw", "points", "parquet"), help=files)
    else:
        g.add_argument(
            "--format",
            choices=("raw", "points", "parquet", "singer"),
            help=files + "; singer: Singer messages on stdout, for a Singer target or Meltano",
        )
        add_singer_flags(g)
    g.add_argument(
        "--compress",
        choices=("none", "gzip", "zstd"),
        help="compress each run's file: <id>.ndjson.gz or .ndjson.zst (directory output only)",
    )
    g.add_argument(
        "--compress-level", metavar="N", help="gzip 1-9 (default 6), zstd 1-22 (default 1)"
    )
    g.add_argument(
        "--layout",
        choices=("flat", "date"),
        help="flat: every run in DIR (default); date: DIR/YYYY/MM/DD/ of the run's creation (UTC)",
    )
    g.add_argument("--runs-in-flight", metavar="N", help="runs harvested at once (default 4)")
    g.add_argument("--step", metavar="SECONDS", help="v6: between a series' points (default 60)")
    g.add_argument(
        "--state", metavar="FILE", help="state file (default DIR/.harvester-state.sqlite)"
    )
    g.add_argument("--force", action="store_true", default=None, help="re-harvest finished runs")
    g.add_argument(
        "--file-mode",
        metavar="MODE",
        help="mode of the archive files: octal like 0640 (default 0600), or umask",
    )
    add_log_flags(g)
    if not worker:
        g.add_argument(
            "--progress",
            choices=("auto", "on", "off"),
            help="live progress on stderr (auto: a TTY)",
        )


def add_singer_flags(g: Any) -> None:
    g.add_argument(
        "--singer-state",
        metavar="FILE",
        help="--format singer: the last STATE a target emitted; the runs it lists are skipped",
    )
    g.add_argument(
        "--singer-stream",
        dest="singer_streams",
        action="append",
        metavar="NAME",
        help="--format singer: only this stream (runs, metrics, points, thresholds, "
        "overviews, checks, other); repeatable",
    )


def add_log_flags(g: Any, *, quiet: bool = True) -> None:
    """--quiet and --verbose; without `quiet` (a listing: it starts no run), --verbose only."""
    started = "a line per run started and " if quiet else "a line "
    levels = {"quiet": "only failures and the summary on stderr",
              "verbose": f"also {started}per run left for later"}  # fmt: skip
    for level in ("quiet", "verbose") if quiet else ("verbose",):
        g.add_argument(
            f"--{level}", dest="log_level", action="store_const", const=level, help=levels[level]
        )


def add_discovery_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("discovery")
    g.add_argument(
        "--all-projects",
        action="store_true",
        default=None,
        help="every project the token sees (v2: of every organization; v6: of the stack)",
    )
    g.add_argument(
        "--project",
        dest="projects",
        action="append",
        metavar="ID",
        help="every run of every test of this project; repeatable",
    )
    g.add_argument(
        "--test",
        dest="tests",
        action="append",
        metavar="ID",
        help="every run of this test; repeatable",
    )
    add_organization_flag(g, "every project of this organization; repeatable")
    g.add_argument(
        "--since",
        metavar="WHEN",
        help="runs created at or after: 2026-01-31, 2026-01-31T12:00Z, 7d",
    )
    g.add_argument("--until", metavar="WHEN", help="runs created before: a date or an age (12h)")
    g.add_argument("--page-size", metavar="N", help="page size when listing tests and runs (50)")


def add_organization_flag(g: Any, help_text: str) -> None:
    g.add_argument(
        "--organization", dest="organizations", action="append", metavar="ID", help=help_text
    )


def add_output_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--output",
        choices=("table", "json", "csv"),
        help="table (default on a terminal), json (NDJSON, the default otherwise) or csv",
    )


def add_worker_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("worker")
    g.add_argument("--interval", metavar="DURATION", help="between cycles: 30s, 5m, 1h (5m)")
    g.add_argument("--listen-host", metavar="HOST", help="for /healthz and /metrics (127.0.0.1)")
    g.add_argument("--listen-port", metavar="PORT", help="for /healthz and /metrics; 0: any (9464)")


SETTINGS_FLAGS = (
    "base_url", "token", "rate", "rate_recovery", "concurrency", "max_url_length",
    "connect_timeout", "read_timeout", "request_timeout", "max_answer_size", "max_attempts",
    "retry_budget", "max_retry_after",
    "allow_insecure", "runs", "runs_file", "out", "methods", "details", "run_record",
    "runs_in_flight", "state", "force", "file_mode", "log_level", "progress", "projects",
    "tests", "since", "until", "page_size", "interval", "listen_host", "listen_port",
    "api", "stack_id", "stack_url", "step", "all_projects",
    "export_csv", "export_timeout", "organizations", "s3_endpoint_url",
    "compress", "compress_level", "format", "layout", "singer_state",
    "singer_streams",
)  # fmt: skip
