"""MeanReversion: trade the z-score of price against its rolling mean."""

from __future__ import annotations

import math
from collections import deque
from decimal import Decimal

from pydantic import Field, model_validator

from tradetree.core import Bar, OrderIntent, StrategyConfig
from tradetree.strategies.base import Strategy, StrategyContext, StrategyParams, orders_toward_target

__all__ = ["MeanReversion", "MeanReversionParams"]


class MeanReversionParams(StrategyParams):
    window_bars: int = Field(default=20, ge=2)
    entry_z: float = Field(default=2.0, gt=0)
    exit_z: float = Field(default=0.5, ge=0)
    stop_z: float | None = Field(default=4.0, gt=0)  # |z| beyond this: get out, the regime broke
    size: Decimal = Field(gt=0)  # venue units (contracts for swaps)
    allow_short: bool = True

    @model_validator(mode="after")
    def _ordered(self) -> MeanReversionParams:
        if self.exit_z >= self.entry_z:
            raise ValueError("exit_z must be below entry_z")
        if self.stop_z is not None and self.stop_z <= self.entry_z:
            raise ValueError("stop_z must be above entry_z")
        return self


class MeanReversion(Strategy):
    """Long ``size`` when z < -entry_z, short when z > entry_z (if allowed),
    flat when |z| falls below exit_z, and flat (stopped) when |z| exceeds
    stop_z, staying out until z has come back inside exit_z. While stopped,
    a position still there (the stop's close was rejected or denied) is
    closed again on every bar.

    z = (close - mean) / stdev over the last ``window_bars`` closes, the
    current one included. Trades the first symbol of the config.
    """

    Params = MeanReversionParams

    def __init__(self, config: StrategyConfig) -> None:
        super().__init__(config)
        self.params: MeanReversionParams
        self.inst_id = config.symbols[0]
        self._closes: deque[float] = deque(maxlen=self.params.window_bars)
        self._stopped = False
        self.last_z: float | None = None

    def zscore(self) -> float | None:
        if len(self._closes) < self.params.window_bars:
            return None
        n = len(self._closes)
        mean = sum(self._closes) / n
        var = sum((c - mean) ** 2 for c in self._closes) / (n - 1)
        if var <= 0:
            return 0.0
        return (self._closes[-1] - mean) / math.sqrt(var)

    def on_bar(self, bar: Bar, ctx: StrategyContext) -> list[OrderIntent]:
        if bar.inst_id != self.inst_id:
            return []
        self._closes.append(float(bar.close))
        z = self.zscore()
        self.last_z = z
        if z is None:
            return []
        p = self.params
        exposure = ctx.exposure(self.inst_id)
        target = exposure
        reason = ""
        if p.stop_z is not None and abs(z) >= p.stop_z and exposure != 0:
            target, reason, self._stopped = Decimal(0), f"stop z={z:.2f}", True
        elif self._stopped:
            if abs(z) <= p.exit_z:
                self._stopped = False
            if exposure != 0:  # the stop's close did not fill (rejected, denied): close again
                target, reason = Decimal(0), f"stopped z={z:.2f}"
        elif exposure > 0 and z >= -p.exit_z:
            target, reason = Decimal(0), f"exit long z={z:.2f}"
        elif exposure < 0 and z <= p.exit_z:
            target, reason = Decimal(0), f"exit short z={z:.2f}"
        elif exposure == 0 and p.stop_z is not None and abs(z) >= p.stop_z:
            pass  # already beyond the stop: entering would only stop out on the next bar
        elif exposure == 0 and z <= -p.entry_z:
            target, reason = p.size, f"entry long z={z:.2f}"
        elif exposure == 0 and z >= p.entry_z and p.allow_short:
            target, reason = -p.size, f"entry short z={z:.2f}"
        if target == exposure:
            return []
        return orders_toward_target(self, self.inst_id, target, ctx, reason=reason)
