"""The v2 backend (`/loadtests/v2`): discovery (`v2_discovery.py`), the projects of the
v3 organization lists (`projects.py`), and its `RunFetcher`: `RunHarvest`
(`run_harvest.py`) and with `--export-csv` the run's CSV export beside it (`export.py`).
After a job whose every answer was 404/410 it tells whether v2 is gone (`v2_gone.py`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from ..api import CloudApi, JsonObject
from ..channel import Channel
from ..config import Settings
from ..export import CsvExporter, ExportedFile, summary_fields
from ..layout import Places
from ..projects import project_rows
from ..run_harvest import RunHarvest
from ..transport import Transport
from . import v2_discovery, v2_plan
from .v2_gone import check_v2_gone

if TYPE_CHECKING:
    from ..selection import Discovery, Selection
    from ..state import HarvestState


class V2Backend:
    """`base.Backend` for `/loadtests/v2` (and the v3 organization lists)."""

    def __init__(self, settings: Settings, transport: Transport) -> None:
        self.settings = settings
        self.transport = transport
        self.api = CloudApi(transport, output_format=settings.format)

    async def prepare(self) -> None:
        return None  # the token is all v2 needs

    async def discover(self, selection: Selection, *, state: HarvestState | None) -> Discovery:
        parallel = self.settings.concurrency
        return await v2_discovery.discover(self.api, selection, parallel=parallel, state=state)

    def fetcher(self, places: Places | None = None, spool: Path | None = None) -> V2Fetcher:
        return V2Fetcher(self.settings, self.api, places, spool)

    async def project_rows(self, only: Sequence[int]) -> list[JsonObject]:
        s = self.settings
        return await project_rows(self.api, only, page_size=s.page_size, parallel=s.concurrency)

    async def after_job(self) -> None:
        await check_v2_gone(self.transport, self.transport.stats)

    def minimum_plan(
        self, plan: v2_plan.V2Plan, run_id: int, ids: Sequence[str], gaps: Sequence[str], *,
        points: int,
    ) -> None:  # fmt: skip
        """Add what harvesting run `run_id` asks at the least to `plan`, for the bench
        (`v2_plan.plan_run`)."""
        max_url = self.settings.max_url_length
        v2_plan.plan_run(plan, run_id, ids, gaps, points=points, max_url_length=max_url)


class V2Fetcher:
    """Fetches one run through `/loadtests/v2` into the channel."""

    def __init__(
        self,
        settings: Settings,
        api: CloudApi,
        places: Places | None = None,
        spool: Path | None = None,
    ) -> None:
        self.settings = settings
        self.api = api
        self._batch_slots = anyio.CapacityLimiter(settings.concurrency)
        self._exporter = (
            CsvExporter(
                api,
                spool if spool is not None else Path(settings.out),
                timeout=settings.export_timeout,
                replace=settings.force,
                file_mode=settings.file_mode_bits,
                places=places if settings.on_disk else None,  # s3: a flat local spool
            )
            if settings.export_csv
            else None
        )

    async def run_object(self, run_id: int) -> JsonObject:
        return await self.api.get_run(run_id)

    async def fetch(self, run_id: int, run: JsonObject | None, send: Channel) -> dict[str, Any]:
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
