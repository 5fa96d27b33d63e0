"""The poll cycle's plan: instruments, the cursor rule end to end, the untrack guard, targeted fetches."""

from __future__ import annotations

from decimal import Decimal

from tradetree.core.types import Fill, FillLayer, Order, OrderState, OrderType, Side
from tradetree.execution import plan_fills
from tradetree.execution.poll_plan import (
    cursor_ms_of,
    cursor_to_write,
    poll_instruments,
    targeted_fetch_since,
    untrack_now,
)

T0 = 1_700_000_000_000
D = Decimal


def order(coid: str = "c1", *, state: OrderState = OrderState.LIVE, inst_id: str = "BTC-USDT-SWAP",
          void: str | None = "v1", created_ms: int = T0) -> Order:
    return Order(client_order_id=coid, strategy_id="s1", venue="okx", inst_id=inst_id, side=Side.BUY,
                 type=OrderType.MARKET, size=D(2), state=state, venue_order_id=void, created_ms=created_ms,
                 updated_ms=created_ms)


def fill(trade_id: str, ts_ms: int, *, coid: str | None = "c1", void: str | None = "v1", venue: str = "okx",
         layer: FillLayer = FillLayer.POLL) -> Fill:
    return Fill(venue=venue, inst_id="BTC-USDT-SWAP", trade_id=trade_id, client_order_id=coid, venue_order_id=void,
                side=Side.BUY, price=D(100), size=D(1), ts_ms=ts_ms, layer=layer)


def test_instruments_are_the_configured_ones_and_every_tracked_orders():
    orders = [order("a", inst_id="ETH-USDT-SWAP"), order("b", inst_id="BTC-USDT-SWAP")]
    assert poll_instruments(["BTC-USDT-SWAP", "BTC-USDT"], orders) == ("BTC-USDT", "BTC-USDT-SWAP", "ETH-USDT-SWAP")
    assert poll_instruments([], []) == ()


def test_a_cursor_record_without_a_time_is_no_cursor():
    assert cursor_ms_of(None) is None
    assert cursor_ms_of({}) is None
    assert cursor_ms_of({"updated_ms": 5}) is None
    assert cursor_ms_of({"ts_ms": T0, "updated_ms": 5}) == T0


def test_the_cursor_moves_past_stored_fills_only():
    planned = (fill("1", T0 + 100), fill("2", T0 + 200))
    assert cursor_to_write(T0, planned, {f.key for f in planned}, since_ms=T0 - 5, overlap_ms=5) == T0 + 200
    # the first fill failed to store: the cursor stops at it, so the next fetch reads it again
    assert cursor_to_write(T0, planned, {planned[1].key}, since_ms=T0 - 5, overlap_ms=5) == T0 + 100


def test_a_cursor_that_does_not_move_is_not_written_and_never_goes_back():
    assert cursor_to_write(T0, (), set(), since_ms=T0 - 5, overlap_ms=5) is None
    old = (fill("1", T0 - 1_000),)
    assert cursor_to_write(T0, old, {old[0].key}, since_ms=T0 - 5, overlap_ms=5) is None


def test_a_first_cycle_without_fills_starts_the_cursor_where_its_fetch_started():
    assert cursor_to_write(None, (), set(), since_ms=T0, overlap_ms=5_000) == T0 + 5_000


def test_only_orders_whose_snapshot_is_final_and_whose_write_held_leave_the_polling_set():
    snapshots = {
        "done": order("done", state=OrderState.FILLED),
        "raced": order("raced", state=OrderState.FILLED),
        "live": order("live", state=OrderState.LIVE),
    }
    proposed = ["done", "raced", "live", "vanished"]
    assert untrack_now(proposed, snapshots, failed_writes={"raced"}) == ("done",)
    assert untrack_now([], snapshots, failed_writes=()) == ()


def test_a_targeted_fetch_starts_the_overlap_before_the_order_and_never_before_zero():
    assert targeted_fetch_since(order(created_ms=T0), 5_000) == T0 - 5_000
    assert targeted_fetch_since(order(created_ms=1_000), 5_000) == 0


def test_an_orders_fills_are_found_by_either_id_tagged_health_and_in_order():
    fills = [
        fill("3", T0 + 30, coid=None, void="v1"),  # pushed without our id: the venue id names it
        fill("1", T0 + 10, coid="c1", void=None),
        fill("2", T0 + 10, coid="other", void="v9"),
        fill("4", T0 + 5, venue="binance"),
        fill("0", T0 + 10, coid="c1", layer=FillLayer.HEALTH),
    ]
    mine = plan_fills("okx", fills, layer=FillLayer.HEALTH, order=order())
    assert [f.trade_id for f in mine] == ["0", "1", "3"]
    assert {f.layer for f in mine} == {FillLayer.HEALTH}
    # without a venue order id, only our client order id counts
    assert [f.trade_id for f in plan_fills("okx", fills, layer=FillLayer.HEALTH, order=order(void=None))] == ["0", "1"]
