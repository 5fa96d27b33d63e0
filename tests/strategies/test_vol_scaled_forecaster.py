"""VolScaledDirectional names its volatility forecaster in its params (``vol_forecaster``).

A tiny model (9 bars of warmup) is trained and registered on generated candles in well under a second.
"""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from tradetree.core.config import StrategyConfig
from tradetree.core.types import Bar
from tradetree.ml.config import CatBoostParams, FeatureSpec, ModelConfig, WalkForwardSpec
from tradetree.ml.errors import ModelServerStateError
from tradetree.ml.features import FeatureInputs
from tradetree.ml.forecaster import BarWindowForecaster, ModelVolForecaster, ServedVolForecaster
from tradetree.ml.pipeline import train_and_register
from tradetree.ml.registry import ModelRegistry
from tradetree.ml.synthetic import generate_regime_candles
from tradetree.strategies.base import StrategyContext
from tradetree.strategies.vol_scaled import RealizedVolForecaster, VolScaledDirectional

INST = "BTC-USDT-SWAP"
TINY_FEATURES = FeatureSpec(return_windows_bars=(1, 4), vol_windows_bars=(4, 8), range_windows_bars=(1, 4),
                            volume_window_bars=8)


def tiny_model_config(name: str = "vol_tiny") -> ModelConfig:
    """A volatility model with 9 bars of warmup that trains (and passes its gate) in well under a second."""
    return ModelConfig(name=name, task="volatility", horizon_bars=4, features=TINY_FEATURES,
                       catboost=CatBoostParams(iterations=60, depth=3, learning_rate=0.1, thread_count=1,
                                               random_seed=7),
                       walk_forward=WalkForwardSpec(n_splits=2, min_train_bars=800, embargo_bars=4))


@pytest.fixture(scope="module")
def market():
    return generate_regime_candles(1700, seed=5)


@pytest.fixture(scope="module")
def registry(market, tmp_path_factory):
    registry = ModelRegistry(tmp_path_factory.mktemp("registry"))
    outcome = train_and_register(FeatureInputs(market.candles.iloc[:1500]), tiny_model_config(), registry)
    assert outcome.record.approved
    return registry


def _config(**params) -> StrategyConfig:
    base = {"ema_bars": 5, "slope_bars": 2, "vol_window_bars": 5, "history_bars": 40,
            "target_vol_per_bar": 0.005, "size_at_target_vol": "1", "max_size": "3", "lot_size": "0.01"}
    return StrategyConfig.model_validate({"class": "VolScaledDirectional", "version": "v2", "venue": "okx",
                                          "symbols": [INST], "params": base | params})


def _bars(market, start: int, stop: int):
    for i in range(start, stop):
        row = market.candles.iloc[i]
        yield i, Bar(venue="okx", inst_id=INST, ts_ms=int(row["timestamp_ms"]), interval_ms=900_000,
                     **{k: Decimal(repr(float(row[k]))) for k in ("open", "high", "low", "close", "volume")})


def _run(strategy, bars):
    """Feed bars, filling every order at once; returns {bar index: forecast} and the orders."""
    position, forecasts, orders = Decimal(0), {}, []
    for i, bar in bars:
        intents = strategy.on_bar(bar, StrategyContext(now_ms=bar.ts_ms, positions={INST: position}))
        for intent in intents:
            position += intent.size * intent.side.sign
        orders += intents
        forecasts[i] = strategy.last_forecast
    return forecasts, orders


def test_default_and_explicit_realized_are_todays_forecaster(market):
    default = VolScaledDirectional(_config())
    explicit = VolScaledDirectional(_config(vol_forecaster={"kind": "realized"}))
    assert type(default.forecaster) is type(explicit.forecaster) is RealizedVolForecaster
    assert default.forecaster.window_bars == explicit.forecaster.window_bars == 5
    a, b = _run(default, _bars(market, 0, 120)), _run(explicit, _bars(market, 0, 120))
    assert a == b and a[1]
    wider = VolScaledDirectional(_config(vol_forecaster={"kind": "realized", "window_bars": 20}))
    assert wider.forecaster.window_bars == 20


