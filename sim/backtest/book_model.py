"""How the backtester turns candles into a market the matching engine can trade against.

Candles carry no order book, so the book is modelled, in two steps, exactly as
the paper venue (``sim.server`` replaying a candle file) models it:

1. **Market path.** Each candle becomes four price points a quarter of the
   candle apart: open; then low and high, low first for a rising candle
   (close >= open), high first for a falling one; then close. Prices are put on
   the instrument's tick grid (``Decimal.quantize`` to ``tick_size``; a price
   below one tick becomes one tick). Each point carries one public trade of a
   quarter of the candle's volume (rounded down to the lot size, at least one
   lot), on the buy side when the price did not fall. The spacing uses the
   gap to the next candle, so a candle before a hole in the data is stretched
   over it. This is :class:`sim.market_data.CandleReplay`, point for point
   (``tests/backtest`` checks it).

2. **Book.** At every point the matching engine builds a synthetic book
   around the point's price (``sim.matching.MatchingEngine``), shaped by
   :class:`BookModel`: ``levels`` per side, ``spread_ticks`` between best bid
   and ask (0 = bid = ask = the point price), levels ``level_spacing_bps``
   apart (at least one tick), the top level worth about
   ``top_level_notional`` in quote currency and level ``i`` about
   ``1 + depth_growth * i`` times that, each size scaled by a random factor in
   [0.5, 1.5) drawn from a hash of (seed, instrument, point time). A market
   order walks that book (one fill per level, VWAP across depth), which is the
   slippage model: spread plus depth. A resting limit
   order fills when a point's public trade prints strictly through its price,
   at most the trade's size.

So slippage, spread and depth are configuration (this model), as are fees
(``sim.config.FeeSchedule``) and latency (``BacktestConfig.latency_ms``).
:meth:`BookModel.frictionless` is the idealised book of textbook backtests:
no spread and one level deep enough for any order, so a market order fills at
exactly the point's price.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

from pydantic import BaseModel, ConfigDict, Field

from tradetree.sim.backtest.data import CandleSeries
from tradetree.sim.config import SimInstrument
from tradetree.sim.market_data import MarketTick, PublicTrade
from tradetree.sim.matching import BookShape, frozen_builder

__all__ = ["BookModel", "ReplayPath", "POINTS_PER_CANDLE"]

POINTS_PER_CANDLE = 4
_MarketTickB = frozen_builder(MarketTick)  # see sim.matching.frozen_builder
_NO_TRADES: tuple[PublicTrade, ...] = ()


class BookModel(BaseModel):
    """Shape of the synthetic book built around every market point (see the module doc)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spread_ticks: int = Field(default=2, ge=0)
    level_spacing_bps: Decimal = Field(default=Decimal("1"), ge=0)
    top_level_notional: Decimal = Field(default=Decimal("50000"), gt=0)
    depth_growth: Decimal = Field(default=Decimal("0.5"), ge=0)
    levels: int = Field(default=20, ge=1)
    market_buffer: Decimal = Field(default=Decimal("0.02"), ge=0)  # price buffer reserving for market orders

    def shape(self) -> BookShape:
        return BookShape(
            spread_ticks=self.spread_ticks, level_spacing_bps=self.level_spacing_bps,
            top_level_notional=self.top_level_notional, depth_growth=self.depth_growth,
            market_buffer=self.market_buffer,
        )

    @classmethod
    def frictionless(cls) -> BookModel:
        """No spread, one level of about 10^15 quote units: fills at the point's price."""
        return cls(spread_ticks=0, top_level_notional=Decimal("1e15"), levels=1)


def _on_grid(price: Decimal, tick: Decimal) -> Decimal:
    # CandleReplay._tick's rule, kept identical so the paths agree.
    return price.quantize(tick) if price >= tick else tick


class ReplayPath:
    """The market path of one instrument's candles, computed point by point on demand.

    Point ``(i, j)`` is point ``j`` (0..3) of candle ``i``. ``trade_id_stride``
    and ``trade_id_offset`` number the public trades as CandleReplay does when
    every market step brings one point of each of ``stride`` instruments
    (the id has no effect on matching).
    """

    def __init__(self, inst: SimInstrument, series: CandleSeries, *, trade_id_stride: int = 1,
                 trade_id_offset: int = 0) -> None:
        self.inst_id = inst.inst_id
        tick, lot = inst.tick_size, inst.lot_size
        o, h, lo, c, v = series.decimals()
        ts = series.ts_ms.tolist()
        n = len(ts)
        self.ts_ms = ts
        if n == 1:
            intervals = [60_000]
        else:
            intervals = [b - a for a, b in zip(ts, ts[1:])] + [ts[-1] - ts[-2]]
        self._interval = [max(x, POINTS_PER_CANDLE) for x in intervals]
        self.open = [_on_grid(x, tick) for x in o]
        self.high = [_on_grid(x, tick) for x in h]
        self.low = [_on_grid(x, tick) for x in lo]
        self.close = [_on_grid(x, tick) for x in c]
        self.volume = v
        self._rising = [cc >= oo for oo, cc in zip(o, c)]
        self._first_raw = o[0]
        self._lot = lot
        self._sizes: dict[int, Decimal] = {}  # point size per candle, computed when first needed
        self._stride = trade_id_stride
        self._offset = trade_id_offset

    def __len__(self) -> int:
        return len(self.ts_ms)

    def point_ts(self, i: int, j: int) -> int:
        return self.ts_ms[i] + j * self._interval[i] // POINTS_PER_CANDLE

    def point_price(self, i: int, j: int) -> Decimal:
        if j == 0:
            return self.open[i]
        if j == 3:
            return self.close[i]
        first_low = self._rising[i]
        return (self.low[i] if first_low else self.high[i]) if j == 1 else (
            self.high[i] if first_low else self.low[i])

    def _previous_price(self, i: int, j: int) -> Decimal:
        if j > 0:
            return self.point_price(i, j - 1)
        return self.close[i - 1] if i > 0 else self._first_raw

    def point_size(self, i: int) -> Decimal:
        size = self._sizes.get(i)
        if size is None:
            quarter = (self.volume[i] / POINTS_PER_CANDLE).quantize(self._lot, rounding=ROUND_DOWN)
            size = self._sizes[i] = max(quarter, self._lot)
        return size

    def tick(self, i: int, j: int, *, with_trade: bool = True) -> MarketTick:
        """The market step of point ``(i, j)``: its price and its one public trade.

        ``with_trade=False`` leaves the trade out: the engine uses public trades only to fill
        resting orders, so a step fed while we have none needs no trade.
        """
        px = self.point_price(i, j)
        ts = self.ts_ms[i] + j * self._interval[i] // POINTS_PER_CANDLE  # point_ts, inlined
        size = self._sizes.get(i) or self.point_size(i)  # (a size is at least one lot: never falsy)
        if not with_trade:
            tick = _MarketTickB(inst_id=self.inst_id, ts_ms=ts, price=px, volume=size, trades=_NO_TRADES)
            tick.__class__ = MarketTick
            return tick
        side = "buy" if px >= self._previous_price(i, j) else "sell"
        trade_id = str((POINTS_PER_CANDLE * i + j) * self._stride + self._offset + 1)
        return MarketTick(self.inst_id, ts, px, size, (PublicTrade(trade_id, px, size, side, ts),))
