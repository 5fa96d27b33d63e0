import math

import numpy as np
import pytest

from tradetree.ml.errors import InsufficientHistory, MLError, ModelNotApproved
from tradetree.ml.features import build_features
from tradetree.ml.forecaster import ModelVolForecaster, RealizedVolForecaster, VolatilityForecaster, annualized_vol
from tradetree.ml.pipeline import fit_final_model
from tradetree.ml.registry import ModelRegistry

from .conftest import small_config


def test_realized_vol_forecaster(regime_market):
    candles = regime_market.candles
    f = RealizedVolForecaster(16)
    assert isinstance(f, VolatilityForecaster)
    r = np.diff(np.log(candles["close"].to_numpy()[-17:]))
    assert f.forecast(candles) == pytest.approx(math.sqrt(np.mean(r * r)), rel=1e-12)
    with pytest.raises(InsufficientHistory):
        f.forecast(candles.iloc[:16])


def test_model_forecast_is_exp_of_the_evaluation_prediction(trained_vol, regime_market):
    registry, outcome = trained_vol
    forecaster = ModelVolForecaster.from_registry(registry.root, outcome.record.name)
    assert isinstance(forecaster, VolatilityForecaster)
    assert forecaster.horizon_bars == 4 and forecaster.min_history_bars == small_config().features.warmup_bars
    candles = regime_market.candles
    full = build_features(candles, outcome.record.feature_spec)
    bar = 5500  # after the training data: a genuine forecast
    expected = math.exp(outcome.model.predict(full.iloc[[bar]])[0])
    assert forecaster.forecast(candles.iloc[: bar + 1]) == expected
    # per-bar vol of the right size: within the generator's range
    assert 0.001 < expected < 0.02


def test_forecaster_refuses_failed_and_direction_models(tmp_path, trained_vol, regime_market):
    _, outcome = trained_vol
    registry = ModelRegistry(tmp_path)
    canary = outcome.record.meta["canary"]["features"]
    import pandas as pd

    common = dict(data_sha256="0", interval_ms=900_000, train_span_ms=(0, 1), n_train_rows=1,
                  canary_features=pd.DataFrame([canary]))
    registry.register("failed", outcome.model, config=small_config(), metrics={"gate": {"passed": False}}, **common)
    with pytest.raises(ModelNotApproved):
        ModelVolForecaster.from_registry(tmp_path, "failed")
    config = small_config(task="direction")
    from tradetree.ml.dataset import build_dataset

    direction = fit_final_model(build_dataset(regime_market.candles.iloc[:1500], config), config)
    registry.register("dir", direction, config=config, metrics={"gate": {"passed": True}}, **common)
    with pytest.raises(MLError, match="direction"):
        ModelVolForecaster.from_registry(tmp_path, "dir")


def test_annualized_vol():
    assert annualized_vol(0.01, 86_400_000) == pytest.approx(0.01 * math.sqrt(365))


def _bar(row, ts_ms=None):
    from decimal import Decimal

    from tradetree.core.types import Bar

    return Bar(venue="okx", inst_id="BTC-USDT-SWAP", ts_ms=int(row["timestamp_ms"] if ts_ms is None else ts_ms),
               interval_ms=900_000, **{k: Decimal(repr(float(row[k]))) for k in ("open", "high", "low", "close", "volume")})


def test_candle_window_rebuilds_the_frame_from_bars(regime_market):
    from tradetree.ml.errors import DataError
    from tradetree.ml.forecaster import CandleWindow

    candles = regime_market.candles.iloc[:50]
    window = CandleWindow(max_bars=30)
    for _, row in candles.iterrows():
        window.append(_bar(row))
    import pandas as pd

    pd.testing.assert_frame_equal(window.frame(), candles.iloc[-30:].reset_index(drop=True))
    window.append(_bar(candles.iloc[-1]))  # the same bar again (a correction) replaces it
    assert len(window) == 30
    with pytest.raises(DataError, match="older"):
        window.append(_bar(candles.iloc[10]))


def test_build_forecaster_from_params(trained_vol, regime_market):
    from pydantic import ValidationError

    from tradetree.ml.forecaster import build_forecaster

    registry, outcome = trained_vol
    realized = build_forecaster({"kind": "realized", "window_bars": 16})
    assert isinstance(realized, RealizedVolForecaster)
    model = build_forecaster({"kind": "model", "registry_root": str(registry.root), "name": outcome.record.name})
    assert model.forecast(regime_market.candles) == ModelVolForecaster.from_registry(
        registry.root, outcome.record.name).forecast(regime_market.candles)
    with pytest.raises(ValidationError, match="needs"):
        build_forecaster({"kind": "model", "name": "x"})


def test_bar_window_forecaster_fails_closed_to_nan(regime_market):
    from tradetree.ml.forecaster import BarWindowForecaster

    forecaster = BarWindowForecaster(RealizedVolForecaster(16))
    candles = regime_market.candles.iloc[:40]
    assert math.isnan(forecaster.forecast([1.0]))  # nothing observed yet
    for i, (_, row) in enumerate(candles.iterrows()):
        forecaster.observe(_bar(row))
        value = forecaster.forecast(candles["close"].iloc[: i + 1].tolist())
        assert math.isnan(value) if i < 16 else value == RealizedVolForecaster(16).forecast(candles.iloc[: i + 1])
    # the strategy's closes and the observed bars disagree: no forecast
    assert math.isnan(forecaster.forecast([123.0])) and "last observed bar" in forecaster.last_error


def test_a_served_forecaster_uses_the_connector_its_host_registered(regime_market):
    # ml never imports the actor layer: the strategy host registers how a served model is reached.
    from tradetree.ml.errors import MLError
    from tradetree.ml.forecaster import ServedVolForecaster, build_forecaster, set_server_connector

    served = build_forecaster({"kind": "server", "name": "vol", "actor_name": "ModelServer[vol]"})
    assert isinstance(served, ServedVolForecaster)
    set_server_connector(None)
    with pytest.raises(MLError, match="no server connector registered"):
        served.forecast(regime_market.candles)
    asked = []

    def connect(actor_name, ray_namespace, timeout_secs):
        asked.append(actor_name)
        raise MLError("server down")

    set_server_connector(connect)
    try:
        with pytest.raises(MLError, match="server down"):
            served.forecast(regime_market.candles)
        assert asked == ["ModelServer[vol]"]
    finally:
        set_server_connector(None)
