"""VolScaledDirectional: an EMA-slope direction sized by target vol / forecast vol.

The volatility forecaster is pluggable (``VolatilityForecaster``): the
default is trailing realized vol; a model-backed forecaster (e.g. one that
asks the ``ModelServer``) can be injected with
``VolScaledDirectional(config, forecaster=...)``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from decimal import ROUND_FLOOR, Decimal
from itertools import islice
from typing import Protocol, runtime_checkable

from pydantic import Field, model_validator

from core.config import StrategyConfig
from core.types import Bar, OrderIntent
from strategies.base import Strategy, StrategyContext, StrategyParams, orders_toward_target
from strategies.indicators import EMA

__all__ = [
    "VolatilityForecaster",
    "RealizedVolForecaster",
    "VolScaledDirectional",
    "VolScaledDirectionalParams",
]


@runtime_checkable
class VolatilityForecaster(Protocol):
    """Forecasts per-bar volatility from the closes seen so far."""

    def forecast(self, closes: Sequence[float]) -> float:
        """The expected stdev of one bar's log return (a fraction: 0.002 = 0.2 %),
        as of the last close (oldest first in ``closes``).

        A value that is not finite or not positive means "no forecast" (too
        little history, model unavailable): the strategy then leaves its
        position as it is for that bar. Must not raise for lack of history.
        """
        ...


class RealizedVolForecaster:
    """Sample stdev of the last ``window_bars`` log returns; NaN until there are that many.

    Raises:
        ValueError: ``window_bars < 2``.
    """

    def __init__(self, window_bars: int) -> None:
        if window_bars < 2:
            raise ValueError("window_bars must be >= 2")
        self.window_bars = window_bars

    def forecast(self, closes: Sequence[float]) -> float:
        n = len(closes)
        if n < self.window_bars + 1:
            return math.nan
        tail = list(islice(closes, n - self.window_bars - 1, n))
        if any(not c > 0 for c in tail):
            return math.nan
        rets = [math.log(b / a) for a, b in zip(tail, tail[1:])]
        mean = math.fsum(rets) / len(rets)
        var = math.fsum((r - mean) ** 2 for r in rets) / (len(rets) - 1)
        return math.sqrt(var)


class VolScaledDirectionalParams(StrategyParams):
    ema_bars: int = Field(default=20, ge=1)
    slope_bars: int = Field(default=5, ge=1)  # direction = sign(EMA now - EMA slope_bars ago)
    signal_threshold_bps: float = Field(default=0.0, ge=0)  # |slope| at or below this: flat
    vol_window_bars: int = Field(default=30, ge=2)  # of the default (realized) forecaster
    history_bars: int = Field(default=200, ge=2)  # closes kept for the forecaster
    target_vol_per_bar: float = Field(gt=0)  # stdev of one bar's log return
    size_at_target_vol: Decimal = Field(gt=0)  # venue units held when forecast == target
    max_size: Decimal = Field(gt=0)  # cap on |position|, venue units
    lot_size: Decimal = Field(gt=0)  # sizes are rounded down to this step
    rebalance_band: float = Field(default=0.2, ge=0)  # resize only when off by this fraction
    allow_short: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> "VolScaledDirectionalParams":
        if self.history_bars <= self.vol_window_bars:
            raise ValueError("history_bars must be above vol_window_bars")
        if self.max_size < self.lot_size:
            raise ValueError("max_size must be at least lot_size")
        return self


def _sign(x: Decimal | float) -> int:
    return (x > 0) - (x < 0)


class VolScaledDirectional(Strategy):
    """Hold the EMA-slope direction of the first symbol, sized to a volatility target.

    On each closed bar, once the EMA has ``ema_bars`` closes and ``slope_bars``
    earlier values to compare with:

    - direction = sign(EMA_t - EMA_{t-slope_bars}), 0 when the slope is at or
      below ``signal_threshold_bps`` of EMA_t (or when it is short and
      shorting is not allowed);
    - size = min(``size_at_target_vol`` x ``target_vol_per_bar`` / forecast,
      ``max_size``), rounded down to ``lot_size``; the forecast comes from the
      forecaster over the last ``history_bars`` closes. No valid forecast:
      no trade on this bar.
    - target = direction x size. Orders are sent when the target's sign
      differs from the exposure's, or when |target - exposure| is more than
      ``rebalance_band`` x |exposure| (and at least one lot), so a drifting
      forecast does not trade every bar.
    """

    Params = VolScaledDirectionalParams

    def __init__(
        self, config: StrategyConfig, *, forecaster: VolatilityForecaster | None = None
    ) -> None:
        super().__init__(config)
        self.params: VolScaledDirectionalParams
        p = self.params
        self.inst_id = config.symbols[0]
        self.forecaster: VolatilityForecaster = forecaster or RealizedVolForecaster(p.vol_window_bars)
        self._ema = EMA(p.ema_bars)
        self._ema_history: deque[float] = deque(maxlen=p.slope_bars + 1)
        self._closes: deque[float] = deque(maxlen=p.history_bars)
        self.last_forecast: float | None = None
        self.last_direction: int | None = None

    def size_for(self, forecast: float) -> Decimal:
        """The position size for a per-bar vol ``forecast`` (> 0): scaled, capped, lot-rounded."""
        p = self.params
        scaled = p.size_at_target_vol * Decimal(repr(p.target_vol_per_bar)) / Decimal(repr(forecast))
        capped = min(scaled, p.max_size)
        return (capped / p.lot_size).to_integral_value(rounding=ROUND_FLOOR) * p.lot_size

    def _direction(self) -> int:
        ema_now, ema_then = self._ema_history[-1], self._ema_history[0]
        slope_bps = (ema_now - ema_then) / ema_now * 1e4
        if abs(slope_bps) <= self.params.signal_threshold_bps:
            return 0
        direction = 1 if slope_bps > 0 else -1
        return 0 if direction < 0 and not self.params.allow_short else direction

    def on_bar(self, bar: Bar, ctx: StrategyContext) -> list[OrderIntent]:
        if bar.inst_id != self.inst_id or bar.close <= 0:
            return []  # a non-positive price is a garbled feed, not a market
        close = float(bar.close)
        self._closes.append(close)
        self._ema_history.append(self._ema.update(close))
        if not self._ema.ready or len(self._ema_history) <= self.params.slope_bars:
            return []
        forecast = float(self.forecaster.forecast(self._closes))
        self.last_forecast = forecast
        if not (math.isfinite(forecast) and forecast > 0):
            return []
        direction = self._direction()
        self.last_direction = direction
        target = direction * self.size_for(forecast)
        exposure = ctx.exposure(self.inst_id)
        if target == exposure:
            return []
        if _sign(target) == _sign(exposure):
            gap = abs(target - exposure)
            band = Decimal(repr(self.params.rebalance_band)) * abs(exposure)
            if gap < self.params.lot_size or gap <= band:
                return []
        reason = f"vol scaled dir={direction} forecast={forecast:.3g} size={abs(target)}"
        return orders_toward_target(self, self.inst_id, target, ctx, reason=reason)
