"""A real S3-compatible server for the tests: moto's server in a child process on
127.0.0.1, stopped by its PID; and a plain boto3 client to look at what is stored.

Nothing here can hang a test run: the server ends when its stdin closes (so a pytest
killed by its timeout leaves no server behind), its start and stop are bounded, and the
client's requests time out and are tried twice at most (a stalled server fails a test
in seconds instead of holding each test for pytest-timeout's minute)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import anyio
import pytest
from aiohttp import web

from harvester.config import load_settings
from harvester.simulator.server import Simulator
from tests.harvest_helpers import cli_args, serve
from tests.process_helpers import ROOT, cli_command, cli_env

if TYPE_CHECKING:
    from harvester.objectstore import ObjectSink

#: moto accepts any key pair; these are what the tests' harvester and boto3 use.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIATESTKEY0000000",
    "AWS_SECRET_ACCESS_KEY": "s3cret-DO-NOT-LEAK",
    "AWS_DEFAULT_REGION": "us-east-1",
}


#: moto's server keeping connections alive as a real store does, ended by its stdin's end.
SERVER = Path(__file__).with_name("moto_keepalive.py")


@dataclass
class S3Server:
    url: str
    process: subprocess.Popen[bytes]
    _client: Any = field(default=None, repr=False)

    def client(self) -> Any:
        """One boto3 client (made once: that takes a tenth of a second), each request
        bounded in time."""
        if self._client is None:
            boto3 = pytest.importorskip("boto3")
            from botocore.config import Config

            bounded = Config(connect_timeout=5, read_timeout=30, retries={"total_max_attempts": 2})
            self._client = boto3.client(
                "s3",
                endpoint_url=self.url,
                aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                region_name="us-east-1",
                config=bounded,
            )
        return self._client

    def objects(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        client = self.client()
        listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        return {o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
                for o in listed}  # fmt: skip

    def sizes(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """Each object's key and size (one listing)."""
        answer = self.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
        return {o["Key"]: o["Size"] for o in answer.get("Contents", [])}

    def runs(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        """The runs' data objects: the objects without their manifests."""
        objects = self.objects(bucket, prefix)
        return {k: v for k, v in objects.items() if not k.endswith(".manifest.json")}

    def uploads(self, bucket: str) -> list[dict[str, Any]]:
        """The incomplete multipart uploads of runs' objects (the jobs' leases, which are
        uploads too, left out)."""
        answer = self.client().list_multipart_uploads(Bucket=bucket)
        return [up for up in answer.get("Uploads", []) if ".harvester-live/" not in up["Key"]]

    def leases(self, bucket: str) -> list[str]:
        """The keys of the jobs' leases and claims (incomplete uploads, never objects)."""
        answer = self.client().list_multipart_uploads(Bucket=bucket)
        return [up["Key"] for up in answer.get("Uploads", []) if ".harvester-live/" in up["Key"]]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_server(*, authenticate: bool = False) -> Iterator[S3Server]:
    """moto's server; `authenticate`: it checks every request's signature against its IAM
    users (it has none, so every key is refused)."""
    pytest.importorskip("moto.server")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_"))}
    if authenticate:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
    process = subprocess.Popen(
        [sys.executable, str(SERVER), "127.0.0.1", str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.05)
        yield S3Server(url, process)
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Ask (stdin closed, SIGTERM), then insist (SIGKILL): bounded, and never left running."""
    assert process.stdin is not None
    process.stdin.close()
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


RUNS = ("--run", "100001", "--run", "100002")


@dataclass
class S3Cli:
    """What a test of the CLI on an object store holds: the simulator, the store, its
    bucket, a state file, and the captured output (the `s3cli` fixture)."""

    sim: Simulator
    s3: S3Server
    bucket: str
    tmp_path: Path
    capfd: pytest.CaptureFixture[str]

    @property
    def state(self) -> Path:
        return self.tmp_path / "s.sqlite"

    def args(self, out: str, *extra: str) -> list[str]:
        """`harvest` of `out` on the store, with the state file and `extra`."""
        return s3_args(self.sim, self.s3, out, self.state, *extra)

    def main(self, args: list[str]) -> tuple[int, str]:
        """`harvester ARGS` in this process: its exit status and what it wrote to stderr."""
        from harvester.cli import main

        code = main(args)
        return code, self.capfd.readouterr().err


def s3_args(sim: Simulator, s3: S3Server, out: str, state: Path, *extra: str) -> list[str]:
    return cli_args(sim, out, "--s3-endpoint-url", s3.url, "--state", str(state), *extra)


def sink_on(s3: S3Server, bucket: str, **flags: str) -> ObjectSink:
    """An `ObjectSink` on `s3://BUCKET/pre/` with `flags` as settings."""
    from harvester.objectstore import ObjectSink

    settings = load_settings(
        {"out": f"s3://{bucket}/pre/", "s3_endpoint_url": s3.url, "token": "t", **flags}
    )
    return ObjectSink(settings)


async def store_run(url: str, bucket: str, run_id: int, lines: bytes) -> None:
    """`lines` stored as run `run_id`'s file under `s3://BUCKET/pre/` through the store at
    `url` (a proxy in front of moto), by an `ObjectSink` in this process."""
    from harvester.objectstore import ObjectSink

    settings = load_settings({"out": f"s3://{bucket}/pre/", "s3_endpoint_url": url, "token": "t"})
    async with ObjectSink(settings) as sink:
        await sink.begin(run_id)
        await sink.write(run_id, lines)
        await sink.commit(run_id)


async def harvest(
    sim: Simulator, *args: str, env: dict[str, str] | None = None, within: float = 90.0
) -> subprocess.CompletedProcess[bytes]:
    """`harvester harvest ARGS` in a child process with the tests' credentials (and `env`),
    to its end, killed after `within` seconds."""
    full = {**cli_env(sim), **CREDENTIALS, **(env or {})}
    with anyio.fail_after(within):
        return await anyio.run_process(
            cli_command(sim, "harvest", *args), env=full, cwd=ROOT, check=False
        )


PASSED = {"content-type", "etag", "date", "x-amz-request-id", "last-modified"}
SLOW_DOWN = b"<Error><Code>SlowDown</Code><Message>Reduce your rate</Message></Error>"


@asynccontextmanager
async def s3_proxy(s3: S3Server, refuse: Callable[[web.Request], bool]) -> AsyncIterator[str]:
    """A proxy in front of moto that answers 503 SlowDown, as S3 does, to the requests
    `refuse` picks, and passes the others on; yields its URL."""

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        if refuse(request):
            return web.Response(status=503, body=SLOW_DOWN, content_type="application/xml")
        return await _passed_on(s3, request, body)

    async with _serving(forward) as url:
        yield url


async def _passed_on(s3: S3Server, request: web.Request, body: bytes) -> web.Response:
    """moto's answer to `request` (its `body` read already)."""
    headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
    async with aiohttp.ClientSession() as session:
        async with session.request(
            request.method, s3.url + request.path_qs, headers=headers, data=body
        ) as answer:
            data = await answer.read()
            kept = {k: v for k, v in answer.headers.items()
                    if k.lower() in PASSED or k.lower().startswith("x-amz-meta-")}  # fmt: skip
            return web.Response(status=answer.status, body=data, headers=kept)


@asynccontextmanager
async def _serving(handler: Callable[[web.Request], Any]) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    async with serve(app) as url:
        yield url


ACCESS_DENIED = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"


class _Proxy:
    """A proxy in front of moto that does something to the requests `at` picks."""

    def __init__(self, s3: S3Server, at: Callable[[web.Request], bool]) -> None:
        self.s3 = s3
        self.at = at

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        """The proxy's URL, while it serves."""
        async with _serving(self._forward) as url:
            yield url

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError


class GoneStore(_Proxy):
    """A proxy in front of moto that goes away at the first request `at` picks: that one
    and every later request wait unanswered (`went` is set), as a store that stopped
    answering, until `answer(status, body)` sends each of them that answer."""

    def __init__(self, s3: S3Server, at: Callable[[web.Request], bool]) -> None:
        super().__init__(s3, at)
        self.went = anyio.Event()
        self._answered = anyio.Event()
        self._answer = (500, b"")

    def answer(self, status: int, body: bytes) -> None:
        self._answer = (status, body)
        self._answered.set()

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.went.is_set() or self.at(request):
            self.went.set()
            await self._answered.wait()
            status, data = self._answer
            return web.Response(status=status, body=data, content_type="application/xml")
        return await _passed_on(self.s3, request, body)


class HeldStore(_Proxy):
    """A proxy in front of moto that holds the requests `at` picks (`held` is set) until
    `release()`, then passes them on, as every other request."""

    def __init__(self, s3: S3Server, at: Callable[[web.Request], bool]) -> None:
        super().__init__(s3, at)
        self.held = anyio.Event()
        self._released = anyio.Event()

    def release(self) -> None:
        self._released.set()

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.at(request):
            self.held.set()
            await self._released.wait()
        return await _passed_on(self.s3, request, body)


class CutOnce(_Proxy):
    """A proxy in front of moto that cuts the first answer to each GET of a run's data
    object halfway (the length it announced not reached), and passes the rest on."""

    def __init__(self, s3: S3Server) -> None:
        super().__init__(s3, lambda request: False)
        self.cut: list[str] = []

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        answer = await _passed_on(self.s3, request, body)
        data = answer.body
        whole = request.method == "GET" and ".ndjson" in request.path and "?" not in request.path_qs
        if not whole or request.path in self.cut or not isinstance(data, bytes):
            return answer
        self.cut.append(request.path)
        cut = web.StreamResponse(status=200, headers={"Content-Length": str(len(data))})
        await cut.prepare(request)
        await cut.write(data[: len(data) // 2])
        assert request.transport is not None
        request.transport.close()
        return cut


class SlowStore(_Proxy):
    """A proxy in front of moto that answers each GET of an object `delay` seconds late, as
    a distant store does, counting how many it held at once at most (`most`)."""

    def __init__(self, s3: S3Server, delay: float) -> None:
        super().__init__(s3, lambda request: request.method == "GET" and not request.query)
        self.delay = delay
        self.most = 0
        self._held = 0

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if self.at(request):
            self._held += 1
            self.most = max(self.most, self._held)
            await anyio.sleep(self.delay)
            self._held -= 1
        return await _passed_on(self.s3, request, body)
