from decimal import Decimal as D

import pytest

from tradetree.core.types import Order, OrderIntent, OrderState, OrderType, Position, Side
from tradetree.risk.config import RiskConfig
from tradetree.risk.pre_trade import PreTradeInputs, check, duplicate_close_reasons, in_flight_size

INST = "BTC-USDT-SWAP"
CV = {"okx:BTC-USDT-SWAP": D("0.01"), "okx:ETH-USDT-SWAP": D("0.1")}
MARKS = {("okx", INST): D(50_000), ("okx", "ETH-USDT-SWAP"): D(3_000)}


def _intent(side=Side.BUY, size="1", sid="S1", inst=INST, **kw):
    return OrderIntent(strategy_id=sid, venue="okx", inst_id=inst, side=side, size=D(size), **kw)


def _pos(qty, sid="S1", inst=INST, avg="50000", **kw):
    return Position(strategy_id=sid, venue="okx", inst_id=inst, qty=D(qty), avg_price=D(avg), **kw)


def _order(side, size, *, sid="S1", inst=INST, reduce_only=False, state=OrderState.LIVE, filled="0", coid=None):
    o = Order(client_order_id=coid or f"c{side.value}{size}{reduce_only}{state.value}", strategy_id=sid,
              venue="okx", inst_id=inst, side=side, type=OrderType.MARKET, size=D(size),
              reduce_only=reduce_only, created_ms=1, updated_ms=1)
    return o.model_copy(update={"state": state, "filled_size": D(filled)})


def _inputs(positions=(), in_flight=(), **kw):
    kw.setdefault("marks", MARKS)
    return PreTradeInputs(positions=tuple(positions), in_flight=tuple(in_flight), **kw)


# -- in-flight accounting -------------------------------------------------------------

def test_in_flight_size_counts_unapplied_fills_of_filled_orders():
    assert in_flight_size(_order(Side.BUY, "2"), D(0)) == 2
    assert in_flight_size(_order(Side.BUY, "2", state=OrderState.FILLED, filled="2"), D(0)) == 2  # the incident
    assert in_flight_size(_order(Side.BUY, "2", state=OrderState.FILLED, filled="2"), D(2)) == 0
    assert in_flight_size(_order(Side.BUY, "2", state=OrderState.CANCELED, filled="0.5"), D(0)) == D("0.5")
    assert in_flight_size(_order(Side.BUY, "2", state=OrderState.REJECTED), D(0)) == 0


# -- duplicate close ---------------------------------------------------------------------

def test_single_close_of_a_position_is_allowed():
    assert check(_intent(Side.SELL, "1", reduce_only=True), _inputs([_pos("1")]), RiskConfig()) == []
    assert check(_intent(Side.SELL, "0.4", reduce_only=True), _inputs([_pos("1")]), RiskConfig()) == []


def test_second_close_of_the_same_position_is_refused():
    first_close = _order(Side.SELL, "1", reduce_only=True)
    reasons = check(_intent(Side.SELL, "1", reduce_only=True), _inputs([_pos("1")], [first_close]), RiskConfig())
    assert len(reasons) == 1 and reasons[0].startswith("duplicate close") and "opposite side" in reasons[0]


def test_partial_closes_add_up_to_the_position():
    in_flight = [_order(Side.SELL, "0.6", reduce_only=True, coid="a")]
    assert check(_intent(Side.SELL, "0.4", reduce_only=True), _inputs([_pos("1")], in_flight), RiskConfig()) == []
    assert check(_intent(Side.SELL, "0.5", reduce_only=True), _inputs([_pos("1")], in_flight), RiskConfig())


def test_applied_part_of_a_close_is_already_in_the_position():
    # A close of 1 on a 2 position, half applied: position shows 1.5, 0.5 still to come.
    closing = _order(Side.SELL, "1", reduce_only=True, state=OrderState.PARTIALLY_FILLED, filled="0.5", coid="x")
    inputs = _inputs([_pos("1.5")], [closing], applied_sizes={"x": D("0.5")})
    assert check(_intent(Side.SELL, "1", reduce_only=True), inputs, RiskConfig()) == []
    assert check(_intent(Side.SELL, "1.1", reduce_only=True), inputs, RiskConfig())