def test_kind_model_trades_on_the_registered_model(market, registry):
    """Built from params alone: the strategy feeds the bar window itself (no observe() by the caller)."""
    strategy = VolScaledDirectional(_config(vol_forecaster={"kind": "model", "registry_root": str(registry.root),
                                                            "name": "vol_tiny"}))
    assert isinstance(strategy.forecaster, BarWindowForecaster)
    forecasts, orders = _run(strategy, _bars(market, 1500, 1700))
    reference = ModelVolForecaster.from_registry(registry.root, "vol_tiny")
    checked = 0
    for i, value in forecasts.items():
        if value is not None and i >= 1500 + reference.min_history_bars:
            assert value == reference.forecast(market.candles.iloc[1500: i + 1])  # exact: same features
            checked += 1
    assert checked > 150 and orders and strategy.forecaster.failures == 0
    assert {"forecast=" in o.reason for o in orders} == {True}


class _FakeServer:
    """A model server in-process: describe/predict as ModelServerClient, switchable down."""

    def __init__(self, registry: ModelRegistry) -> None:
        from tradetree.actors.model_server import ModelServer

        self.impl = ModelServer(registry.root, "vol_tiny")
        self.impl.start()

    def describe(self):
        return self.impl.describe()

    def predict(self, batch):
        return self.impl.predict(batch)


def test_a_served_forecaster_fails_closed_and_reconnects(market, registry):
    server = _FakeServer(registry)
    up = {"value": False}
    connects = []

    def connect(actor_name, namespace, timeout_secs):
        connects.append((actor_name, namespace, timeout_secs))
        if not up["value"]:
            raise ValueError(f"Failed to look up actor with name '{actor_name}'")  # what ray.get_actor raises
        return server

    served = ServedVolForecaster("ModelServer[vol_tiny]", ray_namespace="ns", timeout_secs=1.0, connect=connect)
    # history_bars below the model's 9-bar warmup: the window grows once the server says what it needs
    strategy = VolScaledDirectional(_config(history_bars=6), forecaster=BarWindowForecaster(served, max_bars=6))
    forecasts, orders = _run(strategy, _bars(market, 1500, 1530))
    assert orders == [] and all(v is None or math.isnan(v) for v in forecasts.values())
    assert strategy.forecaster.failures > 0 and "Failed to look up actor" in strategy.forecaster.last_error
    assert connects[0] == ("ModelServer[vol_tiny]", "ns", 1.0)

    up["value"] = True
    forecasts, orders = _run(strategy, _bars(market, 1530, 1600))
    assert served.min_history_bars == 9 and strategy.forecaster.window.max_bars == 9
    assert orders and math.isfinite(forecasts[1599]) and served.connects == 1

    server.impl.stop()  # the server stops serving: no forecast, no trade, then a fresh lookup
    before = len(connects)
    forecasts, orders = _run(strategy, _bars(market, 1600, 1603))
    assert orders == [] and all(math.isnan(v) for v in forecasts.values())
    assert ModelServerStateError.__name__ in strategy.forecaster.last_error and len(connects) > before
    server.impl.start()
    forecasts, _ = _run(strategy, _bars(market, 1603, 1605))
    assert math.isfinite(forecasts[1604]) and served.connects == 2


def test_a_served_model_nobody_serves_means_no_trade(market):
    """Resolved as the tree resolves it, but no such actor (or no Ray at all): NaN, never an exception."""
    strategy = VolScaledDirectional(_config(vol_forecaster={
        "kind": "server", "name": "vol_tiny", "actor_name": "ModelServer[nobody]",
        "ray_namespace": "tt-nowhere", "timeout_secs": 1}))
    forecasts, orders = _run(strategy, _bars(market, 1500, 1520))
    assert orders == [] and strategy.forecaster.failures > 0
    assert all(v is None or math.isnan(v) for v in forecasts.values())
