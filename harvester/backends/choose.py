"""The one place that knows which backend serves `--api`."""

from __future__ import annotations

from ..config import Settings
from ..transport import Transport
from .base import Backend
from .v2 import V2Backend
from .v6 import V6Backend


def backend_for(settings: Settings, transport: Transport) -> Backend:
    """The job's API over `transport`: v6 (`/cloud/v6` + `/cloud/v5`) or v2."""
    if settings.api == "v6":
        return V6Backend(settings, transport)
    return V2Backend(settings, transport)
