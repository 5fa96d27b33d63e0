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

from tradetree.sim.backtest.data import decimal_texts
from tradetree.sim.backtest.prepare import POINTS_PER_CANDLE, PathArrays, tick_decimal
from tradetree.sim.config import SimInstrument
from tradetree.sim.market_data import MarketTick, PublicTrade
from tradetree.sim.matching import BookShape, frozen_builder

__all__ = ["BookModel", "ReplayPath", "POINTS_PER_CANDLE"]

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


class ReplayPath:
    """The market path of one instrument's candles: prepared as arrays, its decimals made on demand.

    Point ``(i, j)`` is point ``j`` (0..3) of candle ``i``. ``trade_id_stride``
    and ``trade_id_offset`` number the public trades as CandleReplay does when
    every market step brings one point of each of ``stride`` instruments
    (the id has no effect on matching). ``arrays`` is the prepared path
    (:func:`sim.backtest.prepare.prepare_path`); the engine only sees a
    point's ``Decimal`` when a point is fed, so they are built then, once per
    distinct price.

    Raises:
        ValueError: ``arrays`` is another instrument's path.
    """

    def __init__(self, inst: SimInstrument, arrays: PathArrays, *, trade_id_stride: int = 1,
                 trade_id_offset: int = 0) -> None:
        if arrays.inst_id != inst.inst_id:
            raise ValueError(f"prepared path of {arrays.inst_id} does not fit {inst.inst_id}")
        self.inst_id = inst.inst_id
        self.ts_ms = arrays.ts_ms.tolist()
        self._points = arrays.points.tolist()
        self._point_ms = arrays.point_ms.tolist()
        self._exp = arrays.exp
        self._prices: dict[int, Decimal] = {}  # by tick count: a price seen again is the same object
        self._first_raw = Decimal(arrays.first_open_text)
        self._volume = arrays.volume
        self._lot = inst.lot_size
        self._sizes: dict[int, Decimal] = {}  # point size per candle, computed when first needed
        self._stride = trade_id_stride
        self._offset = trade_id_offset

    def __len__(self) -> int:
        return len(self.ts_ms)

    def point_ts(self, i: int, j: int) -> int:
        return self._point_ms[POINTS_PER_CANDLE * i + j]

    def point_price(self, i: int, j: int) -> Decimal:
        t = self._points[POINTS_PER_CANDLE * i + j]
        price = self._prices.get(t)
        if price is None:
            price = self._prices[t] = tick_decimal(t, self._exp)
        return price

    def _previous_price(self, i: int, j: int) -> Decimal:
        if j > 0:
            return self.point_price(i, j - 1)
        return self.point_price(i - 1, 3) if i > 0 else self._first_raw

    def point_size(self, i: int) -> Decimal:
        size = self._sizes.get(i)
        if size is None:
            volume = Decimal(decimal_texts(self._volume[i:i + 1])[0])
            quarter = (volume / POINTS_PER_CANDLE).quantize(self._lot, rounding=ROUND_DOWN)
            size = self._sizes[i] = max(quarter, self._lot)
        return size

    def tick(self, i: int, j: int, *, with_trade: bool = True) -> MarketTick:
        """The market step of point ``(i, j)``: its price and its one public trade.

        ``with_trade=False`` leaves the trade out: the engine uses public trades only to fill
        resting orders, so a step fed while we have none needs no trade.
        """
        k = POINTS_PER_CANDLE * i + j
        t = self._points[k]
        px = self._prices.get(t) or self.point_price(i, j)  # (a price is at least one tick: never falsy)
        ts = self._point_ms[k]
        size = self._sizes.get(i) or self.point_size(i)  # (a size is at least one lot: never falsy)
        if not with_trade:
            tick = _MarketTickB(inst_id=self.inst_id, ts_ms=ts, price=px, volume=size, trades=_NO_TRADES)
            tick.__class__ = MarketTick
            return tick
        side = "buy" if px >= self._previous_price(i, j) else "sell"
        trade_id = str(k * self._stride + self._offset + 1)
        return MarketTick(self.inst_id, ts, px, size, (PublicTrade(trade_id, px, size, side, ts),))
