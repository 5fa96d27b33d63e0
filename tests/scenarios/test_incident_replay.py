"""Scenario 1: the incident, replayed on the whole tree (Ray, real Redis, the simulator).

The venue keeps pushing order status on the WS but drops every fill record
(``drop_fill_records``). What must happen, each layer on its own trigger:

- the REST poller applies the fills the WS dropped (audit layer ``poll``) and
  Redis matches the venue within one poll interval plus 1 s of each fill;
- the fill-health layer sees fills applied that the WS never delivered:
  an alert fires and the venue is paused (``ControlState``); the freshness
  gate refuses the strategy's orders and none reaches the simulator;
- while the venue is paused nothing trades, so the reconciler's canary round
  trip makes fills happen on purpose: with the fault still on, the canary's
  fills arrive by ``poll`` only and the venue stays paused (alert, backoff);
- once the fault is cleared, the next canary's fills arrive on the WS, the
  reconciler lifts its pause and only then does the strategy trade again.

The two tests share one tree and each sets up what it needs (run alone, the
second one starts the incident itself).
"""

from __future__ import annotations

import time
import uuid

import pytest

from tests.conftest import TEST_REDIS_URL
from tests.scenarios.harness import (
    BUSY_STRATEGY,
    PROBE_INST,
    FillLatencyWatch,
    Tree,
    actor_stats,
    running_tree,
    scenario_config,
    submit_direct,
    venue_trade_keys,
)
from tests.scenarios.tree_helpers import call, orders_of
from tradetree.core.control_state import PAUSE_SOURCE_FILL_HEALTH
from tradetree.tree import reconciler_id

pytestmark = pytest.mark.integration

RECONCILER = reconciler_id("okx")
CANARY = {"canary_interval_secs": 2.0, "canary_max_interval_secs": 8.0, "canary_deadline_secs": 2.0}


@pytest.fixture(scope="module")
def tree(ray_session):
    import redis

    namespace = f"tt-test-{uuid.uuid4().hex[:12]}"
    config = scenario_config(TEST_REDIS_URL, namespace, strategies=[BUSY_STRATEGY], reconciler=CANARY)
    try:
        with running_tree(config) as t:
            t.wait_running()
            yield t
    finally:
        client = redis.Redis.from_url(TEST_REDIS_URL)
        keys = list(client.scan_iter(match=f"{namespace}:*", count=500))
        if keys:
            client.delete(*keys)
        client.close()


def bound_secs(tree: Tree) -> float:
    """The issue's bound: one poll interval plus 1 s."""
    return tree.config.reconciler.poll_interval_secs + 1.0


def strategy_id(tree: Tree) -> str:
    return tree.config.strategies[0].id


def pauses(tree: Tree) -> dict:
    return tree.control_snapshot().venue_pauses


def canaries(tree: Tree) -> list[dict]:
    return actor_stats(tree, RECONCILER)["canary"]["history"]


def quiet_order_counts(tree: Tree) -> tuple[int, int]:
    """(orders that reached the simulator, canary orders the reconciler sent), read while no
    canary round trip is in flight, so the two agree on which canary orders they include."""

    def read():
        before = actor_stats(tree, RECONCILER)
        reached = tree.sim.order_requests
        after = actor_stats(tree, RECONCILER)
        sent = after["counters"]["canary_orders_sent"]
        quiet = not before["canary"]["in_flight"] and not after["canary"]["in_flight"]
        return quiet and sent == before["counters"]["canary_orders_sent"] and (reached, sent)

    return tree.wait_for(read, 30, "a moment without a canary in flight", interval_secs=0.05)


def start_incident(tree: Tree) -> tuple[float, set[str], list[str]]:
    """Fault on, three fills made on purpose. Returns the monotonic start, the venue's trades at
    the moment the fault was on (their pushes may have gone out before it), and the probes' ids."""
    started = time.monotonic()
    tree.sim.faults.set_drop_fill_records(True)
    before = venue_trade_keys(tree)
    probes = [submit_direct(tree, side).client_order_id for side in ("buy", "sell", "buy")]
    return started, before, probes


