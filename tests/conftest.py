"""Shared fixtures: the asyncio backend for anyio's pytest plugin and a running simulator."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import anyio.from_thread
import pytest

from harvester.simulator.cloud import SimCloud
from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator
from tests.fs_helpers import tiny_tmpfs
from tests.s3_helpers import CREDENTIALS, S3Cli, S3Server, moto_server


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Every async test runs on asyncio (aiohttp needs it)."""
    return "asyncio"


@pytest.fixture(autouse=True)
def no_user_config(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tests see no k6 login, config file or proxy of whoever runs them (the harvester
    reads k6's stored token and HARVESTER_*/proxy variables), and write no state of theirs
    ($XDG_STATE_HOME: an object store's default state and export spools)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("xdg-state")))
    for name in ("K6_CONFIG", "HARVESTER_CONFIG", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy",
                 "https_proxy", "ALL_PROXY", "all_proxy"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def cloud() -> SimCloud:
    """A small generated account: runs 100001-100003, 30 metrics x 20 points each."""
    return generate_cloud(runs=3, metrics=30, points=20)


@pytest.fixture
async def simulator(cloud: SimCloud) -> AsyncIterator[Simulator]:
    """The simulated API serving `cloud` on 127.0.0.1 (a free port), healthy by default."""
    async with Simulator(cloud) as sim:
        yield sim


@pytest.fixture
async def sim_client(simulator: Simulator) -> AsyncIterator[aiohttp.ClientSession]:
    """A plain aiohttp session on the simulator: relative paths, the right token."""
    async with aiohttp.ClientSession(simulator.base_url, headers=simulator.headers) as session:
        yield session


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB tmpfs mounted for the test, to fill or make read-only (skipped where
    mounting is impossible)."""
    with tiny_tmpfs(tmp_path / "tiny") as mount_point:
        yield mount_point


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """moto's S3 server on loopback, for the session (`tests/s3_helpers.py`)."""
    pytest.importorskip("aiobotocore")
    with moto_server() as server:
        yield server


@pytest.fixture
def bucket(s3: S3Server, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """A new empty bucket per test; the harvester finds the credentials in the environment."""
    name = f"b-{abs(hash(request.node.nodeid)) % 10**10}"
    s3.client().create_bucket(Bucket=name)
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    return name


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A simulator of two small runs (100001, 100002) for tests that are not async (served
    by a thread of its own)."""
    cloud = generate_cloud(runs=2, metrics=10, points=5)
    with anyio.from_thread.start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(Simulator(cloud, token="tok")) as simulator:
            yield simulator


@pytest.fixture
def s3cli(
    sim: Simulator, s3: S3Server, bucket: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> S3Cli:
    """The CLI on a new bucket of the session's store, against the two-run simulator."""
    return S3Cli(sim, s3, bucket, tmp_path, capfd)


# A suite started under nohup (or from a shell that ignores SIGHUP) would hand the ignored
# SIGHUP to every harvester it starts, which keeps it ignored by design (nohup): the
# SIGHUP tests' jobs would then never stop. Children start with SIGHUP's default.
if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
