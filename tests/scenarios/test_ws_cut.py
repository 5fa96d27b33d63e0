"""Scenario 2: the venue keeps cutting the WS; positions stay right and the gateway backs off.

For a few seconds the simulator closes every WS connection every quarter of
a second, while fills are made at the venue all along (many while the WS is
down). OKX does not replay pushes missed during a gap, so the REST poller
must close every one of them: Redis matches the venue within one poll
interval plus 1 s of each fill. The gateway's private WS client reconnects
with exponential backoff: sessions cut at once do not reset it, so its delays
(read from its stats, never timed) grow to the configured cap and never
beyond, and once a session holds again the next drop is retried at once.
When the cutting stops the pipeline is green again (a fill-health pause, if
the missed fills caused one, is lifted by a canary round trip whose fills
arrive on the WS).
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.scenarios.harness import (
    BUSY_STRATEGY,
    FillLatencyWatch,
    actor_stats,
    running_tree,
    scenario_config,
    submit_direct,
)
from tradetree.core.control_state import PAUSE_SOURCE_FILL_HEALTH
from tradetree.tree import gateway_id, reconciler_id

pytestmark = pytest.mark.integration

GATEWAY, RECONCILER = gateway_id("okx"), reconciler_id("okx")
STORM_SECS, CUT_EVERY_SECS = 6.0, 0.25  # every session is cut within a quarter second: none holds
MIN_SECS, MAX_SECS = 0.05, 0.8  # reconnect backoff: 0.05, 0.1, 0.2, 0.4, then capped at 0.8
VENUE = {"name": "okx", "instruments": ["BTC-USDT-SWAP", "ETH-USDT-SWAP"],
         "ws_reconnect_min_secs": MIN_SECS, "ws_reconnect_max_secs": MAX_SECS}
CANARY = {"canary_interval_secs": 2.0, "canary_max_interval_secs": 8.0, "canary_deadline_secs": 2.0}


def keep_cutting(tree, stop: threading.Event) -> None:
    while not stop.wait(CUT_EVERY_SECS):
        tree.sim.faults.cut_ws()


def private_ws(tree) -> dict:
    return actor_stats(tree, GATEWAY)["ws"]["private"]


def test_ws_cut_again_and_again(ray_session, redis_url, namespace):
    config = scenario_config(redis_url, namespace, strategies=[BUSY_STRATEGY], venues=[VENUE], reconciler=CANARY)
    bound = config.reconciler.poll_interval_secs + 1.0
    with running_tree(config) as tree:
        tree.wait_running()
        before = private_ws(tree)
        with FillLatencyWatch(tree) as watch:
            started = time.monotonic()
            stop = threading.Event()
            cutter = threading.Thread(target=keep_cutting, args=(tree, stop), daemon=True)
            cutter.start()
            try:
                sides = iter(("buy", "sell") * 100)
                while time.monotonic() - started < STORM_SECS:  # fills all along, many while the WS is down
                    submit_direct(tree, next(sides))
                    time.sleep(0.3)
            finally:
                stop.set()
                cutter.join(timeout=10)
            stormed = time.monotonic()
            tree.wait_for(lambda: private_ws(tree)["state"] == "connected", 20, "the private WS connected again",
                          interval_secs=0.05)

            # Reconnected again and again, with a backoff that grew to the cap and stayed within it.
            ws = private_ws(tree)
            assert ws["reconnects"] >= before["reconnects"] + 4
            waits = ws["backoff"][len(before["backoff"]):]
            attempts = [attempt for attempt, _ in waits]
            assert len(waits) >= 5 and attempts == list(range(len(waits))), waits  # no session held
            for attempt, delay in waits:
                ceiling = min(MAX_SECS, MIN_SECS * 2 ** attempt)
                assert ceiling / 2 <= delay <= ceiling <= MAX_SECS, (attempt, delay)
            assert max(delay for _, delay in waits) >= MAX_SECS / 2 > MIN_SECS >= waits[0][1]

            # The pipeline heals: every fill in Redis, the WS carrying fills again, nothing paused.
            tree.wait_for(lambda: PAUSE_SOURCE_FILL_HEALTH not in tree.control_snapshot().venue_pauses
                          and tree.health(RECONCILER).healthy and tree.matches_venue()
                          and actor_stats(tree, RECONCILER)["gaps"]["ws_flow"]["unmatched_fills"] == 0, 45,
                          "the fill pipeline green again, no fill waiting for the WS")
            storm_trades = watch.trades_seen_between(started, stormed)
            assert len(storm_trades) >= 10
            # Fills the WS missed during the gaps were caught by the poller...
            assert "poll" in {watch.layers[k] for k in storm_trades}, {k: watch.layers.get(k) for k in storm_trades}
            # ...each within one poll interval + 1 s of appearing at the venue.
            def all_matched():
                # The watch samples on its own thread: its view of the last fill can trail the check above.
                seen = watch.trades_seen_between(started)
                return (seen,) if set(watch.latencies(seen)) == set(seen) else None

            (everything,) = tree.wait_for(all_matched, 15, "the watch saw every storm trade applied")
            latencies = watch.latencies(everything)
            assert not watch.late(everything, bound), sorted(latencies.values())
        tree.assert_matches_venue()
        # Its probes are sampled: right after the last cut one may still be catching up.
        tree.wait_for(lambda: tree.health(GATEWAY).healthy, 30, "the gateway's probes green")

        # Once a session has held (twice the cap, with no reconnect meanwhile), the next drop is
        # retried at the shortest delay again.
        ws = private_ws(tree)
        held_from = time.monotonic()
        assert ws["state"] == "connected"
        tree.wait_for(lambda: time.monotonic() - held_from >= 2 * MAX_SECS, 10, "a session that holds")
        assert private_ws(tree)["reconnects"] == ws["reconnects"]
        tree.sim.faults.cut_ws()
        tree.wait_for(lambda: private_ws(tree)["reconnects"] > ws["reconnects"], 20, "reconnect after a held session",
                      interval_secs=0.02)
        attempt, delay = private_ws(tree)["backoff"][len(ws["backoff"])]
        assert attempt == 0 and delay <= MIN_SECS
