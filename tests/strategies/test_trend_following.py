from decimal import Decimal

import pytest

from tradetree.core.config import StrategyConfig
from tradetree.core.errors import ConfigError
from tradetree.core.types import Bar, Side
from tradetree.strategies import StrategyContext, TrendFollowing, build_strategy

INST = "BTC-USDT-SWAP"
WARMUP = [100.0] * 10  # flat: fast == slow, no trend, indicators warm


def _cfg(**params):
    base = {"fast_bars": 3, "slow_bars": 8, "vol_window_bars": 5, "atr_bars": 3, "atr_stop_mult": 2.0,
            "size": "1"}
    base.update(params)
    return StrategyConfig.model_validate(
        {"class": "TrendFollowing", "version": "v1", "venue": "okx", "symbols": [INST], "params": base})


def _bar(i, close):
    c = Decimal(str(close))
    return Bar(venue="okx", inst_id=INST, ts_ms=i * 1000, interval_ms=1000, open=c, high=c, low=c, close=c)


class Book:
    """Feeds closes and fills every intent at once, so the next bar sees the new position."""

    def __init__(self, strategy):
        self.strategy = strategy
        self.position = Decimal(0)
        self.i = 0
        self.log = []  # (bar index, intents)

    def feed(self, closes):
        emitted = []
        for close in closes:
            ctx = StrategyContext(now_ms=self.i, positions={INST: self.position})
            out = self.strategy.on_bar(_bar(self.i, close), ctx)
            for intent in out:
                self.position += intent.side.sign * intent.size
            if out:
                self.log.append((self.i, out))
            emitted.extend(out)
            self.i += 1
        return emitted


UP = [101, 102, 103, 104, 105, 106, 107, 108]
DOWN = [99, 98, 97, 96, 95, 94, 93, 92]


def test_enters_long_on_an_uptrend_and_short_on_a_downtrend():
    book = Book(TrendFollowing(_cfg()))
    out = book.feed(WARMUP + UP)
    assert [(o.side, o.size, o.reduce_only) for o in out] == [(Side.BUY, Decimal(1), False)]
    assert book.log[0][0] == len(WARMUP)  # on the first bar of the trend
    assert "trend entry" in out[0].reason
    book = Book(TrendFollowing(_cfg()))
    out = book.feed(WARMUP + DOWN)
    assert [(o.side, o.size) for o in out] == [(Side.SELL, Decimal(1))]


def test_no_trading_while_indicators_are_warming_up():
    book = Book(TrendFollowing(_cfg()))
    assert book.feed([100, 101, 102, 103, 104, 105, 106]) == []  # 7 bars < slow_bars


def test_no_short_when_not_allowed():
    book = Book(TrendFollowing(_cfg(allow_short=False)))
    assert book.feed(WARMUP + DOWN) == []


def test_cross_back_exits_and_flips_when_short_allowed():
    book = Book(TrendFollowing(_cfg(atr_stop_mult=50.0)))  # stop far away: only the cross acts
    book.feed(WARMUP + UP)
    assert book.position == 1
    out = book.feed([100, 96, 92])
    assert [(o.side, o.size, o.reduce_only) for o in out] == [(Side.SELL, 1, True), (Side.SELL, 1, False)]
    assert "cross-back" in out[0].reason
    assert book.position == -1


def test_cross_back_only_exits_when_short_not_allowed():
    book = Book(TrendFollowing(_cfg(atr_stop_mult=50.0, allow_short=False)))
    book.feed(WARMUP + UP)
    out = book.feed([100, 96, 92])
    assert [(o.side, o.size, o.reduce_only) for o in out] == [(Side.SELL, 1, True)]
    assert book.position == 0


def test_trailing_stop_exits_while_the_trend_is_still_up_and_blocks_reentry():
    s = TrendFollowing(_cfg(atr_stop_mult=1.0))
    book = Book(s)
    book.feed(WARMUP + UP)
    assert book.position == 1 and s.trail_stop is not None
    stop_before = s.trail_stop
    assert stop_before > 105  # ratcheted up with the highs
    out = book.feed([107])  # a one-point dip: below the stop, fast still above slow
    assert [(o.side, o.reduce_only) for o in out] == [(Side.SELL, True)]
    assert "trailing stop" in out[0].reason and s.last_trend == 1
    # the trend resumes, but the stopped-out side stays blocked until the trend turns
    assert book.feed([108, 109, 110, 111]) == []
    assert book.position == 0
    out = book.feed([105, 100])  # the trend turns down: a short entry is a new move
    assert [o.side for o in out] == [Side.SELL]


def test_trailing_stop_never_moves_against_the_position():
    s = TrendFollowing(_cfg(atr_stop_mult=3.0))
    book = Book(s)
    book.feed(WARMUP + UP)
    stops = []
    for close in (108.5, 108.2, 108.4, 108.3):  # volatile sideways: the ATR grows, the stop holds
        book.feed([close])
        stops.append(s.trail_stop)
    assert stops == sorted(stops)


CHOPPY_UP = [104, 101, 106, 103, 108, 105, 110, 107, 112]  # up ~3 % a bar, down ~3 % the next


def test_vol_cap_blocks_entries_in_a_disorderly_market():
    capped = Book(TrendFollowing(_cfg(vol_cap_per_bar=0.01, atr_stop_mult=50.0)))
    assert capped.feed(WARMUP + CHOPPY_UP) == []
    assert capped.strategy.last_trend == 1 and capped.strategy.last_vol > 0.01
    inside = Book(TrendFollowing(_cfg(vol_cap_per_bar=0.1, atr_stop_mult=50.0)))
    assert [o.side for o in inside.feed(WARMUP + CHOPPY_UP)] == [Side.BUY]


def test_vol_floor_blocks_entries_in_a_dead_market():
    # a steady 1 %-a-bar climb has almost no dispersion of returns
    floored = Book(TrendFollowing(_cfg(vol_floor_per_bar=0.02)))
    assert floored.feed(WARMUP + UP) == []
    assert floored.strategy.last_trend == 1
    inside = Book(TrendFollowing(_cfg(vol_floor_per_bar=0.0001, vol_cap_per_bar=0.05)))
    assert [o.side for o in inside.feed(WARMUP + UP)] == [Side.BUY]


def test_pending_orders_count_as_exposure():
    s = TrendFollowing(_cfg())
    for i, close in enumerate(WARMUP):
        s.on_bar(_bar(i, close), StrategyContext(now_ms=i))
    ctx = StrategyContext(now_ms=99, positions={}, pending={INST: Decimal(1)})
    assert s.on_bar(_bar(10, 101), ctx) == []


def test_ignores_other_instruments():
    s = TrendFollowing(_cfg())
    bar = _bar(0, 100).model_copy(update={"inst_id": "ETH-USDT-SWAP"})
    assert s.on_bar(bar, StrategyContext(now_ms=0)) == []


def test_builds_from_the_registry():
    assert isinstance(build_strategy(_cfg()), TrendFollowing)


@pytest.mark.parametrize("params,field", [
    ({"size": "0"}, "size"),
    ({"fast_bars": 8}, "fast_bars"),
    ({"vol_floor_per_bar": 0.01, "vol_cap_per_bar": 0.005}, "vol_cap_per_bar"),
    ({"atr_stop_mult": -1}, "atr_stop_mult"),
    ({"nope": 1}, "nope"),
])
def test_bad_params_name_the_field(params, field):
    with pytest.raises(ConfigError) as err:
        TrendFollowing(_cfg(**params))
    assert "TrendFollowing_v1_BTC" in str(err.value)
    assert field in str(err.value)