def test_filled_close_whose_fills_never_arrived_still_blocks_a_second_close():
    closing = _order(Side.SELL, "1", reduce_only=True, state=OrderState.FILLED, filled="1", coid="x")
    assert check(_intent(Side.SELL, "1", reduce_only=True), _inputs([_pos("1")], [closing]), RiskConfig())


def test_close_ignores_other_strategies_instruments_sides_and_rejected_orders():
    noise = [
        _order(Side.SELL, "1", reduce_only=True, sid="S2", coid="1"),
        _order(Side.SELL, "1", reduce_only=True, inst="ETH-USDT-SWAP", coid="2"),
        _order(Side.BUY, "1", reduce_only=True, coid="3"),
        _order(Side.SELL, "1", reduce_only=True, state=OrderState.REJECTED, coid="4"),
    ]
    assert check(_intent(Side.SELL, "1", reduce_only=True), _inputs([_pos("1")], noise), RiskConfig()) == []


def test_reduce_only_without_a_position_or_on_its_side_is_refused():
    (r,) = duplicate_close_reasons(_intent(Side.SELL, "1", reduce_only=True), _inputs([]))
    assert "no open position" in r
    (r,) = duplicate_close_reasons(_intent(Side.BUY, "1", reduce_only=True), _inputs([_pos("1")]))
    assert "would add to the 1 position" in r
    (r,) = duplicate_close_reasons(_intent(Side.SELL, "1", reduce_only=True), _inputs([_pos("-2")]))
    assert "would add" in r
    assert duplicate_close_reasons(_intent(Side.BUY, "2", reduce_only=True), _inputs([_pos("-2")])) == []


def test_reduce_only_is_exempt_from_limits():
    cfg = RiskConfig(max_order_notional=D(1), max_position_qty=D("0.1"), max_daily_loss_per_strategy=D(1))
    assert check(_intent(Side.SELL, "1", reduce_only=True), _inputs([_pos("1")]), cfg) == []


# -- notional -------------------------------------------------------------------------------

def test_order_notional_limit():
    cfg = RiskConfig(max_order_notional=D(1000), contract_values=CV)
    assert check(_intent(size="2"), _inputs(), cfg) == []  # 2 * 50000 * 0.01 = 1000
    (r,) = check(_intent(size="3"), _inputs(), cfg)
    assert "order notional 1500 exceeds 1000" in r
    # a limit order is valued at its own price
    (r,) = check(_intent(size="2", type=OrderType.LIMIT, price=D(60_000)), _inputs(), cfg)
    assert "order notional 1200" in r


def test_notional_is_unknown_without_mark_or_contract_value():
    cfg = RiskConfig(max_order_notional=D(10**9), contract_values=CV)
    (r,) = check(_intent(), _inputs(marks={}), cfg)
    assert r == "notional unknown: okx:BTC-USDT-SWAP has no mark price"
    (r,) = check(_intent(), _inputs(), RiskConfig(max_order_notional=D(10**9)))
    assert r == "notional unknown: okx:BTC-USDT-SWAP has no configured contract value"


def test_strategy_notional_counts_positions_and_orders_in_flight():
    cfg = RiskConfig(max_strategy_notional=D(2000), contract_values=CV)
    positions = [_pos("2"), _pos("-10", inst="ETH-USDT-SWAP"), _pos("100", sid="S2")]
    # S1: BTC 2*50000*0.01 = 1000; ETH 10*3000*0.1 = 3000 -> already 4000 > 2000
    (r,) = check(_intent(size="1"), _inputs(positions), cfg)
    assert "strategy S1 notional 4500" in r
    # a buy that reduces the short ETH position does not make exposure larger: allowed
    assert check(_intent(size="5", inst="ETH-USDT-SWAP"), _inputs(positions), cfg) == []
    # in-flight buys count
    cfg2 = RiskConfig(max_strategy_notional=D(1600), contract_values=CV)
    assert check(_intent(size="1"), _inputs([_pos("2")]), cfg2) == []
    (r,) = check(_intent(size="1"), _inputs([_pos("2")], [_order(Side.BUY, "1")]), cfg2)
    assert "strategy S1 notional 2000" in r


