"""Shared ML fixtures: seeded regime data and small, single-threaded model configs."""

from __future__ import annotations

import pytest

from tradetree.ml.config import CatBoostParams, FeatureSpec, ModelConfig, WalkForwardSpec
from tradetree.ml.features import FeatureInputs
from tradetree.ml.synthetic import SyntheticMarket, generate_regime_candles

SMALL_FEATURES = FeatureSpec(
    return_windows_bars=(1, 4, 16),
    vol_windows_bars=(4, 16, 64),
    range_windows_bars=(1, 16),
    volume_window_bars=32,
)
# thread_count=1 and few iterations: two cores are shared by the whole test suite.
SMALL_CATBOOST = CatBoostParams(iterations=150, depth=4, learning_rate=0.1, thread_count=1, random_seed=7)


def small_config(**overrides) -> ModelConfig:
    base = dict(
        name="vol_test",
        task="volatility",
        horizon_bars=4,
        features=SMALL_FEATURES,
        catboost=SMALL_CATBOOST,
        walk_forward=WalkForwardSpec(n_splits=3, min_train_bars=2500, embargo_bars=4),
    )
    return ModelConfig(**(base | overrides))


@pytest.fixture(scope="session")
def regime_market() -> SyntheticMarket:
    """~62 days of 15-minute bars: two volatility regimes times an intraday cycle."""
    return generate_regime_candles(6000, seed=1)


@pytest.fixture(scope="session")
def book_market() -> SyntheticMarket:
    """Regime candles plus order book snapshots whose imbalance tilts the next bar."""
    return generate_regime_candles(6000, seed=2, with_orderbook=True, orderbook_signal=0.5)


INTERVAL_MS = 900_000
CROSS_SPEC = SMALL_FEATURES.model_copy(update={"cross_assets": ("ETH",), "orderbook": True})


@pytest.fixture(scope="session")
def feature_inputs() -> FeatureInputs:
    """BTC-like candles with an order book, and an ETH-like cross asset missing bars 700-701."""
    btc = generate_regime_candles(1500, seed=11, with_orderbook=True)
    eth = generate_regime_candles(1500, seed=12)
    # ETH misses two bars: its features are NaN there, never shifted onto other bars.
    eth_candles = eth.candles.drop(index=[700, 701]).reset_index(drop=True)
    return FeatureInputs(candles=btc.candles, cross={"ETH": eth_candles}, orderbook=btc.orderbook)


@pytest.fixture(scope="session")
def trained_vol(regime_market, tmp_path_factory):
    """A volatility model trained on the first 5000 bars and registered in a temporary registry."""
    from tradetree.ml.pipeline import train_and_register
    from tradetree.ml.registry import ModelRegistry

    registry = ModelRegistry(tmp_path_factory.mktemp("registry"))
    outcome = train_and_register(FeatureInputs(regime_market.candles.iloc[:5000]), small_config(), registry)
    return registry, outcome
