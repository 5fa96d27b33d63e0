"""Pure reconciliation decisions: fills to apply, the cursor, order snapshots and untracking."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tradetree.adapters.okx.reports import VenueOrderReport
from tradetree.core.types import Fill, FillLayer, Order, OrderState, OrderType, Side
from tradetree.execution.reconciliation import (
    NEVER_REACHED_VENUE,
    LookupKind,
    OrderDecision,
    OrderLookup,
    ReconcilerConfig,
    TrackedOrder,
    advance_cursor,
    fetch_since_ms,
    plan_fills,
    plan_orders,
)

T0 = 1_700_000_000_000
GRACE_MS = 10_000
D = Decimal


def order(coid: str = "c1", *, state: OrderState = OrderState.LIVE, size: str = "2", filled: str = "0",
          void: str | None = "v1", created_ms: int = T0, inst_id: str = "BTC-USDT-SWAP") -> Order:
    return Order(
        client_order_id=coid, strategy_id="s1", venue="okx", inst_id=inst_id, side=Side.BUY,
        type=OrderType.MARKET, size=D(size), state=state, venue_order_id=void, filled_size=D(filled),
        created_ms=created_ms, updated_ms=created_ms,
    )


def report(coid: str = "c1", *, state: OrderState, filled: str, size: str = "2", void: str = "v1",
           updated_ms: int = T0 + 100) -> VenueOrderReport:
    return VenueOrderReport(
        venue="okx", inst_id="BTC-USDT-SWAP", venue_order_id=void, client_order_id=coid, side=Side.BUY,
        state=state, venue_state=state.value, size=D(size), filled_size=D(filled),
        avg_price=D("100") if D(filled) > 0 else None, updated_ms=updated_ms,
    )


def fill(trade_id: str, ts_ms: int, *, venue: str = "okx", size: str = "1", layer: FillLayer = FillLayer.POLL) -> Fill:
    return Fill(venue=venue, inst_id="BTC-USDT-SWAP", trade_id=trade_id, client_order_id="c1", venue_order_id="v1",
                side=Side.BUY, price=D("100"), size=D(size), ts_ms=ts_ms, layer=layer)


def plan(tracked, lookups, now_ms=T0 + 1_000):
    return plan_orders(tracked, {lk.client_order_id: lk for lk in lookups}, now_ms=now_ms, pending_grace_ms=GRACE_MS)


# -- config -----------------------------------------------------------------------------------


def test_config_defaults_and_strictness():
    cfg = ReconcilerConfig()
    assert (cfg.poll_interval_secs, cfg.fill_health_interval_secs, cfg.fill_gap_alert_secs) == (2.0, 1.0, 5.0)
    assert (cfg.gap_recurrence_count, cfg.gap_recurrence_window_secs, cfg.drift_interval_secs) == (2, 60.0, 5.0)
    assert cfg.drift_tolerance == 0 and cfg.pending_grace_secs == 10
    with pytest.raises(ValueError):
        ReconcilerConfig(poll_intervall_secs=1)
    with pytest.raises(ValueError):
        ReconcilerConfig(poll_interval_secs=0)
    with pytest.raises(ValueError):
        cfg.poll_interval_secs = 3  # frozen


# -- fills --------------------------------------------------------------------------------------


def test_plan_fills_tags_poll_sorts_dedups_and_drops_other_venues():
    fills = [fill("3", T0 + 30, layer=FillLayer.WS), fill("1", T0 + 10), fill("2", T0 + 10),
             fill("1", T0 + 10), fill("9", T0 + 5, venue="binance")]
    planned = plan_fills("okx", fills)
    assert [f.trade_id for f in planned] == ["1", "2", "3"]
    assert all(f.layer is FillLayer.POLL for f in planned)


def test_cursor_moves_to_newest_when_everything_was_stored():
    planned = plan_fills("okx", [fill("1", T0 + 10), fill("2", T0 + 20)])
    assert advance_cursor(T0, planned, {f.key for f in planned}) == T0 + 20


def test_cursor_stops_at_the_first_fill_not_stored():
    planned = plan_fills("okx", [fill("1", T0 + 10), fill("2", T0 + 20), fill("3", T0 + 30)])
    stored = {planned[0].key, planned[2].key}  # fill 2 failed, fill 3 went through
    assert advance_cursor(T0, planned, stored) == T0 + 20  # fill 2 is fetched again


def test_cursor_never_moves_backwards_and_stays_without_fills():
    assert advance_cursor(T0 + 50, [], set()) == T0 + 50
    assert advance_cursor(None, [], set()) is None
    planned = plan_fills("okx", [fill("1", T0 + 10)])
    assert advance_cursor(T0 + 50, planned, {planned[0].key}) == T0 + 50
    assert advance_cursor(T0 + 50, planned, set()) == T0 + 50


def test_first_cursor_comes_from_the_planned_fills():
    planned = plan_fills("okx", [fill("1", T0 + 10)])
    assert advance_cursor(None, planned, set()) == T0 + 10
    assert advance_cursor(None, planned, {planned[0].key}) == T0 + 10


@given(
    ts=st.lists(st.integers(min_value=0, max_value=1_000), min_size=1, max_size=30),
    ok=st.lists(st.booleans(), min_size=30, max_size=30),
    cursor=st.one_of(st.none(), st.integers(min_value=0, max_value=500)),
)
def test_cursor_never_skips_a_fill_that_was_not_stored(ts, ok, cursor):
    planned = plan_fills("okx", [fill(str(i), T0 + t) for i, t in enumerate(ts)])
    stored = {f.key for f, good in zip(planned, ok) if good}
    new = advance_cursor(None if cursor is None else T0 + cursor, planned, stored)
    assert new is not None
    if cursor is not None:
        assert new >= T0 + cursor
    for f in planned:
        if f.key not in stored and (cursor is None or f.ts_ms >= T0 + cursor):
            # the next fetch (inclusive of the cursor) still returns it
            assert f.ts_ms >= new


def test_fetch_since_uses_the_cursor_minus_overlap():
    assert fetch_since_ms(T0 + 60_000, [], "BTC-USDT-SWAP", now_ms=T0 + 90_000, overlap_ms=5_000) == T0 + 55_000


def test_fetch_since_without_cursor_starts_at_the_oldest_tracked_order_or_now():
    tracked = [TrackedOrder(order=order("a", created_ms=T0 - 30_000)),
               TrackedOrder(order=order("b", created_ms=T0 - 90_000, inst_id="ETH-USDT-SWAP"))]
    assert fetch_since_ms(None, tracked, "BTC-USDT-SWAP", now_ms=T0, overlap_ms=1_000) == T0 - 31_000
    assert fetch_since_ms(None, [], "BTC-USDT-SWAP", now_ms=T0, overlap_ms=1_000) == T0 - 1_000


# -- orders: untrack only when the poller saw terminal and the sizes add up ------------------------


def test_status_filled_but_fills_missing_keeps_tracking():
    tracked = [TrackedOrder(order=order(), applied_size=D(0))]
    result = plan(tracked, [OrderLookup.found(report(state=OrderState.FILLED, filled="2"), "c1")])
    assert result.untrack == ()
    assert result.decisions["c1"] is OrderDecision.AWAITING_FILLS
    (update,) = result.updates  # the status is still recorded
    assert update.state is OrderState.FILLED and update.filled_size == 2


def test_filled_and_all_fills_applied_untracks():
    tracked = [TrackedOrder(order=order(), applied_size=D(2))]
    result = plan(tracked, [OrderLookup.found(report(state=OrderState.FILLED, filled="2"), "c1")])
    assert result.untrack == ("c1",)
    assert result.updates[0].state is OrderState.FILLED


def test_partial_fill_stays_tracked_even_when_applied_matches():
    tracked = [TrackedOrder(order=order(), applied_size=D(1))]
    result = plan(tracked, [OrderLookup.found(report(state=OrderState.PARTIALLY_FILLED, filled="1"), "c1")])
    assert result.untrack == ()
    assert result.decisions["c1"] is OrderDecision.OPEN
    assert result.updates[0].state is OrderState.PARTIALLY_FILLED


def test_canceled_with_partial_fill_untracks_only_when_the_partial_is_applied():
    r = report(state=OrderState.CANCELED, filled="0.5")
    short = plan([TrackedOrder(order=order(), applied_size=D(0))], [OrderLookup.found(r, "c1")])
    assert short.untrack == () and short.decisions["c1"] is OrderDecision.AWAITING_FILLS
    done = plan([TrackedOrder(order=order(), applied_size=D("0.5"))], [OrderLookup.found(r, "c1")])
    assert done.untrack == ("c1",)


def test_canceled_unfilled_untracks():
    result = plan([TrackedOrder(order=order())], [OrderLookup.found(report(state=OrderState.CANCELED, filled="0"), "c1")])
    assert result.untrack == ("c1",)


def test_ws_terminal_snapshot_does_not_untrack_without_a_poller_report():
    # The WS wrote FILLED and its fills; the poller's lookup failed this cycle.
    ws_done = order(state=OrderState.FILLED, filled="2")
    result = plan([TrackedOrder(order=ws_done, applied_size=D(2))], [OrderLookup.failed("c1", "503")])
    assert result.untrack == () and result.updates == ()
    assert result.decisions["c1"] is OrderDecision.LOOKUP_FAILED
    missing = plan([TrackedOrder(order=ws_done, applied_size=D(2))], [])
    assert missing.untrack == ()


def test_ws_terminal_snapshot_untracks_once_the_poller_sees_terminal_itself():
    ws_done = order(state=OrderState.FILLED, filled="2")
    result = plan([TrackedOrder(order=ws_done, applied_size=D(2))],
                  [OrderLookup.found(report(state=OrderState.FILLED, filled="2"), "c1")])
    assert result.untrack == ("c1",)
    assert result.updates == ()  # nothing newer to write


def test_poller_seeing_open_order_keeps_ws_terminal_snapshot_tracked():
    # Redis says FILLED (from the WS) but the venue still reports it working: keep polling.
    ws_done = order(state=OrderState.FILLED, filled="2")
    result = plan([TrackedOrder(order=ws_done, applied_size=D(2))],
                  [OrderLookup.found(report(state=OrderState.PARTIALLY_FILLED, filled="1"), "c1")])
    assert result.untrack == ()


def test_over_applied_terminal_order_is_kept_and_reported():
    result = plan([TrackedOrder(order=order(), applied_size=D(3))],
                  [OrderLookup.found(report(state=OrderState.FILLED, filled="2"), "c1")])
    assert result.untrack == ()
    assert result.decisions["c1"] is OrderDecision.OVER_APPLIED
    assert "more than" in result.anomalies["c1"]


def test_pending_unknown_within_grace_is_kept():
    pending = order(state=OrderState.PENDING_NEW, void=None)
    result = plan([TrackedOrder(order=pending)], [OrderLookup.unknown("c1")], now_ms=T0 + GRACE_MS - 1)
    assert result.updates == () and result.untrack == ()
    assert result.decisions["c1"] is OrderDecision.PENDING_GRACE


def test_pending_unknown_after_grace_is_rejected_never_reached_and_untracked():
    pending = order(state=OrderState.PENDING_NEW, void=None)
    result = plan([TrackedOrder(order=pending)], [OrderLookup.unknown("c1")], now_ms=T0 + GRACE_MS)
    (update,) = result.updates
    assert update.state is OrderState.REJECTED and update.reject_reason == NEVER_REACHED_VENUE
    assert result.untrack == ("c1",)


def test_pending_found_takes_the_venue_state():
    pending = order(state=OrderState.PENDING_NEW, void=None)
    result = plan([TrackedOrder(order=pending)], [OrderLookup.found(report(state=OrderState.LIVE, filled="0"), "c1")],
                  now_ms=T0 + 60_000)
    (update,) = result.updates
    assert update.state is OrderState.LIVE and update.venue_order_id == "v1"
    assert result.untrack == ()


def test_rejected_unknown_to_venue_untracks_after_grace_with_no_fills():
    rejected = order(state=OrderState.REJECTED, void=None)
    young = plan([TrackedOrder(order=rejected)], [OrderLookup.unknown("c1")], now_ms=T0 + 1)
    assert young.untrack == ()
    old = plan([TrackedOrder(order=rejected)], [OrderLookup.unknown("c1")], now_ms=T0 + GRACE_MS)
    assert old.untrack == ("c1",) and old.updates == ()


def test_unknown_order_with_applied_fills_is_an_anomaly_not_an_untrack():
    pending = order(state=OrderState.PENDING_NEW, void=None)
    result = plan([TrackedOrder(order=pending, applied_size=D(1))], [OrderLookup.unknown("c1")], now_ms=T0 + GRACE_MS)
    assert result.untrack == ()
    assert "does not know" in result.anomalies["c1"]


def test_acknowledged_order_unknown_at_venue_is_kept_and_reported():
    result = plan([TrackedOrder(order=order())], [OrderLookup.unknown("c1")], now_ms=T0 + 3_600_000)
    assert result.untrack == () and result.updates == ()
    assert result.decisions["c1"] is OrderDecision.UNKNOWN_AT_VENUE
    assert "c1" in result.anomalies


def test_report_for_another_venue_order_is_inconsistent():
    result = plan([TrackedOrder(order=order(void="v1"), applied_size=D(2))],
                  [OrderLookup.found(report(state=OrderState.FILLED, filled="2", void="v2"), "c1")])
    assert result.untrack == ()
    assert result.decisions["c1"] is OrderDecision.INCONSISTENT


def test_recorded_rejected_but_live_at_venue_is_reported():
    rejected = order(state=OrderState.REJECTED, void=None)
    result = plan([TrackedOrder(order=rejected)], [OrderLookup.found(report(state=OrderState.LIVE, filled="0"), "c1")])
    assert result.untrack == ()
    assert "recorded REJECTED" in result.anomalies["c1"]


def test_each_tracked_order_gets_one_decision():
    tracked = [TrackedOrder(order=order("a"), applied_size=D(2)), TrackedOrder(order=order("b", void="vb"))]
    lookups = [OrderLookup.found(report("a", state=OrderState.FILLED, filled="2"), "a"), OrderLookup.failed("b", "x")]
    result = plan(tracked, lookups)
    assert result.decisions == {"a": OrderDecision.UNTRACK, "b": OrderDecision.LOOKUP_FAILED}
    assert result.untrack == ("a",)
    assert OrderLookup.failed("b", "x").kind is LookupKind.FAILED
