"""Shared helpers for tests that run the OKX adapter and the gateway against the simulator."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import SecretStr

from tradetree.core.config import VenueConfig, VenueCredentials
from tradetree.sim.config import DEFAULT_API_KEY, DEFAULT_PASSPHRASE, DEFAULT_SECRET, SimulatorConfig
from tradetree.sim.server import SimulatorServer

__all__ = ["sim", "credentials", "venue_config", "eventually", "FAST_SIM"]

FAST_SIM = SimulatorConfig(tick_interval_ms=50)


def credentials(*, api_key: str = DEFAULT_API_KEY, secret: str = DEFAULT_SECRET,
                passphrase: str = DEFAULT_PASSPHRASE) -> VenueCredentials:
    return VenueCredentials(api_key=SecretStr(api_key), secret_key=SecretStr(secret),
                            passphrase=SecretStr(passphrase))


def venue_config(server: SimulatorServer, **changes: Any) -> VenueConfig:
    fields: dict[str, Any] = dict(name="okx", rest_url=server.rest_url, ws_url=server.ws_url,
                                  http_timeout_secs=5.0, ws_reconnect_min_secs=0.05, ws_reconnect_max_secs=0.2)
    fields.update(changes)
    return VenueConfig(**fields)


async def eventually(predicate: Callable[[], Any], *, timeout_secs: float = 15.0, what: str = "") -> None:
    """Wait until ``predicate()`` (sync or async) is truthy; fail the test after ``timeout_secs``.

    A deadline for something that must happen, not a timing assertion.
    """
    deadline = time.monotonic() + timeout_secs
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_secs}s: {what or predicate}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def sim():
    server = SimulatorServer(FAST_SIM)
    await server.start()
    yield server
    await server.stop()
