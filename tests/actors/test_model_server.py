import math

import pandas as pd
import pytest

from tests.ml.conftest import small_config
from tradetree.actors.model_server import ModelServer, ModelServerActor, ModelServerClient
from tradetree.core.clock import ManualClock
from tradetree.core.lifecycle import ComponentState
from tradetree.ml.dataset import build_dataset
from tradetree.ml.errors import FeatureUnavailable, InsufficientHistory, ModelNotApproved, ModelServerStateError
from tradetree.ml.features import FeatureInputs
from tradetree.ml.forecaster import ModelVolForecaster
from tradetree.ml.pipeline import train_and_register
from tradetree.ml.registry import MODEL_FILE, ModelRegistry
from tradetree.ml.synthetic import generate_regime_candles


@pytest.fixture(scope="module")
def market():
    return generate_regime_candles(6000, seed=21)


@pytest.fixture(scope="module")
def registered(market, tmp_path_factory):
    """Train on the first 5000 bars; the last 1000 are what serving will see."""
    registry = ModelRegistry(tmp_path_factory.mktemp("registry"))
    outcome = train_and_register(FeatureInputs(market.candles.iloc[:5000]), small_config(name="vol"), registry)
    assert outcome.record.approved
    return registry, outcome


@pytest.fixture(scope="module")
def evaluation_predictions(market, registered):
    """What the evaluation path predicts: features over the whole history, one batch."""
    registry, _ = registered
    dataset = build_dataset(market.candles, small_config(name="vol"))
    model = registry.load("vol")
    return pd.Series(model.predict_frame(dataset.X), index=dataset.bars)


def test_serving_equals_evaluation_for_the_same_bar(market, registered, evaluation_predictions):
    registry, _ = registered
    server = ModelServer(registry.root, "vol", clock=ManualClock())
    with pytest.raises(ModelServerStateError, match="start"):
        server.predict([market.candles])
    server.start()
    assert server.state is ComponentState.RUNNING
    bars = [5000, 5321, 5900]
    got = server.predict([market.candles.iloc[: b + 1] for b in bars])
    assert got == [evaluation_predictions[b] for b in bars]  # exact, not approximate
    # a feature row predicts the same as the candles it came from
    row = build_dataset(market.candles, small_config(name="vol")).X.iloc[-1].to_dict()
    assert server.predict([row]) == [evaluation_predictions.iloc[-1]]
    assert server.describe()["version"] == "v1" and server.stats()["predictions_served"] == 4
    server.stop()
    with pytest.raises(ModelServerStateError):
        server.predict([row])


def test_a_bad_item_fails_the_whole_batch(market, registered):
    registry, _ = registered
    server = ModelServer(registry.root, "vol")
    server.start()
    with pytest.raises(InsufficientHistory):
        server.predict([market.candles, market.candles.iloc[:10]])
    assert server.stats()["batches_failed"] == 1 and server.stats()["predictions_served"] == 0
    assert server.predict([]) == []
    row = build_dataset(market.candles, small_config(name="vol")).X.iloc[-1].to_dict()
    with pytest.raises(FeatureUnavailable, match="log_rv_cc_4"):
        server.predict([row | {"log_rv_cc_4": float("nan")}])


def test_health_probes_check_the_mechanism(tmp_path, registered):
    registry, outcome = registered
    local = ModelRegistry(tmp_path)
    canary = pd.DataFrame([outcome.record.meta["canary"]["features"]])
    common = dict(config=small_config(name="vol"), data_sha256="0", interval_ms=900_000,
                  train_span_ms=(0, 1), n_train_rows=1, canary_features=canary)
    record = local.register("vol", outcome.model, metrics={"gate": {"passed": True}}, **common)
    server = ModelServer(tmp_path, "vol", clock=ManualClock(start_ms=1_000))
    report = server.check_health()
    assert not report.healthy and [p.name for p in report.failing()] == ["serving"]
    server.start()
    report = server.check_health()
    assert report.healthy and report.ts_ms == 1_000
    assert {p.name for p in report.probes} == {"serving", "model_file_integrity", "canary_prediction"}
    (record.path / MODEL_FILE).write_bytes(b"tampered")
    assert [p.name for p in server.check_health().failing()] == ["model_file_integrity"]


def test_a_state_without_a_published_label_shows_its_value_and_never_raises(tmp_path):
    server = ModelServer(tmp_path, "vol")
    server.state = ComponentState.STARTING
    assert server.stats()["state"] == "starting"
    assert [(p.name, p.detail) for p in server.check_health().failing()] == [("serving", "starting")]
    with pytest.raises(ModelServerStateError, match="vol is starting"):
        server.predict([])


def test_failed_models_are_not_served_unless_asked(tmp_path, registered):
    _, outcome = registered
    local = ModelRegistry(tmp_path)
    local.register("weak", outcome.model, config=small_config(name="weak"), metrics={"gate": {"passed": False}},
                   data_sha256="0", interval_ms=900_000, train_span_ms=(0, 1), n_train_rows=1,
                   canary_features=pd.DataFrame([outcome.record.meta["canary"]["features"]]))
    with pytest.raises(ModelNotApproved):
        ModelServer(tmp_path, "weak").start()
    server = ModelServer(tmp_path, "weak", require_approved=False)
    server.start()
    assert server.describe()["approved"] is False


