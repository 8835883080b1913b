"""`harvester simulate`: serve the simulated k6 Cloud API until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import ipaddress
import signal
import sys
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import anyio

from harvester.errors import ConfigError
from harvester.moments import utc_moment
from harvester.simulator.cloud import SimCloud
from harvester.simulator.exports import ExportKnobs
from harvester.simulator.faults import DATA_ENDPOINTS, FaultPlan
from harvester.simulator.generated import generate_cloud
from harvester.simulator.model import RunData
from harvester.simulator.server import Simulator
from harvester.stopsignals import STOP_SIGNALS

DEFAULT_PORT = 8080
DEFAULT_RUNS = 5
#: Each fault flag (--p-KIND) and what it makes a data request get.
_FAULTS = {
    "500": "a 500",
    "502": "a 502",
    "503": "a 503",
    "504": "a 504",
    "429": "a 429 with Retry-After",
    "reset": "a connection reset mid-body",
    "truncate": "a 200 whose body is cut short",
    "delay": "a --delay pause before its answer",
    "unlisted": "a 200 {} without the endpoint's list",
    "latin1": "a 200 whose JSON holds a Latin-1 byte",
}
_FAULT_FLAGS = tuple(_FAULTS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `simulate` subcommand's flags."""
    serve = parser.add_argument_group("serving")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="0 picks a free port (default: %(default)s)"
    )
    serve.add_argument(
        "--allow-non-loopback", action="store_true", help="allow a --host other than loopback"
    )
    serve.add_argument(
        "--token", default="sim-token", help="token to accept (default: %(default)s)"
    )
    serve.add_argument(
        "--stack-id",
        type=int,
        default=1,
        help="the stack v6/v5 requests must name in X-Stack-Id (default: %(default)s)",
    )

    data = parser.add_argument_group("generated data")
    data.add_argument(
        "--runs",
        type=int,
        default=None,
        help=f"generated runs (default: {DEFAULT_RUNS}, 0 with --from-k6)",
    )
    data.add_argument(
        "--metrics", type=int, default=20, help="metrics per run (default: %(default)s)"
    )
    data.add_argument(
        "--points", type=int, default=60, help="points per serie (default: %(default)s)"
    )
    data.add_argument("--seed", type=int, default=0, help="data seed (default: %(default)s)")
    data.add_argument(
        "--pending-runs", type=int, default=0, help="extra runs still running or processing"
    )
    data.add_argument(
        "--processing-error-runs", type=int, default=0, help="extra runs with processing_status 3"
    )
    data.add_argument(
        "--missing-series", type=int, default=0, help="metrics per run without a serie"
    )
    data.add_argument(
        "--anchor",
        metavar="WHEN",
        help="date the generated runs in the days before this ISO 8601 moment "
        "(default: now, so `--since 7d` finds them; e.g. 2024-06-03T12:00:00Z for fixed data)",
    )

    k6 = parser.add_argument_group("recorded k6 runs")
    k6.add_argument(
        "--from-k6",
        action="append",
        default=[],
        metavar="FILE",
        help="serve a `k6 run --out json` file (repeatable)",
    )
    k6.add_argument(
        "--summary",
        action="append",
        default=[],
        metavar="FILE",
        help="k6 summary export for the --from-k6 of the same position",
    )
    k6.add_argument(
        "--run-id",
        action="append",
        type=int,
        default=[],
        metavar="N",
        help="run id for the --from-k6 of the same position",
    )
    k6.add_argument(
        "--bucket",
        type=float,
        default=None,
        metavar="SECONDS",
        help="series bucket width of --from-k6 runs",
    )

    export = parser.add_argument_group("CSV export")
    export.add_argument(
        "--export-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="time from POST .../export until the run object has export_file (default: 0)",
    )
    export.add_argument(
        "--export-gzip", action="store_true", help="serve export files gzip-compressed"
    )

    faults = parser.add_argument_group("faults")
    faults.add_argument("--fault-seed", type=int, default=0, help="seed of the fault sequence")
    for kind in _FAULT_FLAGS:
        faults.add_argument(
            f"--p-{kind}",
            type=float,
            default=0.0,
            metavar="P",
            help=f"probability of {_FAULTS[kind]} per data request",
        )
    faults.add_argument(
        "--delay",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="length of a delay fault (default: %(default)s)",
    )
    faults.add_argument(
        "--retry-after",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="Retry-After of injected 429s (default: %(default)s)",
    )
    faults.add_argument(
        "--p-retry-after-date",
        type=float,
        default=0.0,
        metavar="P",
        help="share of 429s with an HTTP-date Retry-After",
    )
    faults.add_argument(
        "--retry-after-on-503",
        action="store_true",
        help="injected 503s say Retry-After too (--retry-after, --p-retry-after-date)",
    )
    faults.add_argument(
        "--rate-limit",
        type=int,
        default=None,
        metavar="N",
        help="at most N requests per --rate-window, then 429",
    )
    faults.add_argument(
        "--rate-window",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="the window --rate-limit counts requests over (default: %(default)s)",
    )
    faults.add_argument(
        "--max-url-length",
        type=int,
        default=None,
        metavar="N",
        help="answer 414 to longer request targets",
    )
    faults.add_argument(
        "--fail-metric-id",
        action="append",
        default=[],
        metavar="ID",
        help="series asking for ID answer 400 (repeatable)",
    )
    faults.add_argument(
        "--refuse-method",
        action="append",
        default=[],
        metavar="M",
        help="series asked with method M answer 400, whatever the ids (repeatable)",
    )
    faults.add_argument(
        "--fault-endpoint",
        action="append",
        default=[],
        metavar="NAME",
        help=f"endpoints faults apply to (default: {', '.join(sorted(DATA_ENDPOINTS))})",
    )


