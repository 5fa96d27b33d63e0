"""StatsArb: trade the z-score of a log-price spread between two instruments."""

from __future__ import annotations

import math
from decimal import ROUND_HALF_EVEN, Decimal

from pydantic import Field, model_validator

from tradetree.core import Bar, ConfigError, OrderIntent, StrategyConfig
from tradetree.strategies.base import Strategy, StrategyContext, StrategyParams, orders_toward_target
from tradetree.strategies.indicators import RollingOLS

__all__ = ["StatsArb", "StatsArbParams"]


class StatsArbParams(StrategyParams):
    window_bars: int = Field(default=60, ge=3)
    entry_z: float = Field(default=2.0, gt=0)
    exit_z: float = Field(default=0.5, ge=0)
    stop_z: float | None = Field(default=4.0, gt=0)
    base_size: Decimal = Field(gt=0)  # contracts of the base leg (symbols[0])
    base_contract_value: Decimal = Field(gt=0)  # base units per contract of symbols[0]
    hedge_contract_value: Decimal = Field(gt=0)  # base units per contract of symbols[1]
    hedge_lot_size: Decimal = Field(gt=0)  # the hedge leg's size step, in its contracts

    @model_validator(mode="after")
    def _ordered(self) -> StatsArbParams:
        if self.exit_z >= self.entry_z:
            raise ValueError("exit_z must be below entry_z")
        if self.stop_z is not None and self.stop_z <= self.entry_z:
            raise ValueError("stop_z must be above entry_z")
        return self


def _sign(x: Decimal) -> int:
    return (x > 0) - (x < 0)


