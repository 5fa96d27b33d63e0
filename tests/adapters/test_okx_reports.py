"""apply_report: venue reports only ever move an order forward."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tradetree.adapters import VenueOrderReport, apply_report
from tradetree.core.errors import VenueProtocolError
from tradetree.core.types import Order, OrderState, OrderType, Side


def make_order(**changes) -> Order:
    order = Order(
        client_order_id="c1", strategy_id="s1", venue="okx", inst_id="BTC-USDT-SWAP", side=Side.BUY,
        type=OrderType.LIMIT, size=Decimal(3), price=Decimal(100), created_ms=1000, updated_ms=1000,
    )
    return order.model_copy(update=changes)


def make_report(state: OrderState, filled: str = "0", **changes) -> VenueOrderReport:
    fields = dict(
        venue="okx", inst_id="BTC-USDT-SWAP", venue_order_id="v1", client_order_id="c1", side=Side.BUY,
        state=state, venue_state=state.value, size=Decimal(3), filled_size=Decimal(filled),
        avg_price=Decimal(100) if Decimal(filled) > 0 else None, updated_ms=5,
    )
    fields.update(changes)
    return VenueOrderReport(**fields)


def test_ack_moves_pending_to_live_and_learns_the_venue_id():
    updated = apply_report(make_order(), make_report(OrderState.LIVE), now_ms=2000)
    assert updated.state is OrderState.LIVE
    assert updated.venue_order_id == "v1"
    assert updated.updated_ms == 2000


def test_fill_progress_is_applied():
    order = make_order(state=OrderState.LIVE, venue_order_id="v1")
    updated = apply_report(order, make_report(OrderState.PARTIALLY_FILLED, "1"), now_ms=2000)
    assert (updated.state, updated.filled_size, updated.avg_fill_price) == (
        OrderState.PARTIALLY_FILLED, Decimal(1), Decimal(100))
    again = apply_report(updated, make_report(OrderState.PARTIALLY_FILLED, "2"), now_ms=2100)
    assert again.filled_size == Decimal(2)


def test_pending_can_jump_straight_to_filled():
    updated = apply_report(make_order(), make_report(OrderState.FILLED, "3"), now_ms=2000)
    assert updated.state is OrderState.FILLED
    assert updated.filled_size == Decimal(3)


@pytest.mark.parametrize(
    "held_state,held_filled,report_state,report_filled",
    [
        (OrderState.PARTIALLY_FILLED, "2", OrderState.LIVE, "0"),  # older state
        (OrderState.PARTIALLY_FILLED, "2", OrderState.PARTIALLY_FILLED, "1"),  # smaller filled size
        (OrderState.LIVE, "0", OrderState.LIVE, "0"),  # a repeat
    ],
)
def test_stale_or_repeated_reports_are_ignored(held_state, held_filled, report_state, report_filled):
    order = make_order(state=held_state, filled_size=Decimal(held_filled), venue_order_id="v1")
    assert apply_report(order, make_report(report_state, report_filled), now_ms=2000) is None


def test_stale_report_still_teaches_the_venue_order_id():
    order = make_order(state=OrderState.PARTIALLY_FILLED, filled_size=Decimal(2))
    updated = apply_report(order, make_report(OrderState.LIVE), now_ms=2000)
    assert updated.state is OrderState.PARTIALLY_FILLED
    assert updated.filled_size == Decimal(2)
    assert updated.venue_order_id == "v1"


@pytest.mark.parametrize("terminal", [OrderState.FILLED, OrderState.CANCELED, OrderState.REJECTED])
def test_terminal_orders_never_change(terminal):
    order = make_order(state=terminal, venue_order_id="v1")
    assert apply_report(order, make_report(OrderState.FILLED, "3"), now_ms=2000) is None


def test_updated_ms_never_goes_backwards():
    order = make_order(updated_ms=5000)
    assert apply_report(order, make_report(OrderState.LIVE), now_ms=10).updated_ms == 5000


def test_cancel_keeps_the_filled_size_reported():
    order = make_order(state=OrderState.PARTIALLY_FILLED, filled_size=Decimal(1), venue_order_id="v1")
    updated = apply_report(order, make_report(OrderState.CANCELED, "1"), now_ms=2000)
    assert updated.state is OrderState.CANCELED
    assert updated.filled_size == Decimal(1)


@pytest.mark.parametrize("changes", [{"client_order_id": "other"}, {"venue_order_id": "v2"}])
def test_report_for_another_order_is_refused(changes):
    order = make_order(venue_order_id="v1")
    with pytest.raises(VenueProtocolError):
        apply_report(order, make_report(OrderState.LIVE, **changes), now_ms=2000)
