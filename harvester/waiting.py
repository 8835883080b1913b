"""Runs left waiting: discovery saw them still running or processing, the state file
remembers them, and every later job whose selectors cover them asks about each one
(`GET /loadtests/v2/runs/{id}`, through the same rate gate) whatever its --since/--until,
until it is final. So a run still processing at 02:30 is not lost when it has left the
next night's `--since 1d` window."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from .api import CloudApi
from .errors import JOB_FATAL, ApiError, NotFound
from .runstatus import PendingRun, classify, int_field
from .scheduler import RunTarget
from .state import HarvestState, WaitingRun


def waiting_run(pending: PendingRun, tests: Sequence[int]) -> WaitingRun:
    """What the state keeps of a pending run: its test and project, and the selector that
    found it (`tests`: the job's --test ids; otherwise it came through its project)."""
    test_id, project_id = int_field(pending.run, "test_id"), int_field(pending.run, "project_id")
    selector = f"test {test_id}" if test_id in tests else f"project {project_id}"
    return WaitingRun(pending.run_id, pending.reason, test_id, project_id, selector)


async def recheck(
    api: CloudApi,
    state: HarvestState,
    projects: Sequence[int],
    tests: Sequence[int],
    seen: Iterable[int],
) -> tuple[list[RunTarget], list[PendingRun], int]:
    """Ask about each run an earlier job left waiting for these projects or tests that
    the listing (`seen`) did not show: (runs final now, runs still waiting, runs asked).
    A run the API no longer has is forgotten; one whose answer fails stays waiting."""
    earlier = {w.run_id: w for w in state.waiting(projects, tests)}
    for run_id in seen:
        earlier.pop(run_id, None)
    ready: list[RunTarget] = []
    pending: list[PendingRun] = []
    for waiting in earlier.values():  # few, and the rate gate paces them anyway
        try:
            verdict = classify(await api.get_run(waiting.run_id))
        except NotFound:
            state.forget(waiting.run_id)
            continue
        except ApiError as exc:
            if isinstance(exc, JOB_FATAL):
                raise
            verdict = PendingRun(waiting.run_id, f"could not ask: {exc}", {"id": waiting.run_id})
        if isinstance(verdict, RunTarget):
            ready.append(verdict)
        else:
            pending.append(verdict)
            state.remember_waiting([replace(waiting, reason=verdict.reason)])
    return ready, pending, len(earlier)
