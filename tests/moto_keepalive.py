"""moto's S3 server keeping its connections alive, as S3, MinIO and R2 do: run as a
script: `python tests/moto_keepalive.py HOST PORT`; it ends when its stdin closes.

werkzeug's dev server (moto's) answers every request `Connection: close` (since werkzeug
2.1), so each request of a client opened a connection of its own: ~1 ms of the
harvester's event loop a request that a real store does not cost, and a bench of
`--out s3://` measured that instead. Here the handler drops that header, reads the rest
of each request's body itself (werkzeug's own draining would swallow the next request on
the connection), and closes a connection idle for `IDLE` seconds, as a store does, so
that a client reusing a connection the store has just closed is tried too."""

from __future__ import annotations

import os
import selectors
import sys
import threading
import types
from typing import IO, Any, cast
from unittest import mock

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug import serving
from werkzeug.wsgi import LimitedStream

#: Seconds a connection may wait for its next request (S3's own is ~20 s).
IDLE = 5.0


class _NoSelector:
    """werkzeug reads whatever arrives within 10 ms of an answer and throws it away, a
    guard for a connection it closes; on a kept one that is the client's next request."""

    def register(self, *args: Any) -> None:
        pass

    def select(self, timeout: float | None = None) -> list[Any]:
        return []

    def close(self) -> None:
        pass


class KeepAliveHandler(MotoRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = IDLE  # the socket's: a request line awaited longer ends the connection
    _body: LimitedStream | None = None

    def make_environ(self) -> dict[str, Any]:
        environ = super().make_environ()
        self._body = None
        if not environ.get("wsgi.input_terminated"):  # not chunked: its length is known
            length = int(environ.get("CONTENT_LENGTH") or 0)
            self._body = environ["wsgi.input"] = LimitedStream(cast(IO[bytes], self.rfile), length)
        return environ

    def send_header(self, keyword: str, value: str) -> None:
        if keyword.lower() == "connection" and not self.close_connection:
            return  # werkzeug's `close` on every answer
        super().send_header(keyword, value)

    def run_wsgi(self) -> None:
        super().run_wsgi()
        if self._body is None:
            self.close_connection = True  # a chunked body: where it ends is not known here
        else:
            self._body.exhaust()  # what the answer left unread, before the next request


def serve(host: str, port: int) -> None:
    """What moto.server's `main` runs, with this handler, until stdin closes (the test
    process gone, or `moto_server` done)."""
    os.environ["MOTO_PORT"] = str(port)  # as `main` does: moto builds some URLs with it
    threading.Thread(target=lambda: (sys.stdin.buffer.read(), os._exit(0)), daemon=True).start()
    app = DomainDispatcherApplication(create_backend_app)
    # (werkzeug registers the connection with `selectors.EVENT_READ`: without it, each
    # request ended in an AttributeError, its traceback rendered and logged by moto)
    no_drain = types.SimpleNamespace(DefaultSelector=_NoSelector, EVENT_READ=selectors.EVENT_READ)
    with mock.patch("werkzeug.serving.selectors", no_drain):
        serving.run_simple(host, port, app, threaded=True, request_handler=KeepAliveHandler)


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
