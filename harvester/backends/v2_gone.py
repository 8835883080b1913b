"""Telling "v2 is gone" from "these runs do not exist".

Grafana files v2 under "deprecated, planned for removal" with no date. When every answer
of a job was a 404 or 410, one more request, a listing v2 always serves
(`GET /loadtests/v2/runs?page=1&page_size=1`), tells the two apart: if it is missing too,
the job ends with an error that says so and shows the v6 form of the command.
"""

from __future__ import annotations

from ..errors import ApiError
from ..stats import HarvestStats
from ..transport import FILE_ENDPOINT, Transport

GONE = frozenset({404, 410})


class V2Gone(ApiError):
    """Every v2 request answered 404/410, a plain listing included: use --api v6."""

    exit_code = 2


async def check_v2_gone(transport: Transport, stats: HarvestStats) -> None:
    """Raise `V2Gone` when the job's every answer was 404/410 and so is the probe's."""
    statuses = {status for (endpoint, status), n in stats.requests.items()
                if n and endpoint != FILE_ENDPOINT}  # fmt: skip
    if not statuses or not statuses <= GONE:
        return
    try:
        await transport.get("v2_probe", transport.url("/loadtests/v2/runs", "page=1&page_size=1"))
    except ApiError as exc:
        if exc.status in GONE:
            raise V2Gone(
                f"every request to /loadtests/v2 answered HTTP {exc.status}, a plain listing of "
                "runs too: the v2 API looks gone (Grafana has deprecated it). Harvest through "
                "the current API instead: harvester harvest --api v6 --stack-id N ... (the "
                "stack id is under Testing & synthetics > Performance > Settings)",
                status=exc.status,
                url=exc.url,
            ) from exc
