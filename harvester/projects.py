"""Organizations and projects a token sees (the v3 lists): the `--organization` and
`--all-projects` selectors of discovery, and the rows of `harvester projects`.

The v3 lists are documented without paging: `page`/`page_size` are sent, and followed
only when an answer carries a `meta` with its count. Every request goes through the same
`CloudApi` (rate gate, retries, status rules) as the rest of discovery.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import anyio

from .api import CloudApi, JsonObject
from .config import Settings
from .errors import ConfigError, NotFound
from .paging import Page, each, read_pages
from .ratelimit import RateGate
from .stats import HarvestStats
from .transport import Transport

if TYPE_CHECKING:
    from .selection import Selection


async def organizations(api: CloudApi, page_size: int) -> list[JsonObject]:
    async def fetch(page: int, size: int) -> Page:
        return await api.list_organizations(page, size)

    return await read_pages(fetch, page_size, whole_without_count=True)


async def projects_of(api: CloudApi, organization_id: int, page_size: int) -> list[JsonObject]:
    async def fetch(page: int, size: int) -> Page:
        return await api.list_projects(organization_id, page, size)

    return await read_pages(fetch, page_size, whole_without_count=True)


def _ids(items: list[JsonObject]) -> list[int]:
    return [item["id"] for item in items if isinstance(item.get("id"), int)]


async def selected_projects(api: CloudApi, selection: Selection, not_found: list[str]) -> list[int]:
    """`--project`s first, then the projects of each selected organization, once each:
    the `--organization`s, and with `--all-projects` every organization the token sees.
    An organization the API does not know (404) is named in `not_found`."""
    ids: dict[int, None] = dict.fromkeys(selection.projects)
    chosen = list(selection.organizations)
    if selection.all_projects:
        chosen += _ids(await organizations(api, selection.page_size))
    for organization_id in dict.fromkeys(chosen):
        try:
            projects = await projects_of(api, organization_id, selection.page_size)
        except NotFound as exc:
            not_found.append(
                f"organization {organization_id} does not exist (GET {exc.url} answered 404)"
            )
            continue
        ids.update(dict.fromkeys(_ids(projects)))
    return list(ids)


# --- `harvester projects` ---------------------------------------------------------------


async def project_rows(
    api: CloudApi, only: Sequence[int] = (), *, page_size: int = 50, parallel: int = 4
) -> list[JsonObject]:
    """One row per project of every organization the token sees (of those in `only`, when
    given), with its number of tests: `meta.count` of a one-item tests page (None when
    the answer has no count). The counts are asked `parallel` at a time."""
    seen = await organizations(api, page_size)
    unknown = set(only) - set(_ids(seen))
    if unknown:
        raise ConfigError(
            f"organization {', '.join(map(str, sorted(unknown)))} is not one the token sees "
            f"(it sees {', '.join(map(str, _ids(seen))) or 'none'})"
        )
    rows: list[JsonObject] = []
    for organization in seen:
        if only and organization.get("id") not in only:
            continue
        projects = await projects_of(api, organization["id"], page_size)
        rows.extend(_row(organization, project) for project in projects)
    slots = anyio.CapacityLimiter(parallel)

    async def count_tests(row: JsonObject) -> None:
        async with slots:
            row["tests"] = (await api.list_tests(row["project_id"], 1, 1)).total

    await each(count_tests, rows)
    return rows


def _row(organization: JsonObject, project: JsonObject) -> JsonObject:
    return {
        "organization_id": organization.get("id"),
        "organization": organization.get("name"),
        "project_id": project.get("id"),
        "project": project.get("name"),
        "tests": None,
    }


async def list_projects(
    settings: Settings, *, gate: RateGate | None = None, stats: HarvestStats | None = None
) -> list[JsonObject]:
    """The backend's project rows (v2: of the `--organization`s, all when none; v6: of
    the stack) over a transport of its own."""
    from .backends.choose import backend_for  # the backends build on this module

    gate = gate if gate is not None else RateGate.for_settings(settings)
    stats = stats if stats is not None else HarvestStats()
    async with Transport(settings, gate=gate, stats=stats) as transport:
        backend = backend_for(settings, transport)
        await backend.prepare()
        return await backend.project_rows(settings.organizations)
