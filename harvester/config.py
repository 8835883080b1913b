"""Settings: one immutable object, built from flags > environment > TOML file > defaults.

Everything the harvester can be told lives in `Settings`; every value is checked here by
its parser (`values.py`) whatever its origin, so the rest of the code can trust it. Where
the values come from (file, environment, flags, k6's stored token) is `sources.py`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import SplitResult, urlsplit

from . import values
from .backends.v5_query import check_methods as check_v5_methods
from .compression import CODECS, check_level
from .errors import ConfigError
from .layout import LAYOUTS
from .methods import check_method
from .values import Parser

#: --format: the API's records, flat points (+ meta), Parquet, Singer messages on stdout.
FORMATS = ("raw", "points", "parquet", "singer")
#: The streams of --format singer (`formats.singer.STREAMS`).
SINGER_STREAMS = ("runs", "metrics", "points", "thresholds", "overviews", "checks", "other")


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


def _section(name: str, default: Any, parse: Parser | None = None, *, repr_: bool = True) -> Any:
    """A setting in TOML section `name`; `parse` checks it (by default, by its type)."""
    return field(default=default, metadata={"section": name, "parse": parse}, repr=repr_)


_POSITIVE = values.number(above=0)
_COUNT = values.whole(1)
#: The lowest --rate: one request every 100 s. Below it a job waits for ever in effect
#: (`--rate 1e-300` is one request every 10^300 s): a typo, not a wish.
MIN_RATE = 0.01
_RATE = values.number(MIN_RATE, hint=" (requests a second; 0.01 is one every 100 s)")
#: --rate-recovery's bounds: below 10 ms no calm is waited for at all (a 429's halving is
#: undone by the next answers: `1e-300` is a typo, not a wish), and past a day the rate
#: never steps back up in effect (`1e300`).
_RECOVERY = values.number(
    0.01, maximum=86_400, hint=" (seconds without a 429 before the rate steps up: 0.01 to 86400)"
)


@dataclass(frozen=True)
class Settings:
    """Every setting, with its default. The TOML file groups them in the sections named."""

    # [api]
    base_url: str = _section("api", "https://api.k6.io", values.nonempty)
    token: Secret = _section("api", Secret(""), repr_=False)
    rate: float = _section("api", 5.0, _RATE)
    rate_recovery: float = _section("api", 5.0, _RECOVERY)
    concurrency: int = _section("api", 8, _COUNT)
    max_url_length: int = _section("api", 8000, values.whole(200))
    connect_timeout: float = _section("api", 10.0, _POSITIVE)
    read_timeout: float = _section("api", 60.0, _POSITIVE)
    #: Seconds a whole request may take, its body included (a trickling server ends).
    request_timeout: float = _section("api", 300.0, _POSITIVE)
    #: MB an answer may hold (the largest the benches see is ~15 MB): past it the rest
    #: is not read and the run fails.
    max_answer_size: int = _section("api", 512, values.whole(1, 1 << 20))
    allow_insecure: bool = _section("api", False)
    #: Which API: "v2" (/loadtests/v2) or "v6" (/cloud/v6 runs, /cloud/v5 metrics).
    api: str = _section("api", "v2", values.choice("v2", "v6"))
    #: v6/v5: the Grafana stack (X-Stack-Id), or its URL to resolve the id from.
    stack_id: int | None = _section("api", None, values.optional(values.whole(1, 2**31 - 1)))
    stack_url: str | None = _section("api", None)
    # [retry]
    max_attempts: int = _section("retry", 6, _COUNT)
    retry_budget: float = _section("retry", 1200.0, _POSITIVE)
    backoff_base: float = _section("retry", 0.5, values.number(0))
    backoff_cap: float = _section("retry", 30.0, values.number(0))
    max_retry_after: float = _section("retry", 900.0, _POSITIVE)
    # [harvest]
    runs: tuple[int, ...] = _section("harvest", (), values.many(values.resource_id("runs")))
    runs_file: str | None = _section("harvest", None, values.optional(values.path))
    out: str = _section("harvest", "-", values.out_target)
    state: str | None = _section("harvest", None, values.optional(values.path))
    #: S3-compatible store for --out s3://... (else AWS_ENDPOINT_URL, else AWS itself).
    s3_endpoint_url: str | None = _section("harvest", None)
    #: Seconds a job's lease on an object-store prefix lasts unrenewed (objectstore.leases).
    s3_lease: float = _section("harvest", 60.0, _POSITIVE)
    methods: tuple[str, ...] = _section("harvest", (), values.many(values.nonempty))
    details: bool = _section("harvest", False)
    run_record: bool = _section("harvest", False)
    runs_in_flight: int = _section("harvest", 4, _COUNT)
    channel_size: int = _section("harvest", 16, _COUNT)
    #: Mode of the archive files: octal ("0600", "0640") or "umask" to honour the umask.
    file_mode: str = _section("harvest", "0600", values.file_mode)
    force: bool = _section("harvest", False)
    export_csv: bool = _section("harvest", False)
    export_timeout: float = _section("harvest", 600.0, _POSITIVE)
    #: v6: seconds between the points of a series (query_range_k6's `step`).
    step: int = _section("harvest", 60, _COUNT)
    #: The archive files' compression (issue 11): none, gzip or zstd; its level.
    compress: str = _section("harvest", "none", values.choice(*CODECS))
    #: How records are written: raw (the API's objects), points (one line a point),
    #: parquet, or singer (Singer messages on stdout).
    format: str = _section("harvest", "raw", values.choice(*FORMATS))
    #: --format singer: a Singer state (the last STATE's value); the runs it lists are done.
    singer_state: str | None = _section("harvest", None, values.optional(values.path))
    #: --format singer: only these streams (default: all).
    singer_streams: tuple[str, ...] = _section(
        "harvest", (), values.many(values.choice(*SINGER_STREAMS))
    )
    compress_level: int | None = _section("harvest", None, values.optional(values.whole(1, 22)))
    #: Where each run's files go under --out: flat (the root) or date (YYYY/MM/DD/).
    layout: str = _section("harvest", "flat", values.choice(*LAYOUTS))
    # [discovery]
    projects: tuple[int, ...] = _section(
        "discovery", (), values.many(values.resource_id("projects"))
    )
    tests: tuple[int, ...] = _section("discovery", (), values.many(values.resource_id("tests")))
    since: str | None = _section("discovery", None, values.optional(values.when))
    until: str | None = _section("discovery", None, values.optional(values.when))
    page_size: int = _section("discovery", 50, _COUNT)
    #: Every project the token sees: v2 those of every organization (`/v3/organizations`),
    #: v6 those of the stack (`/cloud/v6/projects`); besides --project/--test.
    all_projects: bool = _section("discovery", False)
    #: v2: every project of these organizations (`/v3/organizations/{id}/projects`).
    organizations: tuple[int, ...] = _section(
        "discovery", (), values.many(values.whole(1, values.INT64_MAX))
    )
    # [worker]
    interval: str = _section("worker", "5m", values.duration)
    listen_host: str = _section("worker", "127.0.0.1", values.nonempty)
    listen_port: int = _section("worker", 9464, values.whole(0, 65535))
    # [output]
    progress: str = _section("output", "auto", values.choice("auto", "on", "off"))
    log_level: str = _section("output", "info", values.choice("quiet", "info", "verbose"))

    def __post_init__(self) -> None:
        # Values built in Python meet the same parsers as flags, environment and file.
        for name in FIELDS:
            object.__setattr__(self, name, parse_value(name, getattr(self, name), name))
        _validate(self)

    @property
    def to_stdout(self) -> bool:
        return self.out == "-"

    @property
    def to_object_store(self) -> bool:
        return values.URL_SCHEME.match(self.out) is not None

    @property
    def on_disk(self) -> bool:
        """--out is a directory (not stdout, not an object store)."""
        return not (self.to_stdout or self.to_object_store)

    @property
    def file_mode_bits(self) -> int | None:
        """The archive files' mode, or None to leave it to the umask."""
        return None if self.file_mode == "umask" else int(self.file_mode, 8)


