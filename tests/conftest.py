"""Shared fixtures: the asyncio backend for anyio's pytest plugin and a running simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from harvester.simulator.cloud import SimCloud
from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator
from tests.fs_helpers import tiny_tmpfs


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Every async test runs on asyncio (aiohttp needs it)."""
    return "asyncio"


@pytest.fixture(autouse=True)
def no_user_config(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tests see no k6 login, config file or proxy of whoever runs them (the harvester
    reads k6's stored token and HARVESTER_*/proxy variables)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))
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
