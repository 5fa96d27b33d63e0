"""Configuration of the venue simulator (the built-in OKX-compatible paper venue)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_SECRET",
    "DEFAULT_PASSPHRASE",
    "FeeSchedule",
    "SimInstrument",
    "SimulatorConfig",
    "default_instruments",
]

# Documented defaults: the simulator is a local paper venue, these are not secrets.
DEFAULT_API_KEY = "tradetree-sim-key"
DEFAULT_SECRET = "tradetree-sim-secret"
DEFAULT_PASSPHRASE = "tradetree-sim-pass"

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class FeeSchedule(BaseModel):
    """Fee rates as fractions of notional (0.001 = 0.1%)."""

    model_config = _FROZEN

    spot_maker: Decimal = Decimal("0.0008")
    spot_taker: Decimal = Decimal("0.0010")
    swap_maker: Decimal = Decimal("0.0002")
    swap_taker: Decimal = Decimal("0.0005")


class SimInstrument(BaseModel):
    """One instrument the simulator lists, with its generated-price parameters."""

    model_config = _FROZEN

    inst_id: str  # "BTC-USDT" or "BTC-USDT-SWAP"
    initial_price: Decimal
    tick_size: Decimal
    lot_size: Decimal
    min_size: Decimal
    contract_value: Decimal = Decimal(1)  # swaps: base units per contract
    annual_volatility: float = 0.6


def default_instruments() -> tuple[SimInstrument, ...]:
    return (
        SimInstrument(
            inst_id="BTC-USDT", initial_price=Decimal("60000"), tick_size=Decimal("0.1"),
            lot_size=Decimal("0.00001"), min_size=Decimal("0.00001"),
        ),
        SimInstrument(
            inst_id="ETH-USDT", initial_price=Decimal("3000"), tick_size=Decimal("0.01"),
            lot_size=Decimal("0.0001"), min_size=Decimal("0.0001"), annual_volatility=0.7,
        ),
        SimInstrument(
            inst_id="BTC-USDT-SWAP", initial_price=Decimal("60000"), tick_size=Decimal("0.1"),
            lot_size=Decimal("0.01"), min_size=Decimal("0.01"), contract_value=Decimal("0.01"),
        ),
        SimInstrument(
            inst_id="ETH-USDT-SWAP", initial_price=Decimal("3000"), tick_size=Decimal("0.01"),
            lot_size=Decimal("0.01"), min_size=Decimal("0.01"), contract_value=Decimal("0.1"),
            annual_volatility=0.7,
        ),
    )


class SimulatorConfig(BaseModel):
    """Everything the simulator needs; defaults give a working paper venue.

    ``port=0`` binds a free port (read it back from the running server).
    ``time_scale`` multiplies how fast generated market time passes relative to
    the wall clock, so short paper runs still see price movement.
    """

    model_config = _FROZEN

    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)
    seed: int = 1
    api_key: str = DEFAULT_API_KEY
    secret_key: SecretStr = SecretStr(DEFAULT_SECRET)
    passphrase: SecretStr = SecretStr(DEFAULT_PASSPHRASE)
    data_path: Path | None = None  # candle CSV to replay instead of generated prices
    instruments: tuple[SimInstrument, ...] = Field(default_factory=default_instruments)
    initial_balances: dict[str, Decimal] = Field(
        default_factory=lambda: {"USDT": Decimal("1000000"), "BTC": Decimal("10"), "ETH": Decimal("100")}
    )
    fees: FeeSchedule = FeeSchedule()
    tick_interval_ms: int = Field(default=250, gt=0)
    time_scale: float = Field(default=1.0, gt=0)
    # Every market step advances venue time by exactly tick_interval_ms * time_scale, however late the
    # step runs: a replay then steps through its points on a fixed grid (the paper half of backtest
    # parity). Off by default: venue time follows the scaled wall clock.
    stepped_clock: bool = False
    # A replay's first candle opens on a multiple of this (ms, UTC epoch), so paper bars, which are
    # epoch-aligned, hold the same candles as the file's bars. None: the candle interval of the data.
    replay_align_ms: int | None = Field(default=None, gt=0)
    # A replay on a stepped clock stands at its first point until released (``SimulatorServer.release_replay``
    # or ``POST /admin/replay/release``): a run compared against a backtest then meets every candle of the
    # file with the tree already up, however long the tree took to start. While held, venue time stands
    # still and the first point's tickers are re-pushed every step, so feeds stay fresh.
    hold_replay: bool = False
    latency_ms: int = Field(default=0, ge=0)
    book_levels: int = Field(default=20, gt=0)
    leverage: Decimal = Decimal("10")
    # Minutes of generated 1m history before start (ignored when replaying a file).
    warmup_bars: int = Field(default=120, ge=0, le=2880)
    # Shortest non-zero cancel-all-after timeout accepted (OKX: 10 s); lower it in tests.
    cancel_all_after_min_secs: int = Field(default=10, ge=1, le=120)

    @model_validator(mode="after")
    def _hold_needs_a_stepped_replay(self) -> SimulatorConfig:
        if self.hold_replay and (self.data_path is None or not self.stepped_clock):
            raise ValueError("hold_replay holds a replay's stepped clock: it needs data_path and stepped_clock: true")
        return self
