"""What harvesting v2 runs asks, request by request, batched as `run_harvest` batches:
the bench's minimum (`V2Backend.minimum_plan`), so the floor and the count it is held to
come from the harvester's own planner, not from a copy of it in the bench.

The default aggregation (no `--method`), as the bench runs the harvester: per run 1
metrics, the series in the fewest batches the URL cap and the points bound allow, one
more batch re-asking the metrics no answer held, 1 thresholds and 1 run overview. The
job's first run asks its smallest batch (at most `PROBE_IDS` ids) first and the rest
sized by what that answer measured, which may cost it one request more than later runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..batching import PROBE_IDS, SeriesBatcher, series_query

V2 = "/loadtests/v2"


@dataclass
class V2Plan:
    """The requests of the runs planned so far, and how their series were batched."""

    #: path and query of every request, in the order the harvester may ask them
    paths: list[str] = field(default_factory=list)
    #: series requests of the planned batches (the gaps' re-asks apart)
    series_requests: int = 0
    #: what the job's first probe adds to its run
    probe_extra: int = 0
    #: series requests re-asking metrics without a serie
    reasks: int = 0
    #: how many ids fit in one series request under the URL cap
    ids_per_request: int = 0


def plan_run(
    plan: V2Plan,
    run_id: int,
    ids: Sequence[str],
    gaps: Sequence[str],
    *,
    points: int,
    max_url_length: int,
) -> None:
    """Add the requests of one run (`ids`: its metrics; `gaps`: those without a serie;
    `points`: a serie's length) to `plan`; the first run planned is the job's first."""
    ids = list(ids)
    batcher = SeriesBatcher(max_url_length)
    fixed = len(f"{V2}/series?{series_query(run_id, [], None)}")
    first_run = not plan.paths
    batcher.guess(None if first_run else points)
    batches = batcher.plan(ids, fixed)
    if batches:
        last = batches[-1]
        first = last[: PROBE_IDS if first_run else None]
        batcher.learn_points(points)
        rest = ids[: len(ids) - len(last)] + last[len(first) :]
        steady = len(batcher.plan(ids, fixed))  # as every later run plans
        batches = [first, *batcher.plan(rest, fixed)]
        if first_run:
            plan.probe_extra = max(0, len(batches) - steady)
    reasks = batcher.plan(list(gaps), fixed)
    plan.reasks += len(reasks)
    plan.series_requests += len(batches)
    cost = batcher.id_cost(ids[0]) if ids else 1
    plan.ids_per_request = (max_url_length - fixed) // cost
    plain = f"test_run_id={run_id}"
    plan.paths.append(f"{V2}/metrics?{plain}")
    plan.paths += [f"{V2}/series?{series_query(run_id, b, None)}" for b in batches + reasks]
    plan.paths += [f"{V2}/thresholds?{plain}", f"{V2}/run-overviews?{plain}"]
