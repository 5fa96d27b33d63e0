"""Scenario 3: the reconciler's REST calls fail (HTTP 503) while the WS works.

Only the paths the reconciler polls fail (trade history, order status,
positions); the gateway still places orders and the WS still pushes fills.
What must happen:

- positions stay right through the WS alone: every fill in Redis within one
  poll interval plus 1 s, applied by ``ws``;
- the reconciler alerts (its poll cycles keep failing);
- the venue is no longer verified, so once verification is older than the
  freshness gate's bound the strategy's orders are refused (its stats count
  the denials and say why) and none reaches the simulator;
- after REST recovers, the venue is verified again and the strategy trades.
"""

from __future__ import annotations

import time

import pytest

from tests.scenarios.harness import (
    BUSY_STRATEGY,
    FillLatencyWatch,
    running_tree,
    scenario_config,
    submit_direct,
    venue_trade_keys,
)
from tests.scenarios.tree_helpers import call, orders_of
from tradetree.tree import reconciler_id

pytestmark = pytest.mark.integration

RECONCILER = reconciler_id("okx")
# What the reconciler's own REST client polls; the gateway sends orders through batch-orders.
POLLED_PATHS = ("/api/v5/trade/fills-history", "/api/v5/trade/order", "/api/v5/account/positions")


def verification_refused(stats: dict) -> bool:
    return any("position verification on okx stale" in r for r in stats["last_denial"])


def test_rest_polling_failing_while_the_ws_works(ray_session, redis_url, namespace):
    config = scenario_config(redis_url, namespace, strategies=[BUSY_STRATEGY])
    sid = config.strategies[0].id
    bound = config.reconciler.poll_interval_secs + 1.0
    with running_tree(config) as tree:
        tree.wait_running()
        tree.wait_for(lambda: tree.redis(lambda s, c: c.verified_at("okx")), 30, "the venue verified")
        with FillLatencyWatch(tree) as watch:
            started = time.monotonic()
            tree.sim.faults.set_rest_errors(1.0, "5xx", paths=POLLED_PATHS)
            before = venue_trade_keys(tree)  # pushed, or polled by a cycle in flight, before the fault
            for side in ("buy", "sell", "buy"):  # fills while polling is down: only the WS can apply them
                submit_direct(tree, side)

            # The reconciler alerts on its own failing cycles.
            alert = tree.wait_for(lambda: [a for a in tree.alerts() if a["key"] == "okx:poll_failing"], 30,
                                  "the polling alert")[0]
            assert alert["severity"] == "critical" and "REST polling failing" in alert["title"]
            stats = call(tree, RECONCILER, "stats")
            assert stats["counters"]["poll_cycles_failed"] >= config.reconciler.poll_failure_alert_cycles
            assert "503" in stats["last_errors"]["poll"] or "ExchangeNotAvailable" in stats["last_errors"]["poll"]
            verified = tree.redis(lambda s, c: c.verified_at("okx"))  # no cycle has succeeded since the alert

            # Verification goes stale and the gate refuses the strategy's orders for it...
            tree.wait_for(lambda: verification_refused(call(tree, sid, "stats")), 40,
                          "a refusal for stale verification")
            reached, known = tree.sim.order_requests, set(orders_of(tree, sid))
            denials = call(tree, sid, "stats")["denials"]
            tree.wait_for(lambda: call(tree, sid, "stats")["denials"] >= denials + 3, 30, "three more refusals")
            assert verification_refused(call(tree, sid, "stats"))
            # ...and none of its orders reaches the simulator (nothing else sends any meanwhile).
            assert tree.sim.order_requests == reached
            assert set(orders_of(tree, sid)) == known
            assert tree.redis(lambda s, c: c.verified_at("okx")) == verified

            # Positions stayed right through the WS alone.
            tree.wait_for(tree.matches_venue, 15, "Redis to match the venue")
            outage = [k for k in watch.trades_seen_between(started) if k not in before]
            assert len(outage) >= 3
            assert {watch.layers[k] for k in outage} == {"ws"}
            latencies = watch.latencies(outage)
            assert set(latencies) == set(outage) and not watch.late(outage, bound), latencies
            recovered_at = time.monotonic()
            tree.sim.faults.clear_all()

            # REST is back: verified again, an all-clear, and the strategy's orders reach the venue again.
            tree.wait_for(lambda: (tree.redis(lambda s, c: c.verified_at("okx")) or 0) > verified, 30,
                          "the venue verified again")
            tree.wait_for(lambda: any(a["key"] == "okx:poll_failing" and a["severity"] == "info"
                                      for a in tree.alerts()), 30, "the recovery alert")
            tree.wait_for(lambda: set(orders_of(tree, sid)) - known, 40, "a new order of the strategy")
            tree.wait_for(lambda: tree.sim.order_requests > reached, 10, "an order at the simulator")
            tree.wait_for(lambda: tree.health(RECONCILER).healthy and tree.matches_venue(), 30,
                          "the reconciler healthy and Redis matching the venue")

            def applied_after_recovery():
                # The strategy trades on: a trade the venue made a moment ago may not be applied yet.
                after = watch.trades_seen_between(recovered_at)
                return (after,) if set(watch.latencies(after)) == set(after) else None

            (after,) = tree.wait_for(applied_after_recovery, 15, "every fill since the recovery applied")
            latencies = watch.latencies(after)
            assert not watch.late(after, bound), latencies
        tree.assert_matches_venue()
