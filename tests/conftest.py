"""Shared fixtures: the asyncio backend for anyio's pytest plugin and a running simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from harvester.simulator.cloud import SimCloud
from harvester.simulator.generated import generate_cloud
from harvester.simulator.server import Simulator


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Every async test runs on asyncio (aiohttp needs it)."""
    return "asyncio"


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
