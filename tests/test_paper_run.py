"""A bounded paper run of the whole tree: real Ray, real Redis, the simulator over loopback.

At the end, Redis positions summed over strategies equal the simulator's
account truth exactly, and the audit stream holds each simulator trade once.
On the way, the tree's /metrics endpoint (port 0) shows the strategies and the
fills by layer, and none of the venue credentials.
"""

from __future__ import annotations

import uuid
from collections import Counter
from decimal import Decimal

import pytest

from tests.paper_helpers import (
    PAPER_TEST_TIMEOUT_SECS,
    SETTLE_TIMEOUT_SECS,
    SUPERVISION,
    settled_view,
    store_view,
    summed_positions,
    wait_for,
    wait_until_released,
)
from tests.test_metrics import wait_for_tree_metrics
from tradetree.config import EngineConfig
from tradetree.runner import EngineRuntime
from tradetree.tree import wind_down_for_shutdown

# The suite's 300 s per-test bound is below this test's own waits on a busy machine (the tree's
# start alone may take minutes there); those waits decide when it fails, this only stops a hang.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(PAPER_TEST_TIMEOUT_SECS)]

CREDENTIALS = {"api_key": "ak-metrics-3f9e1c", "secret_key": "sk-metrics-77ab20", "passphrase": "pp-metrics-c4d1"}


def _paper_config(redis_url: str, namespace: str) -> EngineConfig:
    strategy = {
        "class": "MeanReversion", "version": "v1", "venue": "okx", "bar_interval_ms": 30000,
        "params": {"window_bars": 8, "entry_z": 1.0, "exit_z": 0.2, "stop_z": 6.0, "size": "1"},
    }
    return EngineConfig.model_validate({
        "name": f"tt-paper-{uuid.uuid4().hex[:6]}",
        "redis": {"url": redis_url, "namespace": namespace},
        "venues": [{"name": "okx", "instruments": ["BTC-USDT-SWAP", "ETH-USDT-SWAP"]}],
        "strategies": [
            {**strategy, "symbols": ["BTC-USDT-SWAP"]},
            {**strategy, "symbols": ["ETH-USDT-SWAP"], "params": {**strategy["params"], "size": "3"}},
        ],
        "supervision": SUPERVISION,
        "simulator": {"seed": 11, "tick_interval_ms": 100, "time_scale": 60.0, **CREDENTIALS},
        "metrics": {"enabled": True, "port": 0, "refresh_secs": 0.5},
    })


def test_paper_run_positions_match_simulator_truth(ray_session, redis_url, namespace):
    config = _paper_config(redis_url, namespace)
    runtime = EngineRuntime(config, include_dashboard=False)
    runtime.start()
    try:
        # Startup time depends on the machine: wait for the release, then for trading, each on its own bound.
        wait_until_released(redis_url, namespace, [s.id for s in config.strategies])
        wait_for(lambda: len(store_view(redis_url, namespace).audit) >= 6, 180, "six fills")
        url = runtime.metrics_url()
        assert url and url.startswith("http://127.0.0.1:")
        text = wait_for_tree_metrics(url, [s.id for s in config.strategies], min_fills=6, timeout_secs=120)
        assert not [c for c in CREDENTIALS.values() if c in text]
        wind_down_for_shutdown(config, ray_namespace=runtime.ray_namespace)

        def settled():
            truth = runtime.sim_server.account_truth()
            view = store_view(redis_url, namespace)
            return (truth, view.positions, view.audit) if settled_view(truth, view) else None

        truth, positions, audit = wait_for(settled, SETTLE_TIMEOUT_SECS, "fills to settle after pausing")
        venue_positions = {k: Decimal(v) for k, v in truth["positions"].items() if Decimal(v) != 0}
        assert summed_positions(positions) == venue_positions

        audited = Counter(e.fill.trade_id for e in audit)
        assert all(n == 1 for n in audited.values())
        assert set(audited) == {t["trade_id"] for t in truth["trades"]}
        assert {e.strategy_id for e in audit} <= {s.id for s in config.strategies}
    finally:
        runtime.shutdown()
