"""VolScaledDirectional: an EMA-slope direction sized by target vol / forecast vol.

The volatility forecaster is pluggable (``VolatilityForecaster``) and named
in the params as ``vol_forecaster`` (an ``ml.forecaster.ForecasterSpec``
mapping):

- absent, or ``{kind: realized}`` (``window_bars`` defaults to
  ``vol_window_bars``): trailing realized vol of the closes
  (``RealizedVolForecaster`` below, no ML);
- ``{kind: model, registry_root, name, version?}``: the registered model,
  loaded in-process (backtests, paper, live alike);
- ``{kind: server, name}``: the engine tree's ``ModelServer[<name>]`` (an
  entry of the engine config's ``models:`` block). The tree fills in the
  actor's ``actor_name`` and ``ray_namespace`` when it starts; without them
  (a backtest has no tree) construction raises ``ConfigError`` telling to
  use ``kind: model``.

Model-backed forecasters are wrapped in ``ml.forecaster.BarWindowForecaster``
(the strategy feeds it every bar), so a model or server that cannot answer
gives NaN: no trade on that bar. A ``forecaster=`` constructor argument
overrides the params (tests, the backtester's callers). This module imports
no ML or Ray code unless a model-backed forecaster is asked for.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from decimal import ROUND_FLOOR, Decimal
from itertools import islice
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import Field, model_validator

from tradetree.core import Bar, ConfigError, OrderIntent, StrategyConfig
from tradetree.strategies.base import Strategy, StrategyContext, StrategyParams, orders_toward_target
from tradetree.strategies.indicators import EMA

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
    # An ml.forecaster.ForecasterSpec mapping (see the module doc); None: realized vol over vol_window_bars.
    vol_forecaster: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> VolScaledDirectionalParams:
        if self.max_size < self.lot_size:
            raise ValueError("max_size must be at least lot_size")
        spec = self.vol_forecaster
        if spec is not None:
            if spec.get("kind") == "realized":
                extra = sorted(set(spec) - {"kind", "window_bars"})
                if extra:
                    raise ValueError(f"vol_forecaster: kind 'realized' takes only window_bars, not {extra}")
                window = spec.get("window_bars", self.vol_window_bars)
                if not isinstance(window, int) or isinstance(window, bool) or window < 2:
                    raise ValueError(f"vol_forecaster.window_bars: an integer >= 2, got {window!r}")
            else:
                _check_model_spec(spec)
        if self.history_bars <= self.realized_window_bars:  # after the spec check: window_bars is an int
            raise ValueError("history_bars must be above vol_window_bars (or vol_forecaster.window_bars)")
        return self

    @property
    def realized_window_bars(self) -> int:
        """The realized-vol window (when the forecaster is realized vol)."""
        spec = self.vol_forecaster or {}
        return int(spec.get("window_bars", self.vol_window_bars)) if spec.get("kind", "realized") == "realized" \
            else self.vol_window_bars


def _check_model_spec(spec: dict[str, Any]) -> None:
    """Validate a model-backed forecaster spec (imports the ML package, only for these).

    Raises:
        ValueError: the spec is not a valid ``ForecasterSpec``, or is a served model
            the engine tree has not resolved (no ``actor_name``): see the module doc.
    """
    from pydantic import ValidationError

    from tradetree.ml import ForecasterSpec

    try:
        parsed = ForecasterSpec.model_validate(spec)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'vol_forecaster'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"vol_forecaster: {problems}") from None
    if parsed.kind == "server" and parsed.actor_name is None:
        raise ValueError(
            f"vol_forecaster: kind 'server' (model {parsed.name!r}) is served by the engine tree's "
            f"ModelServer[{parsed.name}], which fills in actor_name and ray_namespace when it starts; there is "
            "no tree here (e.g. a backtest): use kind 'model' with registry_root and name to run the same "
            "registered model in-process"
        )


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
    # Params that name a forecaster (ForecasterSpec mappings): the engine config checks served models there.
    forecaster_params: ClassVar[tuple[str, ...]] = ("vol_forecaster",)

    def __init__(
        self, config: StrategyConfig, *, forecaster: VolatilityForecaster | None = None
    ) -> None:
        """Raises ConfigError: bad params, or a ``kind: model`` forecaster whose model cannot be loaded."""
        super().__init__(config)
        self.params: VolScaledDirectionalParams
        p = self.params
        self.inst_id = config.symbols[0]
        self.forecaster: VolatilityForecaster = forecaster or self._build_forecaster()
        # A bar-window forecaster (model-backed) needs every bar before it is asked.
        self._observe = getattr(self.forecaster, "observe", None)
        self._ema = EMA(p.ema_bars)
        self._ema_history: deque[float] = deque(maxlen=p.slope_bars + 1)
        self._closes: deque[float] = deque(maxlen=p.history_bars)
        self.last_forecast: float | None = None
        self.last_direction: int | None = None

    def _build_forecaster(self) -> VolatilityForecaster:
        p = self.params
        spec = p.vol_forecaster
        if spec is None or spec.get("kind") == "realized":
            return RealizedVolForecaster(p.realized_window_bars)
        from tradetree.ml import BarWindowForecaster, MLError, build_forecaster

        try:
            return BarWindowForecaster(build_forecaster(spec), max_bars=p.history_bars)
        except MLError as exc:  # e.g. the model is not in the registry, or fails its gate
            raise ConfigError(f"strategy {self.id} params: vol_forecaster: {type(exc).__name__}: {exc}") from None

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
        if self._observe is not None:
            self._observe(bar)  # the same bar twice (a caller fed it already) just replaces it
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
