"""The simulated CSV export: `POST /runs/{id}/export` starts it, the run object shows it
done after a delay, and a file server on another origin serves the file.

k6 Cloud hands out the export as a signed URL on a storage host: the token must never go
there. So the file server listens on a port of its own (another origin), refuses every
request that carries an `Authorization` header (403) and logs each request's headers for
tests. The file is the run's points the way `k6 run --out csv` writes them: the header
`metric_name,timestamp,metric_value,` then one column per tag key.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import math
from dataclasses import dataclass, field
from datetime import datetime

from aiohttp import web

from harvester.simulator.cloud import SimCloud
from harvester.simulator.model import JsonObject, RunData

#: `export_status` values shown in the run object (undocumented by the API: illustrative).
EXPORT_IN_PROGRESS, EXPORT_DONE = 1, 2
CSV_COLUMNS = ("metric_name", "timestamp", "metric_value")


@dataclass
class ExportKnobs:
    """How the export behaves; change them while serving."""

    #: Seconds from the POST until the run object carries `export_file` (inf: never).
    delay: float = 0.0
    #: Serve the file gzip-compressed (as k6 Cloud's storage may), else plain CSV.
    gzip: bool = False
    #: The file URL answers 302 to where the bytes are (signed URLs often redirect).
    redirect: bool = False
    #: Answer every file request with this status instead (a failed download).
    file_status: int | None = None
    #: ... saying Retry-After with this many seconds.
    file_retry_after: float | None = None


@dataclass(frozen=True)
class FileRequest:
    """One request the file server answered: its path, its headers as received, the status."""

    path: str
    headers: dict[str, str]
    status: int


@dataclass
class ExportDesk:
    """Export jobs of every run, and the file server's side of them."""

    knobs: ExportKnobs = field(default_factory=ExportKnobs)
    #: The file server's base URL, set once it listens.
    file_base: str = ""
    requests: list[FileRequest] = field(default_factory=list)
    _started: dict[int, float] = field(default_factory=dict)
    _signed: dict[str, int] = field(default_factory=dict)  # signature -> run id
    _signatures: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def start(self, meta: JsonObject, now: float) -> None:
        """A POST: the export is in progress; a URL handed out before stays valid until
        `expire()` (like a signed URL that has not reached its end)."""
        meta["export"] = {"export_status": EXPORT_IN_PROGRESS, "export_file": None}
        self._started[int(meta["id"])] = now

    def refresh(self, meta: JsonObject, now: float) -> None:
        """Show the export done in the run object once its delay has passed."""
        run_id = int(meta["id"])
        started = self._started.get(run_id)
        if started is None or now - started < self.knobs.delay or math.isinf(self.knobs.delay):
            return
        del self._started[run_id]
        signature = f"s{next(self._signatures)}"
        self._signed[signature] = run_id
        url = f"{self.file_base}/exports/{run_id}.csv?signature={signature}"
        meta["export"] = {"export_status": EXPORT_DONE, "export_file": url}

    def expire(self) -> None:
        """Every `export_file` handed out so far now answers 403 (its signature expired)."""
        self._signed.clear()

    def run_of(self, signature: str) -> int | None:
        return self._signed.get(signature)


def _unix(timestamp: str) -> str:
    return str(int(datetime.fromisoformat(timestamp).timestamp()))


def _value(value: object) -> str:
    return "" if value is None else f"{float(str(value)):.6f}"  # k6 writes %f


def render_csv(run: RunData) -> bytes:
    """The run's points as `k6 run --out csv` writes them: one row per point of each
    metric's default serie, tag columns sorted by name."""
    metrics = run.metrics()
    tags = sorted({key for m in metrics for key in (m.get("tags") or {})})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*CSV_COLUMNS, *tags])
    for metric in metrics:
        serie = run.serie(metric["id"], None)
        metric_tags = metric.get("tags") or {}
        for point in serie["values"] if serie is not None else ():
            row = [metric["name"], _unix(point["timestamp"]), _value(point["value"])]
            writer.writerow(row + [str(metric_tags.get(key, "")) for key in tags])
    return out.getvalue().encode()


def build_file_app(desk: ExportDesk, cloud: SimCloud) -> web.Application:
    """The storage host: serves `/exports/{run}.csv?signature=S` (and its redirect target)."""

    async def serve(request: web.Request) -> web.StreamResponse:
        response = _file_answer(request, desk, cloud)
        desk.requests.append(FileRequest(request.path, dict(request.headers), response.status))
        return response

    app = web.Application()
    app.router.add_get("/exports/{run_id}.csv", serve)
    app.router.add_get("/files/{run_id}.csv", serve)
    return app


def _file_answer(request: web.Request, desk: ExportDesk, cloud: SimCloud) -> web.Response:
    if "Authorization" in request.headers:
        return web.Response(status=403, text="Only the signature authenticates; no tokens here.")
    if desk.knobs.file_status is not None:
        wait = desk.knobs.file_retry_after
        headers = {"Retry-After": str(wait)} if wait is not None else None
        return web.Response(
            status=desk.knobs.file_status, text="The storage host failed.", headers=headers
        )
    signature = request.query.get("signature", "")
    run_id = desk.run_of(signature)
    if run_id is None or str(run_id) != request.match_info["run_id"] or run_id not in cloud.runs:
        return web.Response(status=403, text="Request has expired.")
    if desk.knobs.redirect and request.path.startswith("/exports/"):
        location = f"/files/{run_id}.csv?signature={signature}"
        return web.Response(status=302, headers={"Location": location})
    body = render_csv(cloud.runs[run_id])
    if desk.knobs.gzip:
        return web.Response(body=gzip.compress(body, mtime=0), content_type="application/gzip")
    return web.Response(body=body, content_type="text/csv")
