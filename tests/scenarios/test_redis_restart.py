"""Scenario 7: Redis is killed (kill -9) while an order fills, then restarted from its AOF.

The engine runs on a redis-server of its own (``--appendonly yes
--appendfsync always``). An order is acknowledged by the venue and, because of
the simulator's latency, fills only after Redis is gone: the WS fill cannot be
applied, the gateway's heartbeats fail. Redis comes back with the same data
directory; without anyone touching the engine, the actors recover (or are
restarted by their supervisors), the reconciler's poll applies the fill that
was pushed while Redis was down, and Redis matches the venue: no fill lost,
none counted twice.
"""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
import ray

from tests.redis_server import RedisServer
from tests.scenarios.harness import allow_direct, running_tree, scenario_config
from tests.scenarios.tree_helpers import RAY_TIMEOUT_SECS, call
from tradetree.core.types import OrderIntent, OrderState, Side
from tradetree.tree import gateway_id

pytestmark = pytest.mark.integration

# Not the strategy's instrument: the venue nets positions per instrument, and a position of
# another owner there would turn the strategy's reduce-only closes into venue rejections.
INST = "ETH-USDT-SWAP"
HOLDER = "ManualHolder_v1_ETH"


@pytest.fixture
def own_redis(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_redis_killed_and_restarted_mid_run_loses_no_fill(ray_session, own_redis, namespace):
    # Orders are matched 1.5 s (wall) after the venue acknowledges them: they fill while Redis is
    # down. The simulator's latency is in venue time, which runs ``time_scale`` times faster.
    time_scale = scenario_config(own_redis.url, namespace).simulator.time_scale
    config = scenario_config(own_redis.url, namespace, simulator={"latency_ms": int(1500 * time_scale)})
    gateway = gateway_id("okx")
    with running_tree(config) as tree:
        tree.wait_running()
        tree.wait_for_fills(1)
        allow_direct(tree, HOLDER)
        order = ray.get(tree.gateway().submit_order.remote(OrderIntent(
            strategy_id=HOLDER, venue="okx", inst_id=INST, side=Side.BUY, size=Decimal("2"),
            reason="scenario: fills while Redis is down")), timeout=RAY_TIMEOUT_SECS)
        assert order.state is OrderState.LIVE, order  # acknowledged, recorded, not filled yet
        errors_before = call(tree, gateway, "stats")["counters"]["heartbeat_errors"]

        own_redis.kill()
        tree.wait_for(lambda: any(t["cl_ord_id"] == order.client_order_id for t in tree.truth()["trades"]),
                      20, "the venue to fill the order while Redis is down")
        tree.wait_for(lambda: call(tree, gateway, "stats")["counters"]["heartbeat_errors"] > errors_before,
                      20, "the gateway to notice Redis is gone")
        assert not own_redis.ping()
        own_redis.start()  # same port, same directory: the AOF is replayed

        # The order written before the kill survived it (appendfsync always).
        assert tree.redis(lambda s, c: s.get_order(order.client_order_id)) is not None
        tree.wait_for(tree.matches_venue, 60, "Redis to match the venue again")
        tree.wait_for(lambda: all(row["state"] == "running" and not row["detail"]
                                  for row in tree.status().values()), 60, "every actor green again")
        tree.wait_running()
        tree.wait_for(lambda: tree.redis(lambda s, c: s.applied_size(order.client_order_id)) == Decimal("2"),
                      30, "the order's fill applied")
        filled_at_venue = len(tree.truth()["trades"])
        tree.wait_for_fills(filled_at_venue + 1)  # and the engine trades on
        tree.wait_for(tree.matches_venue, 30, "Redis to match the venue")
        tree.assert_matches_venue()
        mine = [e for e in tree.audit() if e.fill.client_order_id == order.client_order_id]
        assert mine and {e.fill.layer.value for e in mine} <= {"poll", "health", "ws"}


def test_a_long_redis_outage_holds_the_tree_and_restarts_nothing(ray_session, own_redis, namespace):
    """Redis is gone for longer than the heartbeat staleness limit and many probe periods. Restarting
    actors cannot bring it back, and restart loops would escalate to SAFE MODE: every actor is held
    (the store probes fail, nothing is restarted, no order can be recorded, so none is sent), and when
    Redis returns the tree trades on by itself, with Redis matching the venue."""
    config = scenario_config(own_redis.url, namespace)
    outage_secs = 15.0  # > the 10 s heartbeat staleness limit, > 3 failing probes of any child
    with running_tree(config) as tree:
        tree.wait_running()
        tree.wait_for_fills(1)
        before = {name: row["restarts"] for name, row in tree.status().items()}
        own_redis.kill()
        time.sleep(outage_secs)
        during = tree.status()
        own_redis.start()
        tree.wait_for(lambda: all(row["state"] == "running" and not row["detail"]
                                  for row in tree.status().values()), 60, "every actor green again")
        after = {name: row["restarts"] for name, row in tree.status().items()}
        assert after == before, f"restarted during or after the outage: {after} (before {before})"
        assert all(row["state"] == "running" for row in during.values()), during
        assert tree.redis(lambda s, c: s.kill_flag()) is None  # no SAFE MODE
        tree.wait_running()
        filled = len(tree.truth()["trades"])
        tree.wait_for_fills(filled + 1)  # trading resumed
        tree.wait_for(tree.matches_venue, 30, "Redis to match the venue")
        tree.assert_matches_venue()
