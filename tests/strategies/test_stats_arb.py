import math
from decimal import ROUND_HALF_EVEN, Decimal

import numpy as np
import pytest

from tradetree.core.config import StrategyConfig
from tradetree.core.errors import ConfigError
from tradetree.core.types import Bar, Side
from tradetree.strategies import StatsArb, StrategyContext, build_strategy

BASE, HEDGE = "BTC-USDT-SWAP", "ETH-USDT-SWAP"
BETA, ALPHA = 1.3, 0.6


def _cfg(symbols=(BASE, HEDGE), **params):
    base = {"window_bars": 30, "entry_z": 2.0, "exit_z": 0.5, "stop_z": 4.0, "base_size": "1",
            "base_contract_value": "0.01", "hedge_contract_value": "0.1", "hedge_lot_size": "0.01"}
    base.update(params)
    return StrategyConfig.model_validate(
        {"class": "StatsArb", "version": "v1", "venue": "okx", "symbols": list(symbols), "params": base})


def _history(n=40, seed=0, beta=BETA, alpha=ALPHA):
    """Log prices with ln(y) = alpha + beta ln(x) + small noise."""
    rng = np.random.default_rng(seed)
    lx = math.log(3000) + np.cumsum(rng.normal(0.0, 0.002, n))
    ly = alpha + beta * lx + rng.normal(0.0, 0.0005, n)
    return [(float(a), float(b)) for a, b in zip(lx, ly)]


def _bar(inst, ts, log_price):
    p = Decimal(str(round(math.exp(log_price), 2)))
    return Bar(venue="okx", inst_id=inst, ts_ms=ts, interval_ms=1000, open=p, high=p, low=p, close=p)


class Book:
    """Feeds log-price pairs one leg at a time and fills every intent at once."""

    def __init__(self, strategy):
        self.s = strategy
        self.pos = {BASE: Decimal(0), HEDGE: Decimal(0)}
        self.ts = 0
        self.last_bars = {}

    def feed_bar(self, bar):
        out = self.s.on_bar(bar, StrategyContext(now_ms=bar.ts_ms, positions=dict(self.pos)))
        for intent in out:
            self.pos[intent.inst_id] += intent.side.sign * intent.size
        self.last_bars[bar.inst_id] = bar
        return out

    def feed(self, pairs, hedge_first=False):
        emitted = []
        for lx, ly in pairs:
            legs = [_bar(BASE, self.ts, ly), _bar(HEDGE, self.ts, lx)]
            for bar in reversed(legs) if hedge_first else legs:
                emitted.extend(self.feed_bar(bar))
            self.ts += 1000
        return emitted

    def shock(self, *offsets):
        """Pairs that keep x where it was and put ln(y) ``offset`` off the line."""
        lx = self._lx
        return [(lx, ALPHA + BETA * lx + d) for d in offsets]

    def warm(self, history):
        self._lx = history[-1][0]
        return self.feed(history)


def test_waits_for_both_legs_with_the_same_timestamp():
    s = StatsArb(_cfg())
    book = Book(s)
    for lx, ly in _history():
        assert book.feed_bar(_bar(BASE, book.ts, ly)) == []
        assert book.feed_bar(_bar(HEDGE, book.ts + 500, lx)) == []  # never the same ts_ms
        book.ts += 1000
    assert s.last_z is None and s.last_beta is None


def test_a_pair_is_used_once_and_stale_bars_are_ignored():
    s = StatsArb(_cfg(window_bars=3))
    book = Book(s)
    book.feed([(8.0, 11.0), (8.01, 11.02)])
    book.feed_bar(_bar(BASE, 1000, 11.5))  # a repeat of an old bar
    book.feed_bar(_bar(HEDGE, 0, 7.0))
    assert s.last_beta is None  # still two pairs in the window
    book.feed([(8.02, 11.01)])
    assert s.last_beta is not None


def test_leg_arrival_order_does_not_matter():
    history = _history()
    a, b = Book(StatsArb(_cfg())), Book(StatsArb(_cfg()))
    a.warm(history)
    b._lx = history[-1][0]
    b.feed(history, hedge_first=True)
    assert a.s.last_z == b.s.last_z
    assert a.feed(a.shock(0.002)) == b.feed(b.shock(0.002), hedge_first=True) != []


def test_rich_spread_shorts_the_base_and_buys_a_regression_sized_hedge():
    s = StatsArb(_cfg())
    book = Book(s)
    assert book.warm(_history()) == []
    out = book.feed(book.shock(0.002))
    assert s.last_z > 2.0
    assert s.last_beta == pytest.approx(BETA, rel=0.05)
    assert [(o.inst_id, o.side, o.reduce_only) for o in out] == [
        (BASE, Side.SELL, False), (HEDGE, Side.BUY, False)]
    base_px, hedge_px = book.last_bars[BASE].close, book.last_bars[HEDGE].close
    beta = Decimal(repr(s.last_beta))
    raw = beta * Decimal("1") * Decimal("0.01") * base_px / (Decimal("0.1") * hedge_px)
    expected = (raw / Decimal("0.01")).to_integral_value(rounding=ROUND_HALF_EVEN) * Decimal("0.01")
    assert out[0].size == 1 and out[1].size == expected
    # notional of the hedge leg = beta x notional of the base leg (to a lot)
    base_notional = out[0].size * Decimal("0.01") * base_px
    hedge_notional = out[1].size * Decimal("0.1") * hedge_px
    half_lot_notional = Decimal("0.005") * Decimal("0.1") * hedge_px
    assert abs(hedge_notional - Decimal(repr(s.last_beta)) * base_notional) <= half_lot_notional


