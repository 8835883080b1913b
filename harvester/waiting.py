"""Runs left waiting: discovery saw them still running or processing, the state file
remembers them, and every later job whose selectors cover them asks about each one
(the backend's run by id: `GET /loadtests/v2/runs/{id}` or `/cloud/v6/test_runs/{id}`,
through the same rate gate) whatever its --since/--until, until it is final. So a run
still processing at 02:30 is not lost when it has left the next night's `--since 1d`
window. Whether a run is final is the backend's `Judge`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace

from .api import JsonObject
from .errors import JOB_FATAL, ApiError, NotFound
from .runstatus import PendingRun, int_field
from .scheduler import RunTarget
from .selection import Discovery, Selection
from .state import HarvestState, WaitingRun

#: A run object -> a run to harvest now, or one left for later (the API's rule).
Judge = Callable[[JsonObject], RunTarget | PendingRun]
#: A run's object by id.
GetRun = Callable[[int], Awaitable[JsonObject]]


def waiting_run(pending: PendingRun, tests: Sequence[int]) -> WaitingRun:
    """What the state keeps of a pending run: its test and project, and the selector that
    found it (`tests`: the job's --test ids; otherwise it came through its project)."""
    test_id, project_id = int_field(pending.run, "test_id"), int_field(pending.run, "project_id")
    selector = f"test {test_id}" if test_id in tests else f"project {project_id}"
    return WaitingRun(pending.run_id, pending.reason, test_id, project_id, selector)


async def follow_waiting(
    state: HarvestState, selection: Selection, found: Discovery, get_run: GetRun, judge: Judge
) -> None:
    """Remember the runs left for later; add those earlier jobs left that are final now."""
    state.remember_waiting(waiting_run(p, selection.tests) for p in found.pending)
    seen = [t.run_id for t in found.targets] + [p.run_id for p in found.pending]
    ready, pending, found.rechecked = await recheck(
        get_run, judge, state, selection.projects, selection.tests, seen
    )
    found.targets = sorted([*found.targets, *ready], key=lambda t: t.run_id)
    found.pending = sorted([*found.pending, *pending], key=lambda p: p.run_id)


async def recheck(
    get_run: GetRun,
    judge: Judge,
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
            verdict = judge(await get_run(waiting.run_id))
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
