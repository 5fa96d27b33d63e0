from decimal import Decimal

import pytest

from tradetree.core.config import StrategyConfig
from tradetree.core.errors import ConfigError
from tradetree.core.types import Bar, Order, OrderState, OrderType, Side
from tradetree.strategies import SingleVenueMarketMaking, StrategyContext, build_strategy

INST = "BTC-USDT-SWAP"
SID = "SingleVenueMarketMaking_v1_BTC"


def _cfg(**params):
    base = {"half_spread_bps": 2.0, "skew_bps": 1.0, "requote_bps": 1.0, "quote_size": "1",
            "max_inventory": "3", "tick_size": "0.1", "ack_timeout_ms": 5000}
    base.update(params)
    return StrategyConfig.model_validate(
        {"class": "SingleVenueMarketMaking", "version": "v1", "venue": "okx", "symbols": [INST],
         "params": base})


def _bar(i, low, high=None):
    lo = Decimal(str(low))
    hi = Decimal(str(high if high is not None else low))
    return Bar(venue="okx", inst_id=INST, ts_ms=i * 1000, interval_ms=1000, open=lo, high=hi, low=lo,
               close=hi)


def _ctx(now_ms, position="0", pending=None):
    return StrategyContext(now_ms=now_ms, positions={INST: Decimal(position)},
                           pending={INST: Decimal(pending)} if pending is not None else {})


def _order(intent, coid, state=OrderState.LIVE, **changes):
    order = Order.from_intent(intent, now_ms=0, client_order_id=coid)
    return order.model_copy(update={"state": state, **changes})


def _quote(s, now_ms=0, low=60_000, high=60_000, position="0"):
    """Place a fresh pair and acknowledge it; return (bid order, ask order)."""
    out = s.on_bar(_bar(now_ms, low, high), _ctx(now_ms, position))
    orders = [_order(intent, f"q{now_ms}{intent.side.value}") for intent in out]
    for order in orders:
        s.on_order_update(order)
    return orders


def test_quotes_both_sides_post_only_around_the_mid_on_the_tick_grid():
    s = SingleVenueMarketMaking(_cfg())
    out = s.on_bar(_bar(0, "60000.0", "60000.3"), _ctx(0))  # mid 60000.15
    assert [(o.side, o.type, o.size) for o in out] == [
        (Side.BUY, OrderType.POST_ONLY, 1), (Side.SELL, OrderType.POST_ONLY, 1)]
    bid, ask = out[0].price, out[1].price
    assert bid == Decimal("59988.1")  # 60000.15 * (1 - 2 bps) = 59988.149..., rounded down
    assert ask == Decimal("60012.2")  # 60000.15 * (1 + 2 bps) = 60012.150..., rounded up
    assert all(o.reduce_only is False and o.strategy_id == SID for o in out)


def test_skews_both_quotes_against_inventory():
    s = SingleVenueMarketMaking(_cfg(skew_bps=1.5, max_inventory="4"))
    fair = Decimal(60_000)
    flat_bid, flat_ask = s.quote_prices(fair, Decimal(0))
    long_bid, long_ask = s.quote_prices(fair, Decimal(2))
    short_bid, short_ask = s.quote_prices(fair, Decimal(-2))
    assert long_bid < flat_bid and long_ask < flat_ask  # long: sell sooner, buy later
    assert short_bid > flat_bid and short_ask > flat_ask
    # half of max inventory: shift -0.75 bps = -4.5 at 60000
    assert (flat_bid - long_bid, flat_ask - long_ask) == (Decimal("4.5"), Decimal("4.5"))
    assert long_bid < fair < long_ask  # skew below half-spread: never across fair


def test_on_bar_uses_exposure_for_skew():
    s = SingleVenueMarketMaking(_cfg())
    out = s.on_bar(_bar(0, 60_000), _ctx(0, position="1.5"))
    assert (out[0].price, out[1].price) == s.quote_prices(Decimal(60_000), Decimal("1.5"))


