"""Backtest configuration: fill rule, latency, fees, the book model, balances, risk limits.

Frozen, unknown fields rejected, units in field names. ``load_backtest_config``
reads the same fields from YAML and turns any problem into a ``ConfigError``
naming the file and the field.
"""

from __future__ import annotations

import enum
from decimal import Decimal
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tradetree.core import ConfigError, format_validation_error
from tradetree.risk import RiskConfig
from tradetree.sim.backtest.book_model import BookModel
from tradetree.sim.config import FeeSchedule, SimInstrument, default_instruments

__all__ = ["FillRule", "BacktestConfig", "load_backtest_config"]


class FillRule(str, enum.Enum):
    """When a decision is taken and which market its orders meet.

    ``NEXT_TICK`` (default, what paper trading does): a bar is final when the
    first market point of the next bar arrives; the strategy decides then and
    its orders reach the matching engine ``latency_ms`` later, matched at the
    first market point at or after that time (with zero latency: at once,
    against the book around the next bar's open).

    ``SIGNAL_CLOSE`` (idealised, for comparisons with textbook backtesters):
    the strategy decides on the bar's close point and its orders meet the
    book around that close (plus ``latency_ms``, if any). With
    :meth:`BookModel.frictionless` a market order fills at exactly the signal
    bar's close. It trades on a price the strategy could only have seen at
    that instant, so results are optimistic.
    """

    NEXT_TICK = "next_tick"
    SIGNAL_CLOSE = "signal_close"


def _default_balances() -> dict[str, Decimal]:
    # The paper venue's defaults, so a backtest and a paper run start alike.
    return {"USDT": Decimal("1000000"), "BTC": Decimal("10"), "ETH": Decimal("100")}


class BacktestConfig(BaseModel):
    """Everything about a backtest except the strategy and the data.

    Attributes:
        seed: seeds the book model (the only randomness); same seed and data
            give byte-identical trades.
        latency_ms: order latency inside the matching engine.
        fill_rule: see :class:`FillRule`.
        fees: maker/taker rates, as the simulator charges them.
        book: the book model (spread, depth, levels): the slippage model.
        initial_balances: the venue account, as in the paper venue.
        leverage: swap margin leverage.
        instruments: instrument definitions (tick, lot, contract value); an
            instrument not listed here comes from the simulator's defaults.
        bar_interval_ms: bar length the strategy sees; ``None`` = the candle
            length. Must be a multiple of the candle length.
        capital_quote: capital the equity curve starts from, in quote
            currency; ``None`` = the initial balance of the first symbol's
            quote currency.
        risk: limits for the pre-trade checks (``risk.pre_trade.check``).
        progress_every_bars: how often the progress callback is called.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 1
    latency_ms: int = Field(default=0, ge=0)
    fill_rule: FillRule = FillRule.NEXT_TICK
    fees: FeeSchedule = FeeSchedule()
    book: BookModel = BookModel()
    initial_balances: dict[str, Decimal] = Field(default_factory=_default_balances)
    leverage: Decimal = Field(default=Decimal("10"), gt=0)
    instruments: tuple[SimInstrument, ...] = ()
    bar_interval_ms: int | None = Field(default=None, gt=0)
    capital_quote: Decimal | None = Field(default=None, gt=0)
    risk: RiskConfig = RiskConfig()
    progress_every_bars: int = Field(default=4096, ge=1)

    def instrument(self, inst_id: str) -> SimInstrument:
        """The definition of ``inst_id``: from ``instruments``, else the simulator's defaults.

        Raises:
            ConfigError: the instrument is defined nowhere.
        """
        for inst in (*self.instruments, *default_instruments()):
            if inst.inst_id == inst_id:
                return inst
        known = sorted({i.inst_id for i in (*self.instruments, *default_instruments())})
        raise ConfigError(f"instrument {inst_id!r} is not defined; add it to instruments (known: {known})")


def load_backtest_config(path: str | Path, **overrides: object) -> BacktestConfig:
    """Read a backtest config from YAML (a mapping of the fields above), then apply ``overrides``.

    Raises:
        ConfigError: unreadable file, bad YAML, or a field that fails validation.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return BacktestConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source=str(path))) from None
