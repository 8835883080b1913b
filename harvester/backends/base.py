"""What the scheduler needs from an API backend: fetch one run's records into the channel.

The v2 path is the scheduler's own (`RunHarvest`, `run_harvest.py`); a backend that
implements `RunFetcher` (v6: `v6.V6Fetcher`) replaces it for a job. Records travel as
the same `Lines` messages, so sinks, state, progress and the worker never learn which
API they serve.
"""

from __future__ import annotations

from typing import Any, Protocol

from anyio.streams.memory import MemoryObjectSendStream

from ..records import Message


class RunFetcher(Protocol):
    async def run_object(self, run_id: int) -> dict[str, Any]:
        """The run's own object (`--layout date` places a run by its `created`)."""
        ...

    async def fetch(
        self, run_id: int, run: dict[str, Any] | None, send: MemoryObjectSendStream[Message]
    ) -> dict[str, Any]:
        """Send the run's records into `send` and return its summary (with
        `incomplete_reason` when the run is harvested but not complete)."""
        ...