FIELDS = {f.name: f for f in fields(Settings)}
SECTIONS = {f.metadata["section"] for f in fields(Settings)}
#: Parsers for settings declared without one, by their annotated type.
_BY_TYPE: dict[str, Parser] = {
    "bool": values.boolean, "int": values.whole(), "float": values.number(),
    "str": values.text, "str | None": values.optional(values.text),
    "tuple[int, ...]": values.many(values.whole()), "tuple[str, ...]": values.many(values.text),
    "int | None": values.optional(values.whole()), "float | None": values.optional(values.number()),
    "Secret": lambda raw: raw if isinstance(raw, Secret) else Secret(values.text(raw)),
}  # fmt: skip


def parse_value(name: str, raw: Any, origin: str) -> Any:
    """`raw` as setting `name` wants it; a bad value is a `ConfigError` naming `origin`
    (a flag, an environment variable, or the file, section and key)."""
    spec = FIELDS[name]
    parse = spec.metadata["parse"] or _BY_TYPE[str(spec.type)]
    try:
        value = parse(raw)
    except ValueError as exc:
        shown = "'***'" if name == "token" else values.shown(raw)
        raise ConfigError(f"{origin} {shown} {exc}") from None
    if isinstance(value, Secret):
        # A token read from a file often ends with a newline: it is not part of it.
        value = Secret(value.reveal().strip())
    return value


def _validate(s: Settings) -> None:
    """What involves more than one setting; each on its own was checked by its parser."""
    if s.backoff_cap < s.backoff_base:
        raise ConfigError("backoff_cap must be at least backoff_base")
    if s.retry_budget < s.max_retry_after:
        raise ConfigError(
            f"retry_budget ({s.retry_budget:g}s) is shorter than max_retry_after "
            f"({s.max_retry_after:g}s): a run could not wait as long as the server may ask; "
            "raise --retry-budget or lower --max-retry-after"
        )
    _validate_api(s)
    _validate_base_url(s.base_url, s.allow_insecure)
    if s.export_csv and s.to_stdout:
        raise ConfigError(
            "--export-csv writes <test_run_id>.csv files beside the NDJSON: give --out DIR"
        )
    _validate_output(s)
    if any(not ch.isprintable() or ch.isspace() for ch in s.token.reveal()):
        raise ConfigError(
            "the API token contains spaces or control characters; check K6_CLOUD_TOKEN "
            "(or --token) for a stray quote, space or line break"
        )


