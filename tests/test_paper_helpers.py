"""The paper tests' shared helpers: waits end on their condition, and fail naming it."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.paper_helpers import StoreView, settled_view, summed_positions, wait_for
from tradetree.core.types import Position


class _FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, secs: float) -> None:
        self.sleeps.append(secs)
        self.now += secs


def test_wait_for_returns_the_first_truthy_value():
    t = _FakeTime()
    values = iter([None, 0, "ready"])
    assert wait_for(lambda: next(values), 10, "x", poll_secs=1, clock=t.clock, sleep=t.sleep) == "ready"
    assert t.sleeps == [1, 1]


def test_wait_for_fails_after_the_bound_naming_what_is_missing():
    t = _FakeTime()
    missing = ["MR: no fill"]
    with pytest.raises(pytest.fail.Exception, match=r"timed out after 3s waiting for MR: no fill"):
        wait_for(lambda: None, 3, lambda: "; ".join(missing), poll_secs=1, clock=t.clock, sleep=t.sleep)
    assert t.now == 3  # polled up to the bound, not beyond


def test_wait_for_checks_once_more_at_the_bound():
    t = _FakeTime()
    assert wait_for(lambda: t.now >= 2, 2, "x", poll_secs=1, clock=t.clock, sleep=t.sleep)


def _pos(strategy: str, inst: str, qty: str) -> Position:
    return Position(venue="okx", strategy_id=strategy, inst_id=inst, qty=Decimal(qty))


def test_summed_positions_nets_strategies_and_drops_flat_instruments():
    positions = [_pos("a", "BTC-USDT-SWAP", "2"), _pos("b", "BTC-USDT-SWAP", "-2"),
                 _pos("a", "ETH-USDT-SWAP", "1"), _pos("b", "ETH-USDT-SWAP", "0.5")]
    assert summed_positions(positions) == {"ETH-USDT-SWAP": Decimal("1.5")}


def test_settled_view_needs_no_open_order_anywhere_and_every_trade_audited():
    view = StoreView(positions=[], audit=["t1"], open_orders=[], states={}, owners={}, events=[])
    assert settled_view({"open_orders": [], "trades": [{"trade_id": "1"}]}, view)
    assert not settled_view({"open_orders": [{"ordId": "9"}], "trades": [{"trade_id": "1"}]}, view)
    assert not settled_view({"open_orders": [], "trades": [{"trade_id": "1"}, {"trade_id": "2"}]}, view)


def test_wait_for_raises_what_the_predicate_raises_unless_told_to_tolerate_it():
    def boom():
        raise ConnectionError("redis is restarting")

    with pytest.raises(ConnectionError):
        wait_for(boom, 3, "x", poll_secs=1, clock=_FakeTime().clock, sleep=_FakeTime().sleep)
    t = _FakeTime()
    outcomes = iter([ConnectionError("redis is restarting"), None, "ready"])

    def flaky():
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert wait_for(flaky, 10, "x", poll_secs=1, tolerate_exceptions=True, clock=t.clock, sleep=t.sleep) == "ready"
    t = _FakeTime()
    with pytest.raises(pytest.fail.Exception, match=r"waiting for x; last: ConnectionError\('redis is restarting'\)"):
        wait_for(boom, 2, "x", poll_secs=1, tolerate_exceptions=True, clock=t.clock, sleep=t.sleep)