def test_cheap_spread_buys_the_base_and_sells_the_hedge():
    book = Book(StatsArb(_cfg()))
    book.warm(_history())
    out = book.feed(book.shock(-0.002))
    assert [(o.inst_id, o.side) for o in out] == [(BASE, Side.BUY), (HEDGE, Side.SELL)]


def test_exits_both_legs_when_the_spread_reverts():
    book = Book(StatsArb(_cfg()))
    book.warm(_history())
    entry = book.feed(book.shock(0.002))
    out = book.feed(book.shock(0.0))
    assert abs(book.s.last_z) < 0.5 + 1.0  # back near the line
    assert [(o.inst_id, o.side, o.size, o.reduce_only) for o in out] == [
        (BASE, Side.BUY, 1, True), (HEDGE, Side.SELL, entry[1].size, True)]
    assert "exit" in out[0].reason and book.pos == {BASE: 0, HEDGE: 0}


def test_stops_beyond_stop_z_and_stays_out_until_back_inside_exit():
    book = Book(StatsArb(_cfg()))
    book.warm(_history())
    book.feed(book.shock(0.002))
    out = book.feed(book.shock(0.01))
    assert book.s.last_z >= 4.0
    assert [(o.inst_id, o.reduce_only) for o in out] == [(BASE, True), (HEDGE, True)]
    assert "stop" in out[0].reason
    assert book.feed(book.shock(0.01)) == []  # still beyond entry_z: no re-entry while stopped
    assert book.s.last_z > 2.0
    zs = []
    while not zs or abs(zs[-1]) > 0.5:  # back on the line until |z| <= exit_z
        assert book.feed(book.shock(0.0)) == []
        zs.append(book.s.last_z)
        assert len(zs) < 30
    out = book.feed(book.shock(0.008))  # a fresh divergence trades again
    assert [(o.inst_id, o.side, o.reduce_only) for o in out] == [
        (BASE, Side.SELL, False), (HEDGE, Side.BUY, False)]


def test_no_entry_beyond_stop_z():
    book = Book(StatsArb(_cfg(stop_z=2.5)))
    book.warm(_history())
    assert book.feed(book.shock(0.002)) == []
    assert book.s.last_z > 2.5


def test_restores_a_missing_hedge_leg_with_the_entry_size():
    book = Book(StatsArb(_cfg()))
    book.warm(_history())
    entry = book.feed(book.shock(0.002))
    book.pos[HEDGE] = Decimal(0)  # the hedge order was rejected
    out = book.feed(book.shock(0.0015))  # still rich: hold the spread
    assert [(o.inst_id, o.side, o.size) for o in out] == [(HEDGE, Side.BUY, entry[1].size)]
    assert "restore hedge" in out[0].reason


def test_closes_a_hedge_leg_left_without_a_base_leg():
    book = Book(StatsArb(_cfg()))
    book.warm(_history())
    book.pos[HEDGE] = Decimal("2.5")
    out = book.feed(book.shock(0.0))
    assert [(o.inst_id, o.side, o.size, o.reduce_only) for o in out] == [
        (HEDGE, Side.SELL, Decimal("2.5"), True)]


def test_no_entry_when_the_legs_move_against_each_other():
    book = Book(StatsArb(_cfg()))
    history = _history(beta=-0.8, alpha=17.4)  # y still near 60000
    book.feed(history)
    lx = history[-1][0]
    assert book.feed([(lx, 17.4 - 0.8 * lx + 0.002)]) == []
    assert book.s.last_beta < 0 and abs(book.s.last_z) > 2.0


def test_pending_orders_count_as_exposure():
    s = StatsArb(_cfg())
    book = Book(s)
    book.warm(_history())
    lx = book._lx
    ly = ALPHA + BETA * lx + 0.002
    s.on_bar(_bar(BASE, book.ts, ly), StrategyContext(now_ms=0))
    ctx = StrategyContext(now_ms=0, pending={BASE: Decimal(-1), HEDGE: Decimal("2.6")})
    assert s.on_bar(_bar(HEDGE, book.ts, lx), ctx) == []  # the entry is in flight: hold


@pytest.mark.parametrize("symbols", [(BASE,), (BASE, BASE), (BASE, HEDGE, "SOL-USDT-SWAP")])
def test_needs_two_different_symbols(symbols):
    with pytest.raises(ConfigError, match="symbols"):
        StatsArb(_cfg(symbols=symbols))


def test_builds_from_the_registry():
    assert isinstance(build_strategy(_cfg()), StatsArb)


@pytest.mark.parametrize("params,field", [
    ({"exit_z": 2.5}, "exit_z"),
    ({"stop_z": 1.0}, "stop_z"),
    ({"window_bars": 2}, "window_bars"),
    ({"hedge_lot_size": "0"}, "hedge_lot_size"),
    ({"base_contract_value": "-1"}, "base_contract_value"),
])
def test_bad_params_name_the_field(params, field):
    with pytest.raises(ConfigError) as err:
        StatsArb(_cfg(**params))
    assert "StatsArb_v1_BTC" in str(err.value)
    assert field in str(err.value)
