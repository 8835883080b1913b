"""The v2 backend's `RunFetcher`: today's `RunHarvest` (`run_harvest.py`), unchanged, and
with `--export-csv` the run's CSV export beside it (`export.py`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from ..api import CloudApi, JsonObject
from ..config import Settings
from ..export import CsvExporter, ExportedFile, summary_fields
from ..layout import Places
from ..records import Message
from ..run_harvest import RunHarvest


class V2Fetcher:
    """Fetches one run through `/loadtests/v2` into the channel."""

    def __init__(self, settings: Settings, api: CloudApi, places: Places | None = None) -> None:
        self.settings = settings
        self.api = api
        self._batch_slots = anyio.CapacityLimiter(settings.concurrency)
        self._exporter = (
            CsvExporter(
                api,
                Path(settings.out),
                timeout=settings.export_timeout,
                replace=settings.force,
                file_mode=settings.file_mode_bits,
                places=places,
            )
            if settings.export_csv
            else None
        )

    async def run_object(self, run_id: int) -> JsonObject:
        return await self.api.get_run(run_id)

    async def fetch(
        self, run_id: int, run: JsonObject | None, send: MemoryObjectSendStream[Message]
    ) -> dict[str, Any]:
        harvest = RunHarvest(
            self.api,
            run_id,
            send,
            max_url_length=self.settings.max_url_length,
            methods=self.settings.methods,
            details=self.settings.details,
            batch_slots=self._batch_slots,
        )
        if run is None and self.settings.run_record:
            run = await self.api.get_run(run_id)
        return await self._harvest_and_export(harvest, run)

    async def _harvest_and_export(
        self, harvest: RunHarvest, run_object: JsonObject | None
    ) -> dict[str, Any]:
        """The run's records and, with --export-csv, its CSV file, side by side (an export
        may take minutes to be ready). The CSV is published before this returns, so
        before the run's NDJSON."""
        exporter = self._exporter
        if exporter is None:
            return await harvest.run(run_object)
        exported: list[ExportedFile] = []

        async def export() -> None:
            exported.append(await exporter.export(harvest.run_id))

        async with anyio.create_task_group() as tg:
            tg.start_soon(export)
            summary = await harvest.run(run_object)
        return {**summary, **summary_fields(exported[0])}