def fault_plan(ns: argparse.Namespace) -> FaultPlan:
    """The fault plan the flags describe; ConfigError when they do not make one."""
    probabilities = {f"p_{kind}": getattr(ns, f"p_{kind}") for kind in _FAULT_FLAGS}
    try:
        return FaultPlan(
            seed=ns.fault_seed,
            delay_seconds=ns.delay,
            retry_after=ns.retry_after,
            p_retry_after_date=ns.p_retry_after_date,
            retry_after_on_503=ns.retry_after_on_503,
            rate_limit=ns.rate_limit,
            rate_window=ns.rate_window,
            max_url_length=ns.max_url_length,
            fail_metric_ids=frozenset(ns.fail_metric_id),
            refuse_methods=frozenset(ns.refuse_method),
            fault_endpoints=frozenset(ns.fault_endpoint) or DATA_ENDPOINTS,
            **probabilities,
        )
    except ValueError as exc:
        raise ConfigError(f"simulate: {exc}") from exc


def build_cloud(ns: argparse.Namespace) -> SimCloud:
    """Generated runs (unless only --from-k6 files are given), then the recorded runs."""
    runs = ns.runs if ns.runs is not None else (0 if ns.from_k6 else DEFAULT_RUNS)
    try:
        cloud = generate_cloud(
            runs,
            ns.metrics,
            ns.points,
            ns.seed,
            pending_runs=ns.pending_runs,
            processing_error_runs=ns.processing_error_runs,
            missing_series=ns.missing_series,
            anchor=_anchor(ns.anchor),
        )
    except ValueError as exc:
        raise ConfigError(f"simulate: {exc}") from exc
    if len(ns.summary) > len(ns.from_k6) or len(ns.run_id) > len(ns.from_k6):
        raise ConfigError("simulate: each --summary and --run-id pairs with a --from-k6 FILE")
    for index, path in enumerate(ns.from_k6):
        run_id = ns.run_id[index] if index < len(ns.run_id) else max(cloud.runs, default=100000) + 1
        summary = ns.summary[index] if index < len(ns.summary) else None
        cloud.add_run(_load_k6(path, run_id, summary, ns.bucket))
    return cloud


