import numpy as np
import pytest

from tradetree.ml.dataset import build_dataset
from tradetree.ml.features import FeatureInputs, build_features
from tradetree.ml.leakage import find_lookahead_features, shuffled_target_r2

from .conftest import CROSS_SPEC, INTERVAL_MS, SMALL_FEATURES, small_config


def test_honest_features_pass(feature_inputs):
    report = find_lookahead_features(
        lambda i: build_features(i, CROSS_SPEC, interval_ms=INTERVAL_MS), feature_inputs, interval_ms=INTERVAL_MS, n_bars=6
    )
    assert report.ok, report
    assert len(report.checked_bars) == 6


def test_features_built_with_future_information_are_caught(feature_inputs):
    def leaky(i: FeatureInputs):
        frame = build_features(i, SMALL_FEATURES, interval_ms=INTERVAL_MS)
        close = i.candles["close"]
        frame["next_return"] = np.log(close.shift(-1) / close)  # the target itself
        frame["centred_mean"] = close.rolling(9, center=True).mean()  # half the window is future
        frame["sample_zscore"] = (close - close.mean()) / close.std()  # whole-sample statistics
        return frame

    report = find_lookahead_features(leaky, feature_inputs, interval_ms=INTERVAL_MS, n_bars=4)
    assert set(report.leaky) == {"next_return", "centred_mean", "sample_zscore"}
    assert report.max_abs_diff["next_return"] == float("inf")


def test_shuffled_target_drives_r2_to_about_zero(regime_market):
    config = small_config()
    dataset = build_dataset(regime_market.candles, config)
    r2 = shuffled_target_r2(dataset, config, seed=3)
    assert -0.08 < r2 < 0.02


def test_shuffled_target_needs_a_volatility_model(regime_market):
    config = small_config(task="direction")
    with pytest.raises(ValueError):
        shuffled_target_r2(build_dataset(regime_market.candles.iloc[:3000], config), config)


def test_training_refuses_leaky_features(regime_market, tmp_path, monkeypatch):
    from tradetree.ml import pipeline as ml_pipeline
    from tradetree.ml.errors import LeakageDetected
    from tradetree.ml.registry import ModelRegistry

    honest = ml_pipeline.build_features

    def with_future(inputs, spec, *, interval_ms=None):
        frame = honest(inputs, spec, interval_ms=interval_ms)
        frame["ret_1"] = frame["ret_1"].shift(-1)  # an off-by-one that reads the next bar
        return frame

    monkeypatch.setattr(ml_pipeline, "build_features", with_future)
    registry = ModelRegistry(tmp_path)
    with pytest.raises(LeakageDetected, match="ret_1"):
        ml_pipeline.train_and_register(FeatureInputs(regime_market.candles.iloc[:3000]), small_config(), registry)
    assert registry.names() == []
