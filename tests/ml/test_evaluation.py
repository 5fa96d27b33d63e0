import json

import numpy as np
import pytest

from tradetree.ml.config import GateSpec, WalkForwardSpec
from tradetree.ml.dataset import build_dataset
from tradetree.ml.errors import DataError
from tradetree.ml.evaluation import MODEL_COLUMN, apply_gate, walk_forward_evaluate
from tradetree.ml.features import FeatureInputs

from .conftest import SMALL_FEATURES, small_config


@pytest.fixture(scope="module")
def vol_result(regime_market):
    config = small_config()
    return config, walk_forward_evaluate(build_dataset(regime_market.candles, config), config)


def test_catboost_beats_ewma_and_persistence_out_of_sample(vol_result):
    _, result = vol_result
    r2 = {name: m["r2"] for name, m in result.metrics.items()}
    assert set(r2) == {MODEL_COLUMN, "persistence", "ewma", "har_rv"}
    assert r2[MODEL_COLUMN] > r2["ewma"] + 0.03
    assert r2[MODEL_COLUMN] > r2["persistence"] + 0.03
    assert r2["ewma"] > 0.2  # the baselines are real competitors, not strawmen
    # the model also calls the direction of the volatility change better than EWMA
    vda = {name: m["vol_direction_accuracy"] for name, m in result.metrics.items()}
    assert vda[MODEL_COLUMN] > vda["ewma"] > 0.5
    # and wins on every fold, not only pooled
    per_fold = {(r["fold"], r["model"]): r["r2"] for r in result.fold_metrics}
    for fold in range(3):
        assert per_fold[(fold, MODEL_COLUMN)] > per_fold[(fold, "ewma")]
    assert result.gate.passed


def test_predictions_are_out_of_sample_rows_only(vol_result, regime_market):
    config, result = vol_result
    preds = result.predictions
    assert preds["bar"].min() >= config.walk_forward.min_train_bars
    assert preds["bar"].is_monotonic_increasing and preds["bar"].is_unique
    assert set(preds["fold"]) == {0, 1, 2}
    assert np.isfinite(preds[[MODEL_COLUMN, "persistence", "ewma", "har_rv"]].to_numpy()).all()


def test_result_serialises_to_json(vol_result):
    _, result = vol_result
    payload = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert payload["gate"]["passed"] is True
    assert payload["metrics"][MODEL_COLUMN]["r2"] == result.metrics[MODEL_COLUMN]["r2"]
    assert len(payload["fold_metrics"]) == 3 * 4


def test_order_book_features_lift_direction_mcc(book_market):
    base = small_config(task="direction", horizon_bars=1, name="dir")
    with_book = base.model_copy(update={"features": SMALL_FEATURES.model_copy(update={"orderbook": True})})
    inputs = FeatureInputs(book_market.candles, orderbook=book_market.orderbook)
    plain = walk_forward_evaluate(build_dataset(inputs, base), base)
    booked = walk_forward_evaluate(build_dataset(inputs, with_book), with_book)
    assert abs(plain.metrics[MODEL_COLUMN]["mcc"]) < 0.05  # candles alone: a coin flip
    assert booked.metrics[MODEL_COLUMN]["mcc"] > plain.metrics[MODEL_COLUMN]["mcc"] + 0.05
    assert booked.gate.passed and not plain.gate.passed
    # precision rises with the threshold while coverage falls
    table = booked.precision[MODEL_COLUMN]
    assert table[-1]["long_coverage"] < table[0]["long_coverage"]
    assert table[3]["long_precision"] > table[0]["long_precision"]


def test_gate_reasons():
    config = small_config(gate=GateSpec(min_r2=0.1))
    metrics = {MODEL_COLUMN: {"r2": 0.05}, "ewma": {"r2": 0.07}, "persistence": {"r2": float("nan")}}
    gate = apply_gate("volatility", metrics, config)
    assert not gate.passed
    assert any("floor" in r for r in gate.reasons) and any("ewma" in r for r in gate.reasons)
    # a NaN baseline score cannot be "beaten": fail closed
    assert any("persistence" in r for r in gate.reasons)


def test_too_short_history_is_refused(regime_market):
    config = small_config(walk_forward=WalkForwardSpec(n_splits=3, min_train_bars=2500))
    with pytest.raises(DataError, match="walk-forward"):
        walk_forward_evaluate(build_dataset(regime_market.candles.iloc[:2550], config), config)
