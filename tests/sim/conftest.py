"""Fixtures for simulator tests: a running simulator and ccxt clients pointed at it."""

from __future__ import annotations

import ccxt
import ccxt.async_support as ccxt_async
import pytest

from tradetree.sim.config import DEFAULT_API_KEY, DEFAULT_PASSPHRASE, DEFAULT_SECRET, SimulatorConfig
from tradetree.sim.server import SimulatorServer, SimulatorThread

FAST = dict(tick_interval_ms=50, warmup_bars=5, cancel_all_after_min_secs=1)


def ccxt_options(server: SimulatorServer, *, secret: str = DEFAULT_SECRET, password: str = DEFAULT_PASSPHRASE,
                 api_key: str = DEFAULT_API_KEY) -> dict:
    return {
        "apiKey": api_key,
        "secret": secret,
        "password": password,
        "enableRateLimit": False,
        "options": {"fetchMarkets": {"types": ["spot", "swap"]}},
    }


def point(ex, server: SimulatorServer):
    """okx_protocol.md section 1: replace the whole urls['api'] dict."""
    ex.urls["api"] = {"rest": server.rest_url, "ws": server.ws_url}
    return ex


@pytest.fixture
def sim_thread():
    """A simulator on its own thread (for sync ccxt)."""
    with SimulatorThread(SimulatorConfig(**FAST)) as server:
        yield server


@pytest.fixture
def okx(sim_thread):
    """Unmodified sync ccxt.okx pointed at the simulator, markets loaded."""
    ex = point(ccxt.okx(ccxt_options(sim_thread)), sim_thread)
    ex.load_markets()
    return ex


@pytest.fixture
async def sim():
    """A simulator on the test's own event loop (for async ccxt and websockets)."""
    server = SimulatorServer(SimulatorConfig(**FAST))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def aokx(sim):
    ex = point(ccxt_async.okx(ccxt_options(sim)), sim)
    await ex.load_markets()
    yield ex
    await ex.close()