def _anchor(text: str | None) -> datetime:
    """--anchor as a moment (no zone means UTC), or now."""
    if text is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"simulate: --anchor {text!r} is not an ISO 8601 date, e.g. 2024-06-03T12:00:00Z"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _load_k6(path: str, run_id: int, summary: str | None, bucket: float | None) -> RunData:
    # Imported here: reading k6 files is optional to everything else the simulator does.
    from harvester.simulator.k6import import load_k6_run

    if bucket is None:
        run = load_k6_run(path, run_id=run_id, summary_path=summary)
    else:
        run = load_k6_run(path, run_id=run_id, summary_path=summary, bucket_seconds=bucket)
    if run.unserved_submetrics:  # never dropped silently: say which, and what would serve them
        sys.stderr.write(
            f"simulate: warning: {path}: the thresholds on {', '.join(run.unserved_submetrics)} "
            "are not served (k6 writes thresholds on submetrics only to its summary): "
            "give --summary with the run's --summary-export file\n"
        )
    return run


def describe_runs(run_ids: Iterable[int]) -> str:
    """Run ids as ranges: "100001-100005, 200001"."""
    spans: list[list[int]] = []
    for run_id in sorted(run_ids):
        if spans and run_id == spans[-1][1] + 1:
            spans[-1][1] = run_id
        else:
            spans.append([run_id, run_id])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans) or "none"


def describe_cloud(cloud: SimCloud) -> str:
    """What there is to harvest, for the start line: projects, tests, run dates."""
    projects = ", ".join(f"{pid} ({p['name']})" for pid, p in sorted(cloud.projects.items()))
    tests = ", ".join(
        f"{tid} ({t['name']}, project {t['project_id']})" for tid, t in sorted(cloud.tests.items())
    )
    created = sorted(str(run["created"]) for run in cloud.runs_of(None) if run.get("created"))
    lines = [f"  projects: {projects or 'none'}", f"  tests: {tests or 'none'}"]
    if created:
        lines.append(f"  runs created {created[0]} .. {created[-1]}{_try_hint(cloud, created[0])}")
    return "\n".join(lines)


def _try_hint(cloud: SimCloud, oldest: str) -> str:
    """A `harvester runs` that finds the runs: of a project that has some, `--since 7d` when
    they are that recent (generated runs), else since the oldest one's day (a --from-k6
    recording or an --anchor of last month: `7d` listed none of them)."""
    projects = sorted({run["project_id"] for run in cloud.runs_of(None)})
    if not projects:
        return ""
    moment = utc_moment(oldest)
    recent = moment is not None and datetime.now(UTC) - moment < timedelta(days=7)
    return (
        f"; try: harvester runs --project {projects[0]} --since {'7d' if recent else oldest[:10]}"
    )


def _check_host(host: str, allowed: bool) -> None:
    if allowed or host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(f"simulate: refusing to listen on {host}; add --allow-non-loopback")


async def _serve(sim: Simulator) -> None:
    # The harvester's stop signals: SIGHUP (a closed terminal) too, unless nohup ignores
    # it; unwatched, it killed the simulator outright.
    with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async with sim:
            runs = describe_runs(sim.cloud.runs)
            sys.stderr.write(
                f"simulator listening on {sim.base_url} (token: {sim.token}); runs: {runs}\n"
                f"{describe_cloud(sim.cloud)}\n"
            )
            sys.stderr.flush()
            async for signum in signals:
                sys.stderr.write(f"simulator stopped by {signal.Signals(signum).name}\n")
                return


def run(ns: argparse.Namespace) -> int:
    """Serve until SIGINT, SIGTERM or SIGHUP (not under nohup); 0 then, as being stopped
    is how a server ends (the worker's way too). Bad flags raise ConfigError."""
    _check_host(ns.host, ns.allow_non_loopback)
    plan = fault_plan(ns)
    cloud = build_cloud(ns)
    sim = Simulator(cloud, token=ns.token, faults=plan, host=ns.host, port=ns.port)
    sim.exports.knobs = ExportKnobs(delay=ns.export_delay, gzip=ns.export_gzip)
    if ns.stack_id < 1:
        raise ConfigError(f"simulate: --stack-id must be a positive integer, got {ns.stack_id}")
    sim.state.v6.stack_id = ns.stack_id
    try:
        anyio.run(_serve, sim)
    except OSError as exc:
        raise ConfigError(
            f"simulate: cannot listen on {ns.host}:{ns.port} ({exc.strerror}); "
            "choose another --port (0 picks a free one)"
        ) from None
    return 0
