"""The strategy host's pre-trade input decisions as pure functions (no Redis)."""

from __future__ import annotations

from decimal import Decimal

from tradetree.core.marks import Mark
from tradetree.core.types import Order, OrderIntent, OrderState, OrderType, Position, Side
from tradetree.risk import pre_trade
from tradetree.risk.config import RiskConfig
from tradetree.risk.pre_trade_inputs import (
    DAILY_PNL_UNKNOWN,
    InputNeeds,
    choose_marks,
    explain,
    input_needs,
    loss_scope,
    mark_keys,
    mark_unknown_reason,
    pending_by_instrument,
)

D = Decimal


def _intent(strategy_id="s1", inst_id="BTC-USDT-SWAP", reduce_only=False, side=Side.BUY) -> OrderIntent:
    return OrderIntent(strategy_id=strategy_id, venue="okx", inst_id=inst_id, side=side, type=OrderType.MARKET,
                       size=D(1), reduce_only=reduce_only)


def _order(coid: str, strategy_id="s1", inst_id="BTC-USDT-SWAP", side=Side.BUY, size="2") -> Order:
    intent = OrderIntent(strategy_id=strategy_id, venue="okx", inst_id=inst_id, side=side, size=D(size))
    return Order.from_intent(intent, now_ms=1, client_order_id=coid)


def _pos(strategy_id: str, inst_id: str, qty: str) -> Position:
    return Position(strategy_id=strategy_id, venue="okx", inst_id=inst_id, qty=D(qty))


def test_pending_counts_the_unapplied_rest_signed_and_skips_rejected() -> None:
    buy = _order("a")
    sell = _order("b", side=Side.SELL, size="3")
    filled_unapplied = _order("c").transition(OrderState.LIVE, now_ms=2).model_copy(
        update={"state": OrderState.FILLED, "filled_size": D(2)})
    rejected = _order("d").transition(OrderState.REJECTED, now_ms=2, reject_reason="no")
    assert pending_by_instrument([(buy, D(1)), (sell, D(0)), (filled_unapplied, D(0)), (rejected, D(0))]) == {"BTC-USDT-SWAP": D(-0)}
    assert pending_by_instrument([(buy, D(1)), (filled_unapplied, D(0))]) == {"BTC-USDT-SWAP": D(3)}


def test_input_needs_follow_the_limits_and_spare_a_reduce_only_close() -> None:
    everything = RiskConfig(max_global_notional=D(1000), max_daily_loss_per_strategy=D(10))
    assert input_needs(_intent(), everything) == InputNeeds(wide=True, marks=True, daily_pnl=True)
    assert input_needs(_intent(reduce_only=True), everything) == InputNeeds(wide=False, marks=False,
                                                                           daily_pnl=False)
    assert input_needs(_intent(), RiskConfig()) == InputNeeds(wide=False, marks=False, daily_pnl=False)
    own = RiskConfig(max_strategy_notional=D(100))
    assert input_needs(_intent(), own) == InputNeeds(wide=False, marks=True, daily_pnl=False)


def test_mark_keys_take_the_instruments_in_a_limits_scope() -> None:
    positions = [_pos("s1", "ETH-USDT-SWAP", "1"), _pos("s2", "SOL-USDT-SWAP", "1"), _pos("s1", "XRP-USDT-SWAP", "0")]
    orders = [_order("o", strategy_id="s2", inst_id="DOGE-USDT-SWAP")]
    own_only = mark_keys(_intent(), positions, orders, RiskConfig(max_strategy_notional=D(100)))
    assert own_only == {("okx", "BTC-USDT-SWAP"), ("okx", "ETH-USDT-SWAP")}
    everyone = mark_keys(_intent(), positions, orders, RiskConfig(max_global_notional=D(100)))
    assert everyone == {("okx", i) for i in ("BTC-USDT-SWAP", "ETH-USDT-SWAP", "SOL-USDT-SWAP", "DOGE-USDT-SWAP")}


def test_choose_marks_takes_the_fresher_and_says_why_the_rest_are_unknown() -> None:
    a, b, c = ("okx", "A"), ("okx", "B"), ("okx", "C")
    recorded = {a: Mark(price=D(1), ts_ms=0, recv_ms=900), b: Mark(price=D(2), ts_ms=0, recv_ms=100)}
    own = {a: Mark(price=D(5), ts_ms=0, recv_ms=950)}
    prices, missing = choose_marks({a, b, c}, recorded, own, now_ms=1000, max_age_ms=500)
    assert prices == {a: D(5)}
    assert missing == {b: "last mark 0.9 s old, max 0.5 s", c: "no mark recorded"}
    _, failed = choose_marks({a, c}, {}, own, now_ms=1000, max_age_ms=500, read_failure="marks unreadable: down")
    assert failed == {c: "marks unreadable: down"}


def test_loss_scope_is_global_only_with_a_global_loss_limit() -> None:
    positions = [_pos("s1", "A", "1"), _pos("s2", "B", "1")]
    assert loss_scope(positions, RiskConfig(max_daily_loss_per_strategy=D(1)), "s1") == positions[:1]
    assert loss_scope(positions, RiskConfig(max_daily_loss_global=D(1)), "s1") == positions


def test_explain_appends_why_and_the_keys_are_pre_trades_own_texts() -> None:
    assert explain("r", {"r": "because"}) == "r (because)"
    assert explain("r", {"other": "x"}) == "r"
    cfg = RiskConfig(max_strategy_notional=D(100), max_daily_loss_per_strategy=D(10))
    inputs = pre_trade.PreTradeInputs(positions=(), in_flight=(), marks={}, daily_pnl=None)
    reasons = pre_trade.check(_intent(), inputs, cfg)
    assert mark_unknown_reason(("okx", "BTC-USDT-SWAP")) in reasons
    assert DAILY_PNL_UNKNOWN in reasons
