"""The worker's `/healthz` and `/metrics`, served on --listen-host:--listen-port (aiohttp).

What they answer is the worker's (`Worker.health`, `Worker.telemetry`); here, only how.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import anyio
import orjson
from aiohttp import web

from .errors import ConfigError
from .telemetry import CONTENT_TYPE

if TYPE_CHECKING:
    from .worker import Worker


def build_app(worker: Worker) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        body = orjson.dumps(worker.health())
        status = 200 if worker.healthy() else 503
        return web.Response(status=status, body=body, content_type="application/json")

    async def metrics(request: web.Request) -> web.Response:
        response = web.Response(body=worker.telemetry.render())
        response.headers["Content-Type"] = CONTENT_TYPE
        return response

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


@contextlib.asynccontextmanager
async def serve_endpoints(worker: Worker) -> AsyncIterator[int]:
    """Serve /healthz and /metrics on listen_host:listen_port; yields the bound port
    (the real one when listen_port is 0)."""
    host, port = worker.settings.listen_host, worker.settings.listen_port
    runner = web.AppRunner(build_app(worker), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port} ({exc.strerror or exc}); "
                "choose another --listen-port or --listen-host"
            ) from None
        yield int(runner.addresses[0][1])
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()