def test_stops_quoting_the_side_that_would_breach_the_inventory_limit():
    s = SingleVenueMarketMaking(_cfg(max_inventory="3"))
    out = s.on_bar(_bar(0, 60_000), _ctx(0, position="2.5"))  # a bid fill would make 3.5
    assert [o.side for o in out] == [Side.SELL]
    s = SingleVenueMarketMaking(_cfg(max_inventory="3"))
    out = s.on_bar(_bar(0, 60_000), _ctx(0, position="2"))  # exactly at the limit after a fill
    assert [o.side for o in out] == [Side.BUY, Side.SELL]
    s = SingleVenueMarketMaking(_cfg(max_inventory="3"))
    out = s.on_bar(_bar(0, 60_000), _ctx(0, position="-3"))
    assert [o.side for o in out] == [Side.BUY]


def test_holds_quotes_while_the_fair_price_stays_inside_the_requote_threshold():
    s = SingleVenueMarketMaking(_cfg(requote_bps=1.0))
    _quote(s)
    assert s.on_bar(_bar(1, 60_005), _ctx(1)) == []  # 0.83 bps
    assert s.quotes_to_cancel() == []
    assert len(s.live_quotes) == 2


def test_requotes_on_a_move_by_cancelling_first_then_quoting_at_the_new_fair():
    s = SingleVenueMarketMaking(_cfg(requote_bps=1.0))
    bid, ask = _quote(s)
    assert s.on_bar(_bar(1, 60_012), _ctx(1)) == []  # 2 bps: requote, old quotes still resting
    assert sorted(s.quotes_to_cancel()) == sorted([bid.client_order_id, ask.client_order_id])
    assert s.quotes_to_cancel() == []  # each request is handed out once
    assert s.on_bar(_bar(2, 60_012), _ctx(2)) == []  # not yet confirmed: never two quotes a side
    for order in (bid, ask):
        s.on_order_update(order.model_copy(update={"state": OrderState.CANCELED}))
    out = s.on_bar(_bar(3, 60_012), _ctx(3))
    assert (out[0].price, out[1].price) == s.quote_prices(Decimal(60_012), Decimal(0))


def test_a_fill_moves_inventory_and_triggers_a_requote():
    s = SingleVenueMarketMaking(_cfg())
    bid, ask = _quote(s)
    s.on_order_update(bid.model_copy(update={"state": OrderState.FILLED, "filled_size": Decimal(1)}))
    assert s.on_bar(_bar(1, 60_000), _ctx(1, position="1")) == []
    assert s.quotes_to_cancel() == [ask.client_order_id]
    s.on_order_update(ask.model_copy(update={"state": OrderState.CANCELED}))
    out = s.on_bar(_bar(2, 60_000), _ctx(2, position="1"))
    assert (out[0].price, out[1].price) == s.quote_prices(Decimal(60_000), Decimal(1))


def test_a_rejected_post_only_quote_leads_to_a_fresh_pair():
    s = SingleVenueMarketMaking(_cfg())
    bid, ask = _quote(s)
    s.on_order_update(bid.model_copy(update={"state": OrderState.REJECTED, "reject_reason": "would cross"}))
    assert s.on_bar(_bar(1, 60_000), _ctx(1)) == []
    assert s.quotes_to_cancel() == [ask.client_order_id]
    s.on_order_update(ask.model_copy(update={"state": OrderState.CANCELED}))
    assert len(s.on_bar(_bar(2, 60_000), _ctx(2))) == 2


def test_waits_for_acks_and_forgets_intents_never_submitted_after_the_timeout():
    s = SingleVenueMarketMaking(_cfg(ack_timeout_ms=5000))
    assert len(s.on_bar(_bar(0, 60_000), _ctx(0))) == 2
    assert s.awaiting_acks == 2
    assert s.on_bar(_bar(1, 60_100), _ctx(1000)) == []  # no update yet: do not quote twice
    assert s.quotes_to_cancel() == []  # nothing known to cancel yet
    out = s.on_bar(_bar(2, 60_100), _ctx(5000))  # the host never submitted them (e.g. paused)
    assert len(out) == 2 and s.awaiting_acks == 2