def test_global_notional_counts_every_strategy():
    cfg = RiskConfig(max_global_notional=D(2000), contract_values=CV)
    assert check(_intent(size="1"), _inputs([_pos("2")]), cfg) == []
    (r,) = check(_intent(size="1"), _inputs([_pos("2"), _pos("-2", sid="S2")]), cfg)
    assert "global notional 2500" in r


def test_global_notional_is_unknown_for_an_instrument_without_a_mark():
    cfg = RiskConfig(max_global_notional=D(10**9), contract_values=CV)
    (r,) = check(_intent(), _inputs([_pos("1", sid="S2", inst="ETH-USDT-SWAP")], marks={("okx", INST): D(1)}), cfg)
    assert r == "notional unknown: okx:ETH-USDT-SWAP has no mark price"


# -- position limit ------------------------------------------------------------------------------

def test_position_limit_per_strategy_and_instrument():
    cfg = RiskConfig(max_position_qty=D(3), max_position_qty_by_inst={"okx:ETH-USDT-SWAP": D(10)})
    assert check(_intent(size="1"), _inputs([_pos("2")]), cfg) == []
    (r,) = check(_intent(size="1"), _inputs([_pos("2")], [_order(Side.BUY, "0.5")]), cfg)
    assert "position limit: 3.5 on okx:BTC-USDT-SWAP" in r
    assert check(_intent(Side.SELL, "6"), _inputs([_pos("2")]), cfg)  # -4 beyond the short side
    assert check(_intent(Side.SELL, "5"), _inputs([_pos("2")]), cfg) == []
    assert check(_intent(size="9", inst="ETH-USDT-SWAP"), _inputs([]), cfg) == []
    assert check(_intent(size="1", sid="S2"), _inputs([_pos("3")]), cfg) == []  # another strategy's


def test_position_over_limit_can_still_be_reduced():
    cfg = RiskConfig(max_position_qty=D(3))
    assert check(_intent(Side.SELL, "1"), _inputs([_pos("5")]), cfg) == []
    assert check(_intent(Side.BUY, "0.1"), _inputs([_pos("5")]), cfg)


# -- daily loss ----------------------------------------------------------------------------------

def test_daily_loss_limits():
    cfg = RiskConfig(max_daily_loss_per_strategy=D(100), max_daily_loss_global=D(150))
    assert check(_intent(), _inputs(daily_pnl={"S1": D(-99)}), cfg) == []
    assert check(_intent(), _inputs(daily_pnl={}), cfg) == []
    (r,) = check(_intent(), _inputs(daily_pnl={"S1": D(-100)}), cfg)
    assert "daily loss limit: strategy S1 P&L today -100" in r
    (r,) = check(_intent(), _inputs(daily_pnl={"S1": D(-50), "S2": D(-100)}), cfg)
    assert r.startswith("global daily loss limit")
    (r,) = check(_intent(), _inputs(daily_pnl=None), cfg)
    assert r.startswith("daily P&L unknown")


def test_no_limits_configured_allows_any_opening_order():
    assert check(_intent(size="1000"), _inputs([_pos("1000")], marks={}), RiskConfig()) == []


def test_config_rejects_bad_keys_and_values():
    with pytest.raises(ValueError):
        RiskConfig(contract_values={"BTC-USDT-SWAP": D(1)})
    with pytest.raises(ValueError):
        RiskConfig(max_position_qty_by_inst={"okx:X": D(0)})
    with pytest.raises(ValueError):
        RiskConfig(max_order_notional=D(-1))
    with pytest.raises(ValueError):
        RiskConfig(unknown_field=1)
