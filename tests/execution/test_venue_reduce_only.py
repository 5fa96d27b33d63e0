"""The rule that decides whether a strategy's reduce-only order carries the venue's ``reduceOnly``."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tradetree.core.types import Order, OrderIntent, OrderState, OrderType, Position, Side
from tradetree.execution.venue_reduce_only import VenueReduceOnly, decide_venue_reduce_only

BTC, ETH = "BTC-USDT-SWAP", "ETH-USDT-SWAP"
D = Decimal


def pos(strategy: str, qty: str, inst_id: str = BTC, venue: str = "okx") -> Position:
    return Position(strategy_id=strategy, venue=venue, inst_id=inst_id, qty=D(qty))


def order(strategy: str, side: Side, size: str, *, reduce_only: bool = True, inst_id: str = BTC,
          venue: str = "okx", coid: str | None = None, state: OrderState = OrderState.PENDING_NEW,
          filled: str = "0") -> Order:
    intent = OrderIntent(strategy_id=strategy, venue=venue, inst_id=inst_id, side=side, type=OrderType.MARKET,
                         size=D(size), reduce_only=reduce_only)
    o = Order.from_intent(intent, now_ms=1, client_order_id=coid)
    if state is not OrderState.PENDING_NEW:
        o = o.transition(state, now_ms=2, filled_size=D(filled))
    return o


def test_not_reduce_only_never_carries_the_flag():
    assert decide_venue_reduce_only(order("A", Side.SELL, "1", reduce_only=False), [pos("A", "5")], [], {}) == VenueReduceOnly(False)


def test_alone_on_the_instrument_the_flag_is_sent():
    d = decide_venue_reduce_only(order("A", Side.SELL, "2"), [pos("A", "2")], [], {})
    assert d.send and d.net == 2 and d.room == 2
    d = decide_venue_reduce_only(order("A", Side.BUY, "3"), [pos("A", "-3")], [], {})
    assert d.send and d.room == 3


def test_other_strategy_long_while_we_close_our_short_withholds_it():
    # A short 1, B long 3: the account is long 2; a buy is not reducing the account's position.
    d = decide_venue_reduce_only(order("A", Side.BUY, "1"), [pos("A", "-1"), pos("B", "3")], [], {})
    assert not d.send and d.net == 2 and d.room == -2
    assert "no room" in d.reason and "short net of at least 1" in d.reason


def test_opposite_positions_that_cancel_out_withhold_it():
    d = decide_venue_reduce_only(order("A", Side.SELL, "1"), [pos("A", "1"), pos("B", "-1")], [], {})
    assert not d.send and d.net == 0


def test_net_on_the_right_side_but_smaller_than_the_close_withholds_it():
    d = decide_venue_reduce_only(order("A", Side.SELL, "3"), [pos("A", "3"), pos("B", "-1")], [], {})
    assert not d.send and d.room == 2


def test_net_on_the_right_side_and_large_enough_sends_it():
    d = decide_venue_reduce_only(order("A", Side.SELL, "2"), [pos("A", "2"), pos("B", "-1"), pos("C", "4")], [], {})
    assert d.send and d.net == 5


def test_other_venues_and_instruments_do_not_count():
    positions = [pos("A", "2"), pos("B", "-5", inst_id=ETH), pos("C", "-5", venue="other")]
    assert decide_venue_reduce_only(order("A", Side.SELL, "2"), positions, [], {}).send


def test_other_reduce_only_orders_in_flight_consume_the_net():
    # Account long 3 (A 2, B 1); B's reduce-only sell of 1 is in flight: 2 left for A's close of 2.
    positions = [pos("A", "2"), pos("B", "1")]
    b_close = order("B", Side.SELL, "1", coid="b1")
    assert decide_venue_reduce_only(order("A", Side.SELL, "2"), positions, [b_close], {}).send
    # With C short 1 the account is long 2: B's close leaves 1, not enough for A's 2.
    d = decide_venue_reduce_only(order("A", Side.SELL, "2"), [*positions, pos("C", "-1")], [b_close], {})
    assert not d.send and d.room == 1


def test_an_opening_order_on_the_same_side_counts_too():
    # B's plain sell may fill first (or has filled, unapplied): it takes from the long net too.
    positions = [pos("A", "2"), pos("B", "0")]
    assert not decide_venue_reduce_only(order("A", Side.SELL, "2"), positions, [order("B", Side.SELL, "1", reduce_only=False)], {}).send


def test_what_is_applied_of_an_in_flight_order_is_no_longer_in_flight():
    positions = [pos("A", "2"), pos("B", "1")]  # B's sell of 2 filled 2; 1 of it is applied (B was 2)
    b_sell = order("B", Side.SELL, "2", coid="b1", state=OrderState.FILLED, filled="2")
    assert decide_venue_reduce_only(order("A", Side.SELL, "2"), positions, [b_sell], {"b1": D(1)}).room == 2
    assert decide_venue_reduce_only(order("A", Side.SELL, "2"), positions, [b_sell], {"b1": D(1)}).send
    # nothing applied: the whole fill is still to come off the net
    assert not decide_venue_reduce_only(order("A", Side.SELL, "2"), positions, [b_sell], {}).send


def test_rejected_and_opposite_side_orders_are_not_counted():
    positions = [pos("A", "2")]
    in_flight = [order("B", Side.SELL, "5", coid="r", state=OrderState.REJECTED),
                 order("B", Side.BUY, "5", coid="buy")]  # would add to the net: never counted on
    assert decide_venue_reduce_only(order("A", Side.SELL, "2"), positions, in_flight, {}).send
    assert decide_venue_reduce_only(order("A", Side.SELL, "2"), [pos("A", "2"), pos("B", "-1")],
                  [order("B", Side.BUY, "1", coid="b")], {}).send is False


def test_the_order_itself_in_flight_is_not_counted_twice():
    mine = order("A", Side.SELL, "2", coid="a1")
    assert decide_venue_reduce_only(mine, [pos("A", "2")], [mine], {}).send


def test_own_earlier_close_in_flight_leaves_the_rest():
    # A long 2 closing in two legs of 1: the second still fits under the venue's guard.
    first = order("A", Side.SELL, "1", coid="a1")
    assert decide_venue_reduce_only(order("A", Side.SELL, "1", coid="a2"), [pos("A", "2")], [first], {}).send
    # if our state were wrong (a third leg), the rule stops sending the flag, but the pre-trade
    # duplicate-close guard has refused such an intent before it gets here.
    second = order("A", Side.SELL, "1", coid="a2")
    assert not decide_venue_reduce_only(order("A", Side.SELL, "1", coid="a3"), [pos("A", "2")], [first, second], {}).send


@pytest.mark.parametrize("side,qty", [(Side.SELL, "-2"), (Side.BUY, "2"), (Side.SELL, "0")])
def test_no_account_position_to_reduce_withholds_it(side, qty):
    assert not decide_venue_reduce_only(order("A", side, "1"), [pos("B", qty)], [], {}).send
