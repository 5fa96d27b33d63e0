"""The risk monitor's decisions around its rules, as pure functions."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tradetree.core.types import Order, OrderIntent, OrderType, Side
from tradetree.risk.config import RiskConfig
from tradetree.risk.monitor import (
    UnreadableOrderEvent,
    batch_caught_up,
    loop_fresh_probe,
    loss_limits_set,
    needs_strategy_states,
    parse_order_event,
    pause_reason,
    should_persist_cursor,
)
from tradetree.risk.rules import Trip


def _order() -> Order:
    intent = OrderIntent(strategy_id="s1", venue="okx", inst_id="BTC-USDT-SWAP", side=Side.BUY,
                         type=OrderType.MARKET, size=Decimal("1"), reason="t")
    return Order.from_intent(intent, now_ms=1, client_order_id="c1")


def test_parse_order_event_reads_bytes_and_str_keys() -> None:
    order = _order()
    assert parse_order_event({b"order": order.model_dump_json().encode()}) == order
    assert parse_order_event({"order": order.model_dump_json()}) == order


@pytest.mark.parametrize(("fields", "text"), [({b"other": b"x"}, "no 'order' field"),
                                              ({b"order": b"{not json"}, "Invalid JSON")])
def test_parse_order_event_refuses_what_it_cannot_read(fields, text) -> None:
    with pytest.raises(UnreadableOrderEvent, match=text):
        parse_order_event(fields)


def test_batch_caught_up_only_when_short() -> None:
    assert batch_caught_up(0, 500) and batch_caught_up(499, 500)
    assert not batch_caught_up(500, 500)


def test_loss_limits_set_by_either_limit() -> None:
    assert not loss_limits_set(RiskConfig())
    assert loss_limits_set(RiskConfig(max_daily_loss_per_strategy=Decimal(10)))
    assert loss_limits_set(RiskConfig(max_daily_loss_global=Decimal(10)))


def test_only_a_global_trip_needs_the_states_and_the_reason_names_the_breaker() -> None:
    own = Trip(breaker="strategy:s1:rejections", strategy_id="s1", reason="5 rejections")
    everyone = Trip(breaker="global:loss", strategy_id=None, reason="lost 100")
    assert not needs_strategy_states(own) and needs_strategy_states(everyone)
    assert pause_reason(own) == "strategy:s1:rejections: 5 rejections"


def test_cursor_is_persisted_only_when_it_moved_and_nothing_is_pending() -> None:
    assert should_persist_cursor(pending_trips=0, cursor="2-0", persisted_cursor="1-0")
    assert not should_persist_cursor(pending_trips=1, cursor="2-0", persisted_cursor="1-0")
    assert not should_persist_cursor(pending_trips=0, cursor="1-0", persisted_cursor="1-0")


def test_loop_fresh_probe() -> None:
    cfg = RiskConfig(loop_stale_after_secs=5.0)
    never = loop_fresh_probe(None, cfg, "")
    assert not never.ok and never.detail == "no loop completed yet"
    assert loop_fresh_probe(None, cfg, "load: boom").detail == "load: boom"
    fresh = loop_fresh_probe(5.0, cfg, "positions: slow")
    assert fresh.ok and fresh.detail == "last good loop 5.0 s ago"
    stale = loop_fresh_probe(5.1, cfg, "positions: slow")
    assert not stale.ok and stale.detail == "last good loop 5.1 s ago; positions: slow"


