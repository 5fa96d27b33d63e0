"""FillHealthMonitor: gap timing, targeted fetch, recurrence -> pause, WS-flow probe."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tradetree.core import AuditEntry
from tradetree.core.clock import ManualClock
from tradetree.core.types import Fill, FillLayer, Order, OrderState, OrderType, Side
from tradetree.execution.fill_health import FillHealthActionKind as K
from tradetree.execution.fill_health import (
    FillHealthMonitor,
    OrderFillObservation,
    gap_backdates,
    observations_of,
    stale_gap_keys,
    unmatched_in_audit,
)

D = Decimal
T = 5.0


def obs(coid: str, filled: str, applied: str, inst_id: str = "BTC-USDT-SWAP") -> OrderFillObservation:
    return OrderFillObservation(client_order_id=coid, inst_id=inst_id, venue_filled=D(filled), applied=D(applied))


def kinds(actions, coid=None):
    return [a.kind for a in actions if coid is None or a.client_order_id == coid]


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def monitor():
    return FillHealthMonitor("okx", gap_alert_secs=T, recurrence_count=2, recurrence_window_secs=60)


def test_rejects_bad_thresholds():
    with pytest.raises(ValueError):
        FillHealthMonitor("okx", gap_alert_secs=0)
    with pytest.raises(ValueError):
        FillHealthMonitor("okx", recurrence_count=0)


def test_no_action_while_fills_agree(monitor, clock):
    for _ in range(20):
        assert monitor.evaluate([obs("a", "1", "1"), obs("b", "0", "0")], clock.monotonic()) == []
        clock.advance(1)
    assert monitor.gaps(clock.monotonic()) == []


def test_gap_younger_than_threshold_does_nothing(monitor, clock):
    assert monitor.evaluate([obs("a", "2", "0")], clock.monotonic()) == []
    clock.advance(T - 0.5)
    assert monitor.evaluate([obs("a", "2", "0")], clock.monotonic()) == []
    (gap,) = monitor.gaps(clock.monotonic())
    assert gap.age_secs == pytest.approx(T - 0.5) and not gap.episode
    assert monitor.overdue_gaps(clock.monotonic()) == []


def test_gap_at_threshold_triggers_targeted_fetch_and_alert(monitor, clock):
    monitor.evaluate([obs("a", "2", "0")], clock.monotonic())
    clock.advance(T)
    actions = monitor.evaluate([obs("a", "2", "0")], clock.monotonic())
    assert kinds(actions) == [K.ALERT, K.TARGETED_FETCH]
    assert all(a.key == "fill_gap:a" for a in actions)
    assert [a.opens_discrepancy for a in actions] == [True, False]  # the alert records the gap in Redis
    assert monitor.gaps_detected == 1 and monitor.targeted_fetches == 1
    # once per episode: no repeat while the fetch is in flight
    clock.advance(1)
    assert monitor.evaluate([obs("a", "2", "0")], clock.monotonic()) == []
    assert [g.client_order_id for g in monitor.overdue_gaps(clock.monotonic())] == ["a"]


def test_targeted_fetch_that_closes_the_gap_resolves_without_pause(monitor, clock):
    monitor.evaluate([obs("a", "2", "0")], clock.monotonic())
    clock.advance(T)
    monitor.evaluate([obs("a", "2", "0")], clock.monotonic())
    monitor.record_fetch_result("a", ok=True)
    clock.advance(1)
    actions = monitor.evaluate([obs("a", "2", "2")], clock.monotonic())
    assert kinds(actions) == [K.RESOLVED]
    assert monitor.pauses == 0
    assert monitor.overdue_gaps(clock.monotonic()) == []


def test_gap_persisting_after_targeted_fetch_pauses_the_venue(monitor, clock):
    monitor.evaluate([obs("a", "2", "0")], clock.monotonic())
    clock.advance(T)
    monitor.evaluate([obs("a", "2", "0")], clock.monotonic())
    monitor.record_fetch_result("a", ok=True, detail="found 0 fills")
    clock.advance(1)
    actions = monitor.evaluate([obs("a", "2", "0")], clock.monotonic())
    assert kinds(actions) == [K.PAUSE_VENUE]
    assert "persists after a targeted fetch" in actions[0].detail
    # the pause is not repeated; the fetch is retried at the alert cadence
    clock.advance(1)
    assert monitor.evaluate([obs("a", "2", "0")], clock.monotonic()) == []
    clock.advance(T)
    assert kinds(monitor.evaluate([obs("a", "2", "0")], clock.monotonic())) == [K.TARGETED_FETCH]
    assert monitor.pauses == 1


def test_failed_targeted_fetch_counts_as_persisting(monitor, clock):
    monitor.evaluate([obs("a", "2", "0")], clock.monotonic())
    clock.advance(T)
    monitor.evaluate([obs("a", "2", "0")], clock.monotonic())
    monitor.record_fetch_result("a", ok=False)
    actions = monitor.evaluate([obs("a", "2", "0")], clock.monotonic())
    assert kinds(actions) == [K.PAUSE_VENUE]


def test_recurring_gaps_within_window_pause_the_venue(monitor, clock):
    # first episode, fixed by its targeted fetch
    monitor.evaluate([obs("a", "1", "0")], clock.monotonic())
    clock.advance(T)
    assert K.PAUSE_VENUE not in kinds(monitor.evaluate([obs("a", "1", "0")], clock.monotonic()))
    monitor.record_fetch_result("a", ok=True)
    monitor.evaluate([obs("a", "1", "1")], clock.monotonic())
    # a second gap on another order, 20 s later
    clock.advance(20)
    monitor.evaluate([obs("b", "1", "0")], clock.monotonic())
    clock.advance(T)
    actions = monitor.evaluate([obs("b", "1", "0")], clock.monotonic())
    assert kinds(actions) == [K.ALERT, K.TARGETED_FETCH, K.PAUSE_VENUE]
    assert actions[-1].key == "fill_gap_recurrence"


def test_gaps_further_apart_than_the_window_do_not_pause(monitor, clock):
    for coid in ("a", "b", "c"):
        monitor.evaluate([obs(coid, "1", "0")], clock.monotonic())
        clock.advance(T)
        actions = monitor.evaluate([obs(coid, "1", "0")], clock.monotonic())
        assert K.PAUSE_VENUE not in kinds(actions)
        monitor.record_fetch_result(coid, ok=True)
        monitor.evaluate([obs(coid, "1", "1")], clock.monotonic())
        clock.advance(61)
    assert monitor.gaps_detected == 3 and monitor.pauses == 0


def test_order_that_keeps_filling_with_fills_arriving_shortly_after_is_healthy(monitor, clock):
    # status runs 1 s ahead of the applied fills for a minute: never a gap older than T
    for i in range(60):
        actions = monitor.evaluate([obs("a", str(i + 1), str(i))], clock.monotonic())
        assert actions == []
        clock.advance(1)
    assert monitor.overdue_gaps(clock.monotonic()) == []


def test_gap_age_counts_from_the_oldest_unreached_level(monitor, clock):
    monitor.evaluate([obs("a", "1", "0")], clock.monotonic())
    clock.advance(3)
    monitor.evaluate([obs("a", "2", "0")], clock.monotonic())
    clock.advance(2)  # level 1 is now T old
    actions = monitor.evaluate([obs("a", "2", "0")], clock.monotonic())
    assert kinds(actions) == [K.ALERT, K.TARGETED_FETCH]


def test_untracked_order_resolves_its_episode(monitor, clock):
    monitor.evaluate([obs("a", "1", "0")], clock.monotonic())
    clock.advance(T)
    monitor.evaluate([obs("a", "1", "0")], clock.monotonic())
    actions = monitor.evaluate([], clock.monotonic())
    assert kinds(actions) == [K.RESOLVED]
    assert monitor.gaps(clock.monotonic()) == []


def test_over_applied_for_longer_than_threshold_alerts_once(monitor, clock):
    assert monitor.evaluate([obs("a", "1", "2")], clock.monotonic()) == []
    clock.advance(T)
    actions = monitor.evaluate([obs("a", "1", "2")], clock.monotonic())
    assert kinds(actions) == [K.ALERT] and actions[0].key == "over_applied:a"
    assert not actions[0].opens_discrepancy
    clock.advance(T)
    assert monitor.evaluate([obs("a", "1", "2")], clock.monotonic()) == []


def test_ws_status_briefly_behind_a_ws_fill_is_not_an_alert(monitor, clock):
    monitor.evaluate([obs("a", "0", "1")], clock.monotonic())
    clock.advance(0.5)
    assert monitor.evaluate([obs("a", "1", "1")], clock.monotonic()) == []
    clock.advance(T)
    assert monitor.evaluate([obs("a", "1", "1")], clock.monotonic()) == []


# -- WS flow -------------------------------------------------------------------------------------


def counts(ws_delivered=0, poll_applied=0, health_applied=0, ws_applied=0):
    return {"ws": {"delivered": ws_delivered, "applied": ws_applied},
            "poll": {"delivered": poll_applied, "applied": poll_applied},
            "health": {"delivered": health_applied, "applied": health_applied}}


def test_ws_flow_ok_when_idle(monitor, clock):
    for _ in range(10):
        monitor.observe_layer_counts(counts(), clock.monotonic())
        clock.advance(1)
    assert monitor.ws_flow(clock.monotonic()).flowing


def test_ws_flow_fails_when_poll_applies_fills_the_ws_never_delivers(monitor, clock):
    monitor.observe_layer_counts(counts(), clock.monotonic())
    clock.advance(1)
    monitor.observe_layer_counts(counts(poll_applied=2), clock.monotonic())
    assert monitor.ws_flow(clock.monotonic()).flowing  # not yet: the WS may just be slower
    clock.advance(T)
    monitor.observe_layer_counts(counts(poll_applied=2), clock.monotonic())
    status = monitor.ws_flow(clock.monotonic())
    assert not status.flowing and status.unmatched_fills == 2
    assert "not delivered by the WS" in status.detail


def test_ws_flow_ok_when_ws_delivers_fills_poll_applied_first(monitor, clock):
    monitor.observe_layer_counts(counts(), clock.monotonic())
    clock.advance(1)
    monitor.observe_layer_counts(counts(poll_applied=1), clock.monotonic())
    clock.advance(1)
    monitor.observe_layer_counts(counts(poll_applied=1, ws_delivered=1), clock.monotonic())  # a duplicate
    clock.advance(T)
    assert monitor.ws_flow(clock.monotonic()).flowing


def test_ws_flow_recovers_after_the_window_and_when_ws_delivers_again(monitor, clock):
    m = FillHealthMonitor("okx", gap_alert_secs=T, ws_flow_window_secs=30)
    m.observe_layer_counts(counts(), clock.monotonic())
    clock.advance(1)
    m.observe_layer_counts(counts(health_applied=1), clock.monotonic())
    clock.advance(T)
    assert not m.ws_flow(clock.monotonic()).flowing
    clock.advance(30)
    assert m.ws_flow(clock.monotonic()).flowing  # nothing unmatched in the window any more
    m.observe_layer_counts(counts(health_applied=2), clock.monotonic())
    clock.advance(T)
    assert not m.ws_flow(clock.monotonic()).flowing
    m.observe_layer_counts(counts(health_applied=2, ws_delivered=5, ws_applied=5), clock.monotonic())
    assert m.ws_flow(clock.monotonic()).flowing


def test_ws_flow_baseline_restarts_when_counters_shrink(monitor, clock):
    monitor.observe_layer_counts(counts(poll_applied=10), clock.monotonic())
    clock.advance(1)
    monitor.observe_layer_counts(counts(poll_applied=11), clock.monotonic())
    monitor.observe_layer_counts(counts(), clock.monotonic())  # namespace reset
    clock.advance(T)
    assert monitor.ws_flow(clock.monotonic()).flowing


# -- what the reconciler feeds the monitor, and what Redis remembers -------------------------------


def test_observations_pair_the_venue_filled_size_with_the_applied_one():
    order = Order(client_order_id="c1", strategy_id="s1", venue="okx", inst_id="BTC-USDT-SWAP", side=Side.BUY,
                  type=OrderType.MARKET, size=D(3), state=OrderState.PARTIALLY_FILLED, filled_size=D(2),
                  created_ms=1, updated_ms=1)
    assert observations_of([(order, D(1))]) == [obs("c1", "2", "1")]


def applied(venue: str, layer: FillLayer, applied_ms: int) -> AuditEntry:
    fill = Fill(venue=venue, inst_id="BTC-USDT-SWAP", trade_id=f"t{applied_ms}", side=Side.BUY, price=D(1),
                size=D(1), ts_ms=applied_ms, layer=layer)
    return AuditEntry(entry_id=f"{applied_ms}-0", fill=fill, strategy_id="s1", attributed_order_id=None,
                      applied_ms=applied_ms)


def test_the_audit_gives_the_poll_fills_after_the_last_ws_one_as_monotonic_times():
    entries = [
        applied("okx", FillLayer.POLL, 1_000),  # before the WS last applied one: matched
        applied("okx", FillLayer.WS, 2_000),
        applied("okx", FillLayer.POLL, 3_000),
        applied("okx", FillLayer.HEALTH, 4_000),
        applied("binance", FillLayer.POLL, 4_500),
    ]
    assert unmatched_in_audit("okx", entries, now_secs=100.0, now_ms=5_000) == [98.0, 99.0]
    only_poll = [applied("okx", FillLayer.POLL, 1_000)]
    assert unmatched_in_audit("okx", only_poll, now_secs=100.0, now_ms=5_000) == [96.0]


def test_gaps_are_backdated_from_their_discrepancies_since_ms():
    open_discrepancies = {
        "fill_gap:c1": {"since_ms": 2_000, "detail": "x"},
        "fill_gap:c2": {"detail": "no since"},
        "drift:X": {"since_ms": 1_000},
    }
    assert gap_backdates(open_discrepancies, now_secs=50.0, now_ms=10_000) == {"c1": 42.0}


def test_gap_discrepancies_close_when_their_order_has_no_gap_any_more():
    observations = [obs("c1", "2", "1"), obs("c2", "2", "2")]
    keys = ["fill_gap:c1", "fill_gap:c2", "fill_gap:gone", "drift:X"]
    assert stale_gap_keys(keys, observations) == ["fill_gap:c2", "fill_gap:gone"]
