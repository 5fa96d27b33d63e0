"""Scenario 2: the venue keeps cutting the WS; positions stay right and the gateway backs off.

Every connection is closed again as soon as the gateway has re-established
it, with a fill made while it is down each time. OKX does not replay pushes
missed during a gap, so the REST poller must close every one of them: Redis
matches the venue within one poll interval plus 1 s of each fill. The
gateway's private WS client reconnects with exponential backoff: sessions
that end at once do not reset it, so its delays (read from its stats, never
timed) grow to the configured cap and never beyond. Once the cutting stops,
the pipeline is green again (a fill-health pause, if the missed fills caused
one, is lifted by a canary round trip whose fills arrive on the WS).
"""

from __future__ import annotations

import time

import pytest

from core.control_state import PAUSE_SOURCE_FILL_HEALTH
from supervisor.tree import gateway_id, reconciler_id
from tests.scenarios.harness import (
    BUSY_STRATEGY,
    FillLatencyWatch,
    actor_stats,
    running_tree,
    scenario_config,
    submit_direct,
)

pytestmark = pytest.mark.integration

GATEWAY, RECONCILER = gateway_id("okx"), reconciler_id("okx")
CUTS = 7
MIN_SECS, MAX_SECS = 0.05, 0.8  # reconnect backoff: 0.05, 0.1, 0.2, 0.4, then capped at 0.8
VENUE = {"name": "okx", "instruments": ["BTC-USDT-SWAP", "ETH-USDT-SWAP"],
         "ws_reconnect_min_secs": MIN_SECS, "ws_reconnect_max_secs": MAX_SECS}
CANARY = {"canary_interval_secs": 2.0, "canary_max_interval_secs": 8.0, "canary_deadline_secs": 2.0}


def private_ws(tree) -> dict:
    return actor_stats(tree, GATEWAY)["ws"]["private"]


def test_ws_cut_again_and_again(ray_session, redis_url, namespace):
    config = scenario_config(redis_url, namespace, strategies=[BUSY_STRATEGY], venues=[VENUE], reconciler=CANARY)
    bound = config.reconciler.poll_interval_secs + 1.0
    with running_tree(config) as tree:
        tree.wait_running()
        history_before = len(private_ws(tree)["backoff"])
        with FillLatencyWatch(tree) as watch:
            started = time.monotonic()
            for i in range(CUTS):
                sessions = private_ws(tree)["reconnects"]
                tree.sim.faults.cut_ws()
                submit_direct(tree, "buy" if i % 2 == 0 else "sell")  # a fill while the WS is down
                tree.wait_for(lambda: private_ws(tree)["reconnects"] > sessions, 20, f"reconnect after cut {i + 1}",
                              interval_secs=0.02)
            stormed = time.monotonic()

            # Reconnected after every cut, with a backoff that grew to the cap and stayed within it.
            ws = private_ws(tree)
            assert ws["state"] == "connected" and ws["reconnects"] >= CUTS
            waits = ws["backoff"][history_before:]
            assert len(waits) >= CUTS, waits
            attempts = [attempt for attempt, _ in waits]
            assert attempts[0] == 0 and max(attempts) >= CUTS - 2, attempts
            for attempt, delay in waits:
                ceiling = min(MAX_SECS, MIN_SECS * 2 ** attempt)
                assert ceiling / 2 <= delay <= ceiling <= MAX_SECS, (attempt, delay)
            assert max(delay for _, delay in waits) >= MAX_SECS / 2 > MIN_SECS >= waits[0][1]

            # The pipeline heals: every fill in Redis, the WS carrying fills again, nothing paused.
            tree.wait_for(lambda: PAUSE_SOURCE_FILL_HEALTH not in tree.control_snapshot().venue_pauses
                          and tree.health(RECONCILER).healthy and tree.matches_venue(), 45,
                          "the fill pipeline green again")
            storm_trades = watch.trades_seen_between(started, stormed)
            assert len(storm_trades) >= CUTS
            # Fills the WS missed during the gaps were caught by the poller...
            assert "poll" in {watch.layers[k] for k in storm_trades}, {k: watch.layers.get(k) for k in storm_trades}
            # ...each within one poll interval + 1 s of appearing at the venue.
            everything = watch.trades_seen_between(started)
            latencies = watch.latencies(everything)
            assert set(latencies) == set(everything), set(everything) - set(latencies)
            assert max(latencies.values()) <= bound, sorted(latencies.values())
        tree.assert_matches_venue()
        assert tree.health(GATEWAY).healthy

        # The session has held for seconds now: the next drop is retried at the shortest delay again.
        ws = private_ws(tree)
        tree.sim.faults.cut_ws()
        tree.wait_for(lambda: private_ws(tree)["reconnects"] > ws["reconnects"], 20, "reconnect after a held session",
                      interval_secs=0.02)
        attempt, delay = private_ws(tree)["backoff"][len(ws["backoff"])]
        assert attempt == 0 and delay <= MIN_SECS
