"""A bounded paper run of the whole tree: real Ray, real Redis, the simulator over loopback.

At the end, Redis positions summed over strategies equal the simulator's
account truth exactly, and the audit stream holds each simulator trade once.
On the way, the tree's /metrics endpoint (port 0) shows the strategies and the
fills by layer, and none of the venue credentials.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from decimal import Decimal

import pytest

from tests.test_metrics import wait_for_tree_metrics
from tradetree.config import EngineConfig
from tradetree.core.store import RedisStore
from tradetree.runner import EngineRuntime
from tradetree.tree import wind_down_for_shutdown

pytestmark = pytest.mark.integration

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
        "simulator": {"seed": 11, "tick_interval_ms": 100, "time_scale": 60.0, **CREDENTIALS},
        "metrics": {"enabled": True, "port": 0, "refresh_secs": 0.5},
    })


async def _store_view(redis_url: str, namespace: str):
    store = await RedisStore.connect(redis_url, namespace)
    try:
        return await store.positions(), await store.audit_entries(), await store.open_orders()
    finally:
        await store.close()


def _wait(predicate, timeout_secs: float, what: str):
    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout_secs}s waiting for {what}")


def test_paper_run_positions_match_simulator_truth(ray_session, redis_url, namespace):
    config = _paper_config(redis_url, namespace)
    runtime = EngineRuntime(config, include_dashboard=False)
    runtime.start()
    try:
        _wait(lambda: len(asyncio.run(_store_view(redis_url, namespace))[1]) >= 6, 120, "six fills")
        url = runtime.metrics_url()
        assert url and url.startswith("http://127.0.0.1:")
        text = wait_for_tree_metrics(url, [s.id for s in config.strategies], min_fills=6, timeout_secs=30)
        assert not [c for c in CREDENTIALS.values() if c in text]
        wind_down_for_shutdown(config, ray_namespace=runtime.ray_namespace)

        def settled():
            truth = runtime.sim_server.account_truth()
            positions, audit, orders = asyncio.run(_store_view(redis_url, namespace))
            live = [o for o in orders if not o.state.is_terminal]
            if truth["open_orders"] or live or len(audit) != len(truth["trades"]):
                return None
            return truth, positions, audit

        truth, positions, audit = _wait(settled, 30, "fills to settle after pausing")
        summed: dict[str, Decimal] = {}
        for p in positions:
            summed[p.inst_id] = summed.get(p.inst_id, Decimal(0)) + p.qty
        venue_positions = {k: Decimal(v) for k, v in truth["positions"].items() if Decimal(v) != 0}
        assert {k: v for k, v in summed.items() if v != 0} == venue_positions

        audited = Counter(e.fill.trade_id for e in audit)
        assert all(n == 1 for n in audited.values())
        assert set(audited) == {t["trade_id"] for t in truth["trades"]}
        assert {e.strategy_id for e in audit} <= {s.id for s in config.strategies}
    finally:
        runtime.shutdown()
