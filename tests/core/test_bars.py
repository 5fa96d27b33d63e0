from decimal import Decimal

from tradetree.core.bars import BarAggregator
from tradetree.core.types import Ticker


def _t(ms, px):
    return Ticker(venue="okx", inst_id="BTC-USDT", ts_ms=ms, last=Decimal(px))


def test_bars_are_emitted_when_the_next_interval_starts():
    agg = BarAggregator(1000)
    assert agg.add(_t(1000, 10)) == []
    assert agg.add(_t(1500, 12)) == []
    assert agg.add(_t(1900, 9)) == []
    (bar,) = agg.add(_t(2100, 11))
    assert (bar.ts_ms, bar.open, bar.high, bar.low, bar.close) == (1000, 10, 12, 9, 9)


def test_late_tickers_are_ignored_and_gaps_emit_nothing_extra():
    agg = BarAggregator(1000)
    agg.add(_t(5000, 1))
    assert agg.add(_t(4000, 2)) == []
    (bar,) = agg.add(_t(9000, 3))
    assert bar.ts_ms == 5000 and bar.close == 1
