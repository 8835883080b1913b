"""What the rest of the harvester needs from an API backend (`Backend`): discover runs,
fetch one run's records into the channel (`RunFetcher`), list the projects, say after a
job whether the API itself is gone, and the least requests a run takes (for the bench).

`choose.backend_for` picks the job's backend from `--api`; nothing else asks which API
it is. Records travel as the same `Lines` messages whatever the API, so the scheduler,
sinks, state, progress and the worker never learn which one they serve.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..channel import Channel

if TYPE_CHECKING:
    from ..layout import Places
    from ..selection import Discovery, Selection
    from ..state import HarvestState

JsonObject = dict[str, Any]


class RunFetcher(Protocol):
    async def run_object(self, run_id: int) -> dict[str, Any]:
        """The run's own object (`--layout date` places a run by its `created`)."""
        ...

    async def fetch(self, run_id: int, run: JsonObject | None, send: Channel) -> dict[str, Any]:
        """Send the run's records into `send` and return its summary (with
        `incomplete_reason` when the run is harvested but not complete)."""
        ...


class Backend(Protocol):
    """One k6 Cloud API over the job's transport."""

    async def prepare(self) -> None:
        """Whatever the API needs once before the first request (v6: the stack id)."""
        ...

    async def discover(self, selection: Selection, *, state: HarvestState | None) -> Discovery:
        """The runs `selection` leads to, sorted into targets and runs left for later."""
        ...

    def fetcher(self, places: Places | None = None, spool: Path | None = None) -> RunFetcher:
        """What fetches one run's records for the scheduler (`places`: where the job's
        runs go, for files a backend writes beside the records: v2's CSV export; `spool`:
        the local directory for those files when the runs go to an object store)."""
        ...

    async def project_rows(self, only: Sequence[int]) -> list[JsonObject]:
        """`harvester projects`: one row per project (`organization_id`, `organization`,
        `project_id`, `project`, `tests`), of the organizations in `only` when given."""
        ...

    async def after_job(self) -> None:
        """Told when a job or a discovery ends uninterrupted: raise when the API looks
        gone (v2: every answer so far a 404 or 410)."""
        ...
