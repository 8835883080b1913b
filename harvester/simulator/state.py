"""The running simulator's state: the cloud, fault plan, counters, log and rendered bodies.

Shared by the middleware (`app.py`) and the endpoints (`routes.py`); `Simulator` exposes it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import orjson
from aiohttp import web

from harvester.simulator.cloud import SimCloud
from harvester.simulator.exports import ExportDesk
from harvester.simulator.faults import Fault, FaultDecider, FaultPlan, SlidingWindow
from harvester.simulator.render import RunCache
from harvester.simulator.requestlog import RequestLog
from harvester.simulator.v5_data import V5View
from harvester.simulator.v6_model import V6Knobs


class SimError(Exception):
    """An error answer of the API: a status and a message for the JSON body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        fault: str | None = None,
        code: str | None = None,
        target: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fault = fault
        #: v6/v5 errors carry a string code (and maybe a target); v2's code is the status.
        self.code = code
        self.target = target


def json_error(
    status: int,
    message: str,
    headers: dict[str, str] | None = None,
    *,
    code: str | None = None,
    target: str | None = None,
) -> web.Response:
    """The API's error body: v2 {"error": {"message": ..., "code": status}}; v6/v5 (with
    `code`) {"error": {"message": ..., "code": "...", "target": ...}}."""
    error: dict[str, object] = {"message": message, "code": status if code is None else code}
    if code is not None:
        error["target"] = target
    body = orjson.dumps({"error": error})
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def json_body(body: bytes) -> web.Response:
    """A 200 with an already rendered JSON body."""
    return web.Response(body=body, content_type="application/json")


class SimState:
    """Everything the running app knows and counts; `Simulator` exposes it to tests."""

    def __init__(self, cloud: SimCloud, token: str, plan: FaultPlan) -> None:
        self.cloud = cloud
        self.token = token
        self.log = RequestLog()
        self.outage = False
        self.rate_limit_hits = 0
        self.fault_counts: Counter[str] = Counter()
        self._caches: dict[int, RunCache] = {}
        self._views: dict[int, V5View] = {}
        self.v6 = V6Knobs()
        self.exports = ExportDesk()
        self.plan = plan

    @property
    def plan(self) -> FaultPlan:
        return self._decider.plan

    @plan.setter
    def plan(self, plan: FaultPlan) -> None:
        """A new plan starts its fault sequence from its seed and empties the rate window."""
        self._decider = FaultDecider(plan)
        self.omitted: set[str] = set()  # the `omit_once` ids already left out
        limit = plan.rate_limit
        self.window = SlidingWindow(limit, plan.rate_window) if limit is not None else None

    def draw_fault(self, endpoint: str) -> Fault | None:
        return self._decider.draw() if self._decider.applies_to(endpoint) else None

    def run_cache(self, run_id: int) -> RunCache | None:
        """The cache of a run, rebuilt when `cloud.add_run` replaced the run."""
        data = self.cloud.runs.get(run_id)
        if data is None:
            return None
        cache = self._caches.get(run_id)
        if cache is None or cache.data is not data:
            cache = self._caches[run_id] = RunCache(data)
        return cache

    def v5_view(self, run_id: int) -> V5View | None:
        """The v5 view of a run, rebuilt when `cloud.add_run` replaced the run."""
        data = self.cloud.runs.get(run_id)
        if data is None:
            return None
        view = self._views.get(run_id)
        if view is None or view.data is not data:
            view = self._views[run_id] = V5View(data)
        return view

    def warm(self, methods: Iterable[str | None] = (None,)) -> int:
        """Render every body of every run now; returns the number of series rendered."""
        asked = tuple(methods)
        total = 0
        for run_id in list(self.cloud.runs):
            cache = self.run_cache(run_id)
            total += cache.warm(asked) if cache is not None else 0
        return total


SIM_STATE = web.AppKey("sim_state", SimState)
