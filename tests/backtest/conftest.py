"""Fixtures for backtest tests: small seeded candle series and strategy configs."""

from __future__ import annotations

import pytest

from tradetree.core.config import StrategyConfig
from tradetree.sim.backtest.data import synthetic_candles


def mean_reversion_config(**params) -> StrategyConfig:
    """MeanReversion on the BTC swap, tuned to trade often on a few hundred bars."""
    base = {"window_bars": 12, "entry_z": 1.2, "exit_z": 0.2, "stop_z": 3.5, "size": "1"}
    return StrategyConfig.model_validate({
        "class": "MeanReversion", "version": "v1", "venue": "okx", "symbols": ["BTC-USDT-SWAP"],
        "bar_interval_ms": 60_000, "params": {**base, **params},
    })


@pytest.fixture
def candles():
    """400 one-minute candles around 60 000."""
    return synthetic_candles(400, seed=11, start_price=60_000.0, annual_vol=0.8)


@pytest.fixture
def mr_config() -> StrategyConfig:
    return mean_reversion_config()
