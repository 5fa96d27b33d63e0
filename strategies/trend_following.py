"""TrendFollowing: fast/slow EMA trend with a volatility filter and a trailing stop."""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field, model_validator

from tradetree.core import Bar, OrderIntent, StrategyConfig
from tradetree.strategies.base import Strategy, StrategyContext, StrategyParams, orders_toward_target
from tradetree.strategies.indicators import ATR, EMA, RealizedVol

__all__ = ["TrendFollowing", "TrendFollowingParams"]


class TrendFollowingParams(StrategyParams):
    fast_bars: int = Field(default=10, ge=1)
    slow_bars: int = Field(default=40, ge=2)
    vol_window_bars: int = Field(default=30, ge=2)
    # per-bar stdev of log returns; entries only while vol is inside [floor, cap]
    vol_floor_per_bar: float = Field(default=0.0, ge=0)
    vol_cap_per_bar: float | None = Field(default=None, gt=0)
    atr_bars: int = Field(default=14, ge=1)
    atr_stop_mult: float = Field(default=3.0, gt=0)
    size: Decimal = Field(gt=0)  # venue units (contracts for swaps)
    allow_short: bool = True

    @model_validator(mode="after")
    def _ordered(self) -> TrendFollowingParams:
        if self.fast_bars >= self.slow_bars:
            raise ValueError("fast_bars must be below slow_bars")
        if self.vol_cap_per_bar is not None and self.vol_cap_per_bar <= self.vol_floor_per_bar:
            raise ValueError("vol_cap_per_bar must be above vol_floor_per_bar")
        return self


def _sign(x: Decimal | float) -> int:
    return (x > 0) - (x < 0)


class TrendFollowing(Strategy):
    """Follow the fast/slow EMA trend of the first symbol's closes.

    Rules, evaluated on every closed bar once all indicators are warm
    (``slow_bars`` closes, ``vol_window_bars`` returns, ``atr_bars`` bars);
    exposure is ``ctx.exposure`` (positions plus in-flight orders):

    - trend = +1 when EMA(fast) > EMA(slow), -1 when below, 0 when equal.
    - Trailing stop: while long, stop = highest high since entry minus
      ``atr_stop_mult`` x ATR, ratcheted (it never moves down); short is the
      mirror image. It is set from the entry bar's close and checked against
      each later bar's close *before* that bar moves it. A close through the
      stop exits to flat and blocks new entries on that side until the trend
      has turned away from it (no immediate re-entry into the same move).
    - Cross-back: long while trend is not +1 (short while not -1) exits; if the
      trend points the other way and an entry is allowed, the exit becomes a
      flip (a reduce-only close, then the opening order).
    - Entry from flat: ``size`` in the trend's direction (short only if
      ``allow_short``), only while per-bar realized vol is within
      [``vol_floor_per_bar``, ``vol_cap_per_bar``]. The filter gates entries
      only: an open position is managed by the stop and the cross-back.
    """

    Params = TrendFollowingParams

    def __init__(self, config: StrategyConfig) -> None:
        super().__init__(config)
        self.params: TrendFollowingParams
        p = self.params
        self.inst_id = config.symbols[0]
        self._fast = EMA(p.fast_bars)
        self._slow = EMA(p.slow_bars)
        self._vol = RealizedVol(p.vol_window_bars)
        self._atr = ATR(p.atr_bars)
        self._trail_side = 0  # the position side the trailing stop below belongs to
        self._extreme = 0.0  # highest high (long) / lowest low (short) since entry
        self.trail_stop: float | None = None
        self._blocked_side = 0  # side stopped out of, not re-entered until the trend turns
        self.last_trend: int | None = None
        self.last_vol: float | None = None

    @property
    def ready(self) -> bool:
        return self._slow.ready and self._fast.ready and self._vol.ready and self._atr.ready

    def _vol_ok(self) -> bool:
        p = self.params
        vol = self.last_vol
        if vol is None or vol < p.vol_floor_per_bar:
            return False
        return p.vol_cap_per_bar is None or vol <= p.vol_cap_per_bar

    def _arm_trail(self, side: int, close: float) -> None:
        """Start a trailing stop for a position on ``side`` taken at ``close``."""
        self._trail_side = side
        if side == 0:
            self.trail_stop = None
            return
        assert self._atr.value is not None
        self._extreme = close
        self.trail_stop = close - side * self.params.atr_stop_mult * self._atr.value

    def _ratchet_trail(self, bar: Bar) -> None:
        assert self._atr.value is not None and self.trail_stop is not None
        offset = self.params.atr_stop_mult * self._atr.value
        if self._trail_side > 0:
            self._extreme = max(self._extreme, float(bar.high))
            self.trail_stop = max(self.trail_stop, self._extreme - offset)
        else:
            self._extreme = min(self._extreme, float(bar.low))
            self.trail_stop = min(self.trail_stop, self._extreme + offset)

    def _can_enter(self, side: int) -> bool:
        if side == 0 or side == self._blocked_side:
            return False
        if side < 0 and not self.params.allow_short:
            return False
        return self._vol_ok()

    def on_bar(self, bar: Bar, ctx: StrategyContext) -> list[OrderIntent]:
        if bar.inst_id != self.inst_id or bar.low <= 0:
            return []  # a non-positive price is a garbled feed, not a market
        close = float(bar.close)
        fast = self._fast.update(close)
        slow = self._slow.update(close)
        self.last_vol = self._vol.update(close)
        self._atr.update(bar.high, bar.low, bar.close)
        if not self.ready:
            return []
        trend = _sign(fast - slow)
        self.last_trend = trend
        if self._blocked_side and trend != self._blocked_side:
            self._blocked_side = 0

        p = self.params
        exposure = ctx.exposure(self.inst_id)
        side = _sign(exposure)
        if side != self._trail_side:
            # a position we did not see opened (restart, partial state): trail it from here
            self._arm_trail(side, close)
            stop_hit = False
        elif side != 0:
            assert self.trail_stop is not None
            stop_hit = close <= self.trail_stop if side > 0 else close >= self.trail_stop
            self._ratchet_trail(bar)
        else:
            stop_hit = False

        target_side = side
        reason = ""
        if side != 0 and stop_hit:
            target_side, self._blocked_side = 0, side
            reason = f"trailing stop {self.trail_stop:.8g} hit at close {close:.8g}"
        elif side != 0 and trend != side:
            target_side = trend if self._can_enter(trend) else 0
            reason = f"trend cross-back fast={fast:.8g} slow={slow:.8g}"
        elif side == 0 and self._can_enter(trend):
            target_side = trend
            reason = f"trend entry fast={fast:.8g} slow={slow:.8g} vol={self.last_vol:.3g}"
        if target_side == side:
            return []
        if target_side != 0:
            self._arm_trail(target_side, close)
        return orders_toward_target(self, self.inst_id, target_side * p.size, ctx, reason=reason)