def test_fault_on_poller_catches_every_fill_venue_pauses_and_the_canary_keeps_it_paused(tree):
    sid = strategy_id(tree)
    with FillLatencyWatch(tree) as watch:
        started, before, probes = start_incident(tree)
        reason = tree.wait_for(lambda: pauses(tree).get(PAUSE_SOURCE_FILL_HEALTH), 30, "a fill-health venue pause")
        assert "not arriving on the WS" in reason["reason"]

        # The fill-health alert, and the pause alert.
        keys = {(a["severity"], a["key"]) for a in tree.alerts()}
        assert {("warning", "okx:ws_fill_flow"), ("critical", "okx:venue_paused")} <= keys, keys

        # The gate refuses the strategy's orders: wait for a refusal naming the pause, then count.
        denials = call(tree, sid, "stats")["denials"]
        tree.wait_for(lambda: (s := call(tree, sid, "stats"))["denials"] > denials
                      and any("venue okx paused" in r for r in s["last_denial"]), 30, "a refusal for the pause")
        reached, canary_sent = quiet_order_counts(tree)
        known = set(orders_of(tree, sid))
        earlier = len(canaries(tree))

        # The fault stays on: the canary's fills come by poll only, and the venue stays paused.
        failed = tree.wait_for(lambda: canaries(tree)[earlier:], 40, "a canary round trip")[0]
        assert failed["verdict"] == "not_ws", failed
        assert not failed["resumed"] and failed["ws_delivered"] == 0
        assert failed["trade_layers"] and set(failed["trade_layers"].values()) == {"poll"}, failed
        assert PAUSE_SOURCE_FILL_HEALTH in pauses(tree)
        assert any(a["key"] == "okx:canary_failed" and a["severity"] == "warning" for a in tree.alerts())
        more = call(tree, sid, "stats")["denials"]
        tree.wait_for(lambda: call(tree, sid, "stats")["denials"] >= more + 3, 30, "three more refusals")

        # Nothing of the strategy's reached the venue meanwhile: only the canary's orders did.
        reached_now, canary_sent_now = quiet_order_counts(tree)
        assert set(orders_of(tree, sid)) == known
        assert reached_now - reached == canary_sent_now - canary_sent > 0

        # Every fill since the fault: in Redis within one poll interval + 1 s, applied by the poller.
        tree.wait_for(tree.matches_venue, 15, "Redis to match the venue")

        def all_matched():  # the watch's own view trails the check above
            seen = [k for k in watch.trades_seen_between(started) if k not in before]
            return (seen,) if set(watch.latencies(seen)) == set(seen) else None

        (new,) = tree.wait_for(all_matched, 15, "the watch saw every trade since the fault applied")
        assert len(new) >= 3 + 2  # the three probes and at least one canary round trip
        latencies = watch.latencies(new)
        assert not watch.late(new, bound_secs(tree)), sorted(latencies.values())
        assert {watch.layers[k] for k in new} == {"poll"}

    audit = tree.audit()
    probe_layers = {e.fill.layer.value for e in audit if e.attributed_order_id in probes}
    assert probe_layers == {"poll"} and len({e.attributed_order_id for e in audit} & set(probes)) == 3
    assert all(e.fill.inst_id == PROBE_INST for e in audit if e.attributed_order_id in probes)
    tree.assert_matches_venue()
    assert tree.sim.faults.settings.drop_fill_records  # left on: the venue stays paused


def test_fault_off_canary_fills_on_the_ws_release_trading(tree):
    sid = strategy_id(tree)
    if PAUSE_SOURCE_FILL_HEALTH not in pauses(tree):  # run alone: start the incident first
        start_incident(tree)
        tree.wait_for(lambda: PAUSE_SOURCE_FILL_HEALTH in pauses(tree), 30, "a fill-health venue pause")
    tree.wait_for(lambda: [c for c in canaries(tree) if c["verdict"] == "not_ws"], 40, "a canary by poll only")

    with FillLatencyWatch(tree) as watch:
        tree.wait_for(lambda: not actor_stats(tree, RECONCILER)["canary"]["in_flight"], 30,
                      "no canary in flight", interval_secs=0.05)
        cleared_ms = int(time.time() * 1000)
        cleared = time.monotonic()
        tree.sim.faults.clear_all()
        # Clearing the fault lifts nothing: only the canary's fills on the WS prove the path.
        assert PAUSE_SOURCE_FILL_HEALTH in pauses(tree)
        assert not tree.health(RECONCILER).healthy
        known = set(orders_of(tree, sid))

        tree.wait_for(lambda: PAUSE_SOURCE_FILL_HEALTH not in pauses(tree), 30, "the pause lifted")
        released_ms = int(time.time() * 1000)
        proof = [c for c in canaries(tree) if c["resumed"]]
        assert len(proof) == 1, canaries(tree)
        proof = proof[0]
        assert proof["verdict"] == "ws" and cleared_ms <= proof["finished_ms"] <= released_ms
        assert proof["ws_delivered"] >= len(proof["trade_layers"]) >= 2
        assert all(not c["resumed"] for c in canaries(tree) if c["finished_ms"] < proof["finished_ms"])
        assert any(a["key"] == "okx:venue_resumed" and a["severity"] == "info" for a in tree.alerts())

        # Strategies trade again, and only after the proof: their first new order is younger than it.
        fresh = tree.wait_for(lambda: {c: o for c, o in orders_of(tree, sid).items() if c not in known}, 40,
                              "the strategy's first order after the release")
        assert min(o.created_ms for o in fresh.values()) >= proof["finished_ms"]
        tree.wait_for(lambda: tree.health(RECONCILER).healthy, 30, "the reconciler's probes green")

        # The canary nets to zero and the audit shows every canary fill once.
        tree.wait_for(tree.matches_venue, 15, "Redis to match the venue")
        canary_positions = [p for p in tree.positions() if p.strategy_id == "_canary"]
        assert canary_positions and all(p.qty == 0 for p in canary_positions)
        canary_trades = {e.fill.trade_id for e in tree.audit() if e.strategy_id == "_canary"}
        assert set(proof["trade_layers"]) <= canary_trades

        def all_matched():
            # The watch samples on its own thread, and the strategy trades on: a trade the venue made
            # a moment ago may be seen by the watch and not matched yet.
            seen = watch.trades_seen_between(cleared)
            return (seen,) if set(watch.latencies(seen)) == set(seen) else None

        (new,) = tree.wait_for(all_matched, 15, "the watch saw every trade since the fault applied")
        latencies = watch.latencies(new)
        assert not watch.late(new, bound_secs(tree)), latencies
    tree.assert_matches_venue()