class StatsArb(Strategy):
    """Pair trade ``symbols[0]`` (base, y) against ``symbols[1]`` (hedge, x).

    Bars arrive one instrument at a time; the strategy acts only on a *pair*:
    when it holds bars of both legs with the same ``ts_ms``. A pair older than
    the last one used is ignored, so is a leg's bar that never gets a partner.

    On each pair, ``ln(y) = alpha + beta ln(x)`` is fitted by OLS over the last
    ``window_bars`` pairs (the current one included) and
    ``z = residual / residual standard error`` of the current pair.

    - Spread position: the sign of the base leg's exposure (+1: long base,
      short hedge, entered on z < -entry_z; -1: the mirror, on z > entry_z).
    - Stop: |z| >= stop_z with a position -> both legs flat; no new entry
      until |z| has come back to exit_z or below (legs still open meanwhile
      are closed again).
    - Exit: long spread once z >= -exit_z, short spread once z <= exit_z.
    - Entry from flat, only while beta > 0 and |z| < stop_z: base leg ``base_size`` contracts,
      hedge leg the other way with notional = beta x base notional:
      ``beta * base_size * base_contract_value * y / (hedge_contract_value * x)``
      contracts, rounded to ``hedge_lot_size``; no entry if that rounds to 0.
    - Holding: a hedge leg that is missing or on the wrong side (its order was
      rejected, a restart) is restored with the entry's hedge size (or a fresh
      one); if no hedge size can be computed, the base leg is closed instead.
      A hedge leg left without a base leg is closed.

    Orders go base leg first: the host stops a batch at a rejection, so a
    rejected base entry never leaves a naked hedge.

    Raises:
        ConfigError: ``symbols`` does not name exactly two instruments.
    """

    Params = StatsArbParams

    def __init__(self, config: StrategyConfig) -> None:
        super().__init__(config)
        self.params: StatsArbParams
        if len(config.symbols) != 2 or config.symbols[0] == config.symbols[1]:
            raise ConfigError(
                f"strategy {config.id}: symbols: StatsArb needs two different instruments "
                f"(base, hedge), got {list(config.symbols)}"
            )
        self.base_inst, self.hedge_inst = config.symbols
        self._ols = RollingOLS(self.params.window_bars)
        self._latest: dict[str, Bar] = {}
        self._last_pair_ts: int | None = None
        self._stopped = False
        self._entry_hedge_size: Decimal | None = None
        self.last_z: float | None = None
        self.last_beta: float | None = None

    def hedge_size(self, beta: float, base_price: Decimal, hedge_price: Decimal) -> Decimal:
        """Hedge contracts whose notional is ``beta`` x the base leg's (0 if beta <= 0)."""
        p = self.params
        if not beta > 0:
            return Decimal(0)
        base_notional = p.base_size * p.base_contract_value * base_price
        raw = Decimal(repr(beta)) * base_notional / (p.hedge_contract_value * hedge_price)
        lots = (raw / p.hedge_lot_size).to_integral_value(rounding=ROUND_HALF_EVEN)
        return lots * p.hedge_lot_size

    def _pair(self, bar: Bar) -> tuple[Bar, Bar] | None:
        if self._last_pair_ts is not None and bar.ts_ms <= self._last_pair_ts:
            return None
        self._latest[bar.inst_id] = bar
        base, hedge = self._latest.get(self.base_inst), self._latest.get(self.hedge_inst)
        if base is None or hedge is None or base.ts_ms != hedge.ts_ms:
            return None
        self._last_pair_ts = bar.ts_ms
        return base, hedge

    def on_bar(self, bar: Bar, ctx: StrategyContext) -> list[OrderIntent]:
        if bar.inst_id not in (self.base_inst, self.hedge_inst) or bar.close <= 0:
            return []  # a non-positive price is a garbled feed, not a market
        pair = self._pair(bar)
        if pair is None:
            return []
        base_bar, hedge_bar = pair
        y, x = math.log(base_bar.close), math.log(hedge_bar.close)
        self._ols.update(x, y)
        if not self._ols.ready:
            return []
        beta = self._ols.beta
        resid, stderr = self._ols.residual(x, y), self._ols.residual_stdev
        assert beta is not None and resid is not None and stderr is not None
        z = resid / stderr if stderr > 0 else 0.0
        self.last_z, self.last_beta = z, beta

        p = self.params
        base_exp, hedge_exp = ctx.exposure(self.base_inst), ctx.exposure(self.hedge_inst)
        state = _sign(base_exp)

        def fresh_hedge() -> Decimal:
            return self.hedge_size(beta, base_bar.close, hedge_bar.close)

        base_target, hedge_target, reason = base_exp, hedge_exp, ""
        if p.stop_z is not None and abs(z) >= p.stop_z and (state != 0 or hedge_exp != 0):
            base_target, hedge_target, self._stopped = Decimal(0), Decimal(0), True
            reason = f"stop z={z:.2f}"
        elif self._stopped:
            if abs(z) <= p.exit_z:
                self._stopped = False
            if state != 0 or hedge_exp != 0:  # a stop close was not filled: close again
                base_target, hedge_target, reason = Decimal(0), Decimal(0), f"stopped z={z:.2f}"
        elif (state > 0 and z >= -p.exit_z) or (state < 0 and z <= p.exit_z):
            base_target, hedge_target, reason = Decimal(0), Decimal(0), f"exit z={z:.2f}"
        elif state == 0 and abs(z) >= p.entry_z and (p.stop_z is None or abs(z) < p.stop_z):
            side = 1 if z <= -p.entry_z else -1
            size = fresh_hedge()
            if size > 0:
                base_target, hedge_target = side * p.base_size, -side * size
                self._entry_hedge_size = size
                reason = f"entry z={z:.2f} beta={beta:.4f}"
            elif hedge_exp != 0:
                hedge_target, reason = Decimal(0), "close hedge leg without a base leg"
        elif state == 0 and hedge_exp != 0:
            hedge_target, reason = Decimal(0), "close hedge leg without a base leg"
        elif state != 0 and _sign(hedge_exp) != -state:
            size = self._entry_hedge_size or fresh_hedge()
            if size > 0:
                hedge_target, reason = -state * size, f"restore hedge leg z={z:.2f}"
            else:
                base_target, hedge_target = Decimal(0), Decimal(0)
                reason = "close base leg: no hedge size (beta <= 0)"

        out = []
        if base_target != base_exp:
            out += orders_toward_target(self, self.base_inst, base_target, ctx, reason=f"{reason} base")
        if hedge_target != hedge_exp:
            out += orders_toward_target(self, self.hedge_inst, hedge_target, ctx,
                                        reason=f"{reason} hedge")
        return out