def test_ray_actor_serves_the_same_predictions(ray_session, market, registered, evaluation_predictions):
    ray = ray_session
    registry, _ = registered
    actor = ModelServerActor.options(name="model-server-test").remote(str(registry.root), "vol")
    try:
        ray.get(actor.start.remote(), timeout=60)
        assert ray.get(actor.check_health.remote(), timeout=30).healthy
        client = ModelServerClient("model-server-test")
        got = client.predict([market.candles.iloc[:5501]])
        assert got == [evaluation_predictions[5500]]
        forecaster = ModelVolForecaster.from_server(client)
        assert forecaster.forecast(market.candles.iloc[:5501]) == math.exp(evaluation_predictions[5500])
        ray.get(actor.stop.remote(), timeout=30)
        assert not ray.get(actor.check_health.remote(), timeout=30).healthy
    finally:
        ray.kill(actor)


def test_a_bar_driven_consumer_gets_the_evaluation_forecast(market, registered, evaluation_predictions):
    """What a strategy does: keep a window of closed bars, forecast after each one."""
    from decimal import Decimal

    from tradetree.core.types import Bar
    from tradetree.ml.forecaster import CandleWindow

    registry, _ = registered
    server = ModelServer(registry.root, "vol")
    server.start()
    forecaster = ModelVolForecaster.from_server(server)
    window = CandleWindow(max_bars=forecaster.min_history_bars)
    forecasts = {}
    for bar_index in range(5000 - forecaster.min_history_bars, 5100):
        row = market.candles.iloc[bar_index]
        window.append(Bar(venue="okx", inst_id="BTC-USDT-SWAP", ts_ms=int(row["timestamp_ms"]), interval_ms=900_000,
                          **{k: Decimal(repr(float(row[k]))) for k in ("open", "high", "low", "close", "volume")}))
        if len(window) >= forecaster.min_history_bars:
            forecasts[bar_index] = forecaster.forecast(window.frame())
    assert len(forecasts) == 101
    for bar_index, value in forecasts.items():
        assert value == math.exp(evaluation_predictions[bar_index])


def test_vol_scaled_directional_trades_on_the_served_model(market, registered, evaluation_predictions):
    """Trained, registered, served by ModelServer, used by the running VolScaledDirectional strategy."""
    from decimal import Decimal

    from tradetree.core.config import StrategyConfig
    from tradetree.core.types import Bar
    from tradetree.ml.forecaster import BarWindowForecaster
    from tradetree.strategies.base import StrategyContext
    from tradetree.strategies.vol_scaled import VolatilityForecaster as StrategyForecaster
    from tradetree.strategies.vol_scaled import VolScaledDirectional

    registry, _ = registered
    server = ModelServer(registry.root, "vol")
    server.start()
    forecaster = BarWindowForecaster(ModelVolForecaster.from_server(server))
    assert isinstance(forecaster, StrategyForecaster)
    config = StrategyConfig.model_validate({
        "class": "VolScaledDirectional", "version": "v1", "venue": "okx", "symbols": ["BTC-USDT-SWAP"],
        "params": {"ema_bars": 10, "slope_bars": 3, "vol_window_bars": 30, "history_bars": 100,
                   "target_vol_per_bar": 0.004, "size_at_target_vol": "1", "max_size": "5", "lot_size": "0.01"},
    })
    strategy = VolScaledDirectional(config, forecaster=forecaster)
    position = Decimal(0)
    forecasts, sizes = {}, set()
    for bar_index in range(5000 - 120, 5150):
        row = market.candles.iloc[bar_index]
        bar = Bar(venue="okx", inst_id="BTC-USDT-SWAP", ts_ms=int(row["timestamp_ms"]), interval_ms=900_000,
                  **{k: Decimal(repr(float(row[k]))) for k in ("open", "high", "low", "close", "volume")})
        forecaster.observe(bar)  # the bar reaches the forecaster before the strategy asks for a forecast
        intents = strategy.on_bar(bar, StrategyContext(now_ms=bar.ts_ms, positions={"BTC-USDT-SWAP": position}))
        for intent in intents:  # fill every order at once
            position += intent.size * intent.side.sign
            sizes.add(abs(position))
        if strategy.last_forecast is not None and bar_index >= 5000:
            forecasts[bar_index] = strategy.last_forecast
    assert forecaster.failures == 0
    assert len(forecasts) == 150
    for bar_index, value in forecasts.items():
        assert value == math.exp(evaluation_predictions[bar_index])
    assert server.stats()["predictions_served"] >= 150
    assert len(sizes) > 2  # positions are resized as the forecast moves

    server.stop()  # the server goes away: no forecast, no trade, no exception
    row = market.candles.iloc[5150]
    bar = Bar(venue="okx", inst_id="BTC-USDT-SWAP", ts_ms=int(row["timestamp_ms"]), interval_ms=900_000,
              **{k: Decimal(repr(float(row[k]))) for k in ("open", "high", "low", "close", "volume")})
    forecaster.observe(bar)
    assert strategy.on_bar(bar, StrategyContext(now_ms=bar.ts_ms, positions={"BTC-USDT-SWAP": position})) == []
    assert math.isnan(strategy.last_forecast) and "ModelServerStateError" in forecaster.last_error