def _validate_output(s: Settings) -> None:
    if s.format == "singer" and not s.to_stdout:
        raise ConfigError(
            "--format singer writes Singer messages to stdout for a target to read: "
            "`harvester harvest --format singer` without --out (or with --out -), piped "
            "into the target (the worker keeps an archive: raw, points or parquet)"
        )
    if (s.singer_state or s.singer_streams) and s.format != "singer":
        raise ConfigError("--singer-state and --singer-stream are for --format singer: add it")
    if s.format not in ("raw", "singer") and s.to_stdout:
        raise ConfigError(f"--format {s.format} writes files: give --out DIR or s3://")
    if s.format == "parquet":
        from .formats.parquet import require_pyarrow

        require_pyarrow()
    if s.compress != "none" and s.to_stdout:
        raise ConfigError(
            f"--compress {s.compress} compresses the files of --out DIR or s3://; on stdout "
            "pipe through gzip or zstd instead"
        )
    if s.layout != "flat" and s.to_stdout:
        raise ConfigError(f"--layout {s.layout} places files under --out DIR; give a directory")
    problem = check_level(s.compress, s.compress_level)
    if problem:
        raise ConfigError(problem)


#: v6 has stacks, not organizations: its projects are named with --project.
V6_NO_ORGANIZATIONS = (
    "--organization selects the organizations of the v2/v3 API; with --api v6 name the "
    "projects with --project, or take the stack's with --all-projects"
)


def check_methods(api: str, methods: Sequence[str], origin: str = "--method") -> None:
    """Each of `methods` a spelling `api` is known to accept; `origin` says where they
    were written (a flag, or a config file's key)."""
    if api == "v2":
        for method in methods:
            check_method(method, origin)
    else:
        check_v5_methods(methods, origin)


def _validate_api(s: Settings) -> None:
    check_methods(s.api, s.methods)
    if s.api == "v2":
        return
    if s.organizations:
        raise ConfigError(V6_NO_ORGANIZATIONS)
    if s.stack_url is not None:
        parts = url_parts(s.stack_url)
        if parts is None or parts.scheme != "https" or not parts.hostname:
            raise ConfigError(
                f"stack URL {shown_url(s.stack_url)!r} is not an https URL; use e.g. "
                "https://NAME.grafana.net"
            )
        refuse_userinfo("stack URL", s.stack_url, "it would be sent to the API (X-Stack-Url)")
    if s.stack_id is None and s.stack_url is None:
        raise ConfigError(
            "--api v6 needs the Grafana stack: --stack-id N (or K6_CLOUD_STACK_ID) or "
            "--stack-url https://NAME.grafana.net"
        )
    if s.export_csv:
        raise ConfigError("--export-csv needs --api v2: the v6 API has no CSV export")


def url_parts(url: str) -> SplitResult | None:
    """`url` split, or None when it does not parse (`http://[::1`, a port past 65535 or
    not a number): urlsplit and yarl raise ValueError for those, a traceback otherwise."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (parsed on access: raises for a bad port)
    except ValueError:
        return None
    return parts


#: The user and password part of a URL (`//user:pw@`), whether or not the URL parses.
_USERINFO = re.compile(r"//([^/?#@]*)@")


def shown_url(url: str) -> str:
    """`url` as a message may show it: a user name or password in it made `user:***`."""
    return _USERINFO.sub(lambda found: f"//{found[1].split(':', 1)[0]}:***@", url, count=1)


def refuse_userinfo(what: str, url: str, why: str) -> None:
    """A URL setting holding a user name or password is refused (`why`: where it would
    go): none of them takes one, and a message must not show it."""
    if _USERINFO.search(url):
        raise ConfigError(
            f"{what} {shown_url(url)!r} holds a user name or password: {why}; remove the "
            "'USER:PASSWORD@' part"
        )


def _validate_base_url(url: str, allow_insecure: bool) -> None:
    parts = url_parts(url)
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"base URL {shown_url(url)!r} is not an http(s) URL; use e.g. https://api.k6.io"
        )
    refuse_userinfo("base URL", url, "the API takes the token alone")
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


def load_settings(
    flags: Mapping[str, Any] | None = None,
    *,
    config_file: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """The settings from flags > environment > file > k6's stored token > defaults
    (`sources.load` also tells where each came from)."""
    from .sources import load

    return load(flags, config_file=config_file, environ=environ).settings


def with_runs(settings: Settings, extra: Iterable[int]) -> Settings:
    """The settings with more run ids appended (from a runs file or discovery), deduplicated."""
    combined = tuple(dict.fromkeys((*settings.runs, *extra)))
    return replace(settings, runs=combined)
