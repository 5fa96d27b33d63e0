import json

import numpy as np
import pytest

from tradetree.core.clock import ManualClock
from tradetree.ml.dataset import build_dataset
from tradetree.ml.errors import ModelIntegrityError, ModelNotApproved, ModelNotFound
from tradetree.ml.features import build_features
from tradetree.ml.registry import MODEL_FILE, ModelRegistry

from .conftest import small_config


def test_round_trip_preserves_model_features_metrics_and_meta(trained_vol, regime_market):
    registry, outcome = trained_vol
    record = outcome.record
    assert record.version == "v1" and registry.versions(record.name) == ["v1"]
    files = {p.name for p in record.path.iterdir()}
    assert files == {MODEL_FILE, "features.json", "metrics.json", "meta.json"}
    loaded = registry.load(record.name)
    assert loaded.model.feature_names == outcome.model.feature_names == record.features
    assert record.config == small_config()
    assert record.meta["data_sha256"] == build_dataset(regime_market.candles.iloc[:5000], small_config()).data_sha256
    assert record.meta["horizon_bars"] == 4 and record.interval_ms == 900_000
    assert record.metrics["metrics"]["catboost"]["r2"] == outcome.evaluation.metrics["catboost"]["r2"]
    assert record.approved
    # the loaded model predicts exactly what the in-memory one did
    features = build_features(regime_market.candles, record.feature_spec).iloc[200:]
    np.testing.assert_array_equal(loaded.predict_frame(features), outcome.model.predict(features))


def test_versions_increment_and_names_are_listed(tmp_path, trained_vol):
    _, outcome = trained_vol
    registry = ModelRegistry(tmp_path, clock=ManualClock(start_ms=1_700_000_000_000))
    kwargs = dict(config=small_config(), metrics={"gate": {"passed": False, "reasons": ["r2 too low"]}},
                  data_sha256="ab" * 32, interval_ms=900_000, train_span_ms=(0, 1), n_train_rows=10,
                  canary_features=_canary(outcome))
    first = registry.register("m", outcome.model, **kwargs)
    second = registry.register("m", outcome.model, **kwargs)
    assert (first.version, second.version) == ("v1", "v2")
    assert second.meta["created_at"] == "2023-11-14T22:13:20+00:00"
    assert [(r.name, r.version) for r in registry.records()] == [("m", "v1"), ("m", "v2")]
    assert registry.record("m").version == "v2"
    assert not [p for p in (tmp_path / "m").iterdir() if p.name.startswith(".tmp")]
    with pytest.raises(ModelNotApproved, match="r2 too low"):
        registry.load("m", require_approved=True)
    assert registry.load("m", "v1").record.version == "v1"


def _canary(outcome):
    import pandas as pd

    row = outcome.record.meta["canary"]["features"]
    return pd.DataFrame([row])


def test_missing_and_tampered_models_are_refused(tmp_path, trained_vol):
    registry, outcome = trained_vol
    with pytest.raises(ModelNotFound):
        registry.load("no_such_model")
    with pytest.raises(ModelNotFound, match="v9"):
        registry.load(outcome.record.name, "v9")
    copy = ModelRegistry(tmp_path)
    record = copy.register("t", outcome.model, config=small_config(), metrics={"gate": {"passed": True}},
                           data_sha256="00", interval_ms=900_000, train_span_ms=(0, 1), n_train_rows=1,
                           canary_features=_canary(outcome))
    model_file = record.path / MODEL_FILE
    model_file.write_bytes(model_file.read_bytes() + b"\0")
    with pytest.raises(ModelIntegrityError, match="sha256"):
        copy.load("t")


def test_meta_is_plain_json_with_the_canary(trained_vol):
    _, outcome = trained_vol
    meta = json.loads((outcome.record.path / "meta.json").read_text())
    assert set(meta["canary"]["features"]) == set(outcome.record.features)
    canary = _canary(outcome)[outcome.record.features]
    assert outcome.model.predict(canary)[0] == meta["canary"]["prediction"]
