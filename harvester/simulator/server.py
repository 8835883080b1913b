"""`Simulator`: the simulated API served on loopback for the lifetime of an `async with`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from types import TracebackType
from typing import Self

from aiohttp import web

from harvester.simulator.app import build_app
from harvester.simulator.cloud import SimCloud
from harvester.simulator.exports import ExportDesk, build_file_app
from harvester.simulator.faults import FaultPlan
from harvester.simulator.requestlog import LoggedRequest, RequestLog
from harvester.simulator.state import SIM_STATE, SimState

#: Longest request line aiohttp accepts here (its default, 8190, would answer a long
#: `ids[]` list with its own 400 before `FaultPlan.max_url_length` could say 414).
MAX_REQUEST_LINE = 1 << 20


class Simulator:
    """Serve `cloud` on `host:port` (port 0: a free one) while inside `async with`.

    >>> async with Simulator(generate_cloud()) as sim:
    ...     url = sim.url("/loadtests/v2/metrics?test_run_id=100001")
    """

    def __init__(
        self,
        cloud: SimCloud,
        *,
        token: str = "sim-token",
        faults: FaultPlan | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.cloud = cloud
        self.token = token
        self.host = host
        self.port = port
        self.app = build_app(cloud, token=token, faults=faults)
        self._runner: web.AppRunner | None = None
        self._file_runner: web.AppRunner | None = None

    async def __aenter__(self) -> Self:
        # No access log: a benchmark makes thousands of requests a second.
        runner = web.AppRunner(
            self.app, access_log=None, shutdown_timeout=1.0, max_line_size=MAX_REQUEST_LINE
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        try:
            await self._serve_files()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def _serve_files(self) -> None:
        """The export files' host: the same address on another port, so another origin
        (k6 Cloud hands out signed URLs on a storage host)."""
        runner = web.AppRunner(
            build_file_app(self.exports, self.cloud), access_log=None, shutdown_timeout=1.0
        )
        await runner.setup()
        self._file_runner = runner
        await web.TCPSite(runner, self.host, 0).start()
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.exports.file_base = f"http://{host}:{runner.addresses[0][1]}"

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for name in ("_file_runner", "_runner"):
            runner = getattr(self, name)
            if runner is not None:
                setattr(self, name, None)
                await runner.cleanup()

    @property
    def state(self) -> SimState:
        return self.app[SIM_STATE]

    @property
    def base_url(self) -> str:
        """e.g. "http://127.0.0.1:43123" (the real port once started)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def url(self, path: str) -> str:
        """The absolute URL of `path` (which starts with "/")."""
        return self.base_url + path

    @property
    def headers(self) -> dict[str, str]:
        """The Authorization header the simulator accepts."""
        return {"Authorization": f"Token {self.token}"}

    @property
    def v6_headers(self) -> dict[str, str]:
        """The headers v6 and v5 requests need: bearer token and stack id."""
        return {"Authorization": f"Bearer {self.token}", "X-Stack-Id": str(self.stack_id)}

    @property
    def stack_id(self) -> int:
        return self.state.v6.stack_id

    @property
    def exports(self) -> ExportDesk:
        """The CSV export jobs, their knobs (`exports.knobs`) and the file server's
        request log (`exports.requests`)."""
        return self.state.exports

    @property
    def log(self) -> RequestLog:
        return self.state.log

    @property
    def faults(self) -> FaultPlan:
        return self.state.plan

    @faults.setter
    def faults(self, plan: FaultPlan) -> None:
        """Switch plans while serving; the new plan's fault sequence starts from its seed."""
        self.state.plan = plan

    def set_outage(self, on: bool) -> None:
        """While on, every request answers 503."""
        self.state.outage = on

    @property
    def outage(self) -> bool:
        return self.state.outage

    @property
    def rate_limit_hits(self) -> int:
        """Requests refused by the sliding-window rate limit (not counted as faults)."""
        return self.state.rate_limit_hits

    @property
    def fault_counts(self) -> Counter[str]:
        """Injected faults so far, by kind ("500", "reset", "delay", ...)."""
        return self.state.fault_counts

    def requests_for(self, *endpoints: str) -> list[LoggedRequest]:
        """Logged requests to any of `endpoints` ("series", "metrics", ...)."""
        return self.log.for_endpoint(*endpoints)

    def warm(self, methods: Iterable[str | None] = (None,)) -> int:
        """Render every body now (before a benchmark); returns the number of series."""
        return self.state.warm(methods)