def test_does_not_quote_while_untracked_orders_or_fills_are_in_flight():
    s = SingleVenueMarketMaking(_cfg())
    assert s.on_bar(_bar(0, 60_000), _ctx(0, pending="1")) == []
    assert len(s.on_bar(_bar(1, 60_000), _ctx(1, pending="0"))) == 2


def test_adopts_and_cancels_quotes_it_did_not_place():
    s = SingleVenueMarketMaking(_cfg())
    template = s.intent(INST, Side.BUY, Decimal(1), reason="old", order_type=OrderType.POST_ONLY,
                        price=Decimal(59_000))
    s.on_order_update(_order(template, "before-restart"))
    assert s.on_bar(_bar(0, 60_000), _ctx(0)) == []
    assert s.quotes_to_cancel() == ["before-restart"]


def test_asks_again_for_a_cancel_that_did_not_take():
    s = SingleVenueMarketMaking(_cfg(ack_timeout_ms=5000))
    bid, ask = _quote(s)
    s.on_bar(_bar(1, 61_000), _ctx(1000))
    assert len(s.quotes_to_cancel()) == 2
    s.on_bar(_bar(2, 61_000), _ctx(2000))
    assert s.quotes_to_cancel() == []
    s.on_bar(_bar(6, 61_000), _ctx(6000))
    assert len(s.quotes_to_cancel()) == 2


def test_late_updates_for_finished_quotes_are_ignored():
    s = SingleVenueMarketMaking(_cfg())
    bid, ask = _quote(s)
    s.on_order_update(bid.model_copy(update={"state": OrderState.CANCELED}))
    s.on_order_update(bid)  # the LIVE update arriving after the CANCELED one
    assert [o.client_order_id for o in s.live_quotes] == [ask.client_order_id]


def test_ignores_other_strategies_and_instruments():
    s = SingleVenueMarketMaking(_cfg())
    template = s.intent(INST, Side.BUY, Decimal(1), reason="x", order_type=OrderType.POST_ONLY,
                        price=Decimal(59_000))
    s.on_order_update(_order(template, "other").model_copy(update={"strategy_id": "Other_v1_BTC"}))
    s.on_order_update(_order(template, "eth").model_copy(update={"inst_id": "ETH-USDT-SWAP"}))
    assert s.live_quotes == ()
    assert s.on_bar(_bar(0, 3_000).model_copy(update={"inst_id": "ETH-USDT-SWAP"}), _ctx(0)) == []


def test_ema_fair_price_waits_for_warmup():
    s = SingleVenueMarketMaking(_cfg(fair_price="ema", ema_bars=3))
    assert s.on_bar(_bar(0, 60_000), _ctx(0)) == []
    assert s.on_bar(_bar(1, 60_010), _ctx(1)) == []
    out = s.on_bar(_bar(2, 60_020), _ctx(2))
    assert len(out) == 2 and s.last_fair == Decimal("60012.5")  # seed 60000, alpha 0.5


def test_builds_from_the_registry():
    assert isinstance(build_strategy(_cfg()), SingleVenueMarketMaking)


@pytest.mark.parametrize("params,field", [
    ({"skew_bps": 2.0}, "skew_bps"),
    ({"quote_size": "5"}, "quote_size"),
    ({"tick_size": "0"}, "tick_size"),
    ({"half_spread_bps": -1}, "half_spread_bps"),
    ({"fair_price": "vwap"}, "fair_price"),
])
def test_bad_params_name_the_field(params, field):
    with pytest.raises(ConfigError) as err:
        SingleVenueMarketMaking(_cfg(**params))
    assert SID in str(err.value)
    assert field in str(err.value)
