import math

import numpy as np
import pandas as pd
import pytest

from tradetree.ml.config import FeatureSpec
from tradetree.ml.errors import DataError, FeatureUnavailable, InsufficientHistory
from tradetree.ml.features import FeatureInputs, build_features, feature_names, latest_feature_row
from tradetree.ml.synthetic import generate_regime_candles

from .conftest import CROSS_SPEC, INTERVAL_MS, SMALL_FEATURES


def test_columns_follow_feature_names(feature_inputs):
    frame = build_features(feature_inputs, CROSS_SPEC, interval_ms=INTERVAL_MS)
    assert list(frame.columns) == feature_names(CROSS_SPEC)
    assert len(frame) == len(feature_inputs.candles)
    warm = CROSS_SPEC.warmup_bars
    assert frame.iloc[: warm - 1].isna().any(axis=1).all()
    complete = frame.iloc[warm - 1 :].notna().all(axis=1)
    assert not complete.iloc[700 - warm + 1] and complete.sum() > len(frame) - warm - 80


def test_volatility_estimators_on_one_bar():
    c = pd.DataFrame(
        {"timestamp_ms": [0, 60_000], "open": [100.0, 100.0], "high": [100.0, 110.0],
         "low": [100.0, 95.0], "close": [100.0, 105.0], "volume": [1.0, 1.0]}
    )
    spec = FeatureSpec(return_windows_bars=(1,), vol_windows_bars=(1,), range_windows_bars=(1,),
                       volume_window_bars=2, time_of_day=False)
    row = build_features(c, spec).iloc[1]
    hl, co = math.log(110 / 95), math.log(105 / 100)
    assert row["ret_1"] == pytest.approx(co)
    assert row["log_rv_cc_1"] == pytest.approx(math.log(abs(co)))
    assert row["log_rv_pk_1"] == pytest.approx(0.5 * math.log(hl**2 / (4 * math.log(2))))
    assert row["log_rv_gk_1"] == pytest.approx(0.5 * math.log(0.5 * hl**2 - (2 * math.log(2) - 1) * co**2))
    assert row["range_1"] == pytest.approx(hl)


def test_time_features_use_utc_bar_open():
    ts = 1_700_006_400_000  # 2023-11-15 00:00 UTC, a Wednesday
    c = pd.DataFrame({"timestamp_ms": [ts, ts + 6 * 3_600_000], "open": [1.0, 1.0], "high": [1.0, 1.0],
                      "low": [1.0, 1.0], "close": [1.0, 1.0], "volume": [1.0, 1.0]})
    frame = build_features(c, FeatureSpec(volume_window_bars=2))
    assert frame["day_of_week"].tolist() == [2.0, 2.0]
    assert frame["tod_sin"].iloc[0] == 0.0 and frame["tod_sin"].iloc[1] == pytest.approx(1.0)


def test_serving_row_equals_the_full_history_row_bit_for_bit(feature_inputs):
    full = build_features(feature_inputs, CROSS_SPEC, interval_ms=INTERVAL_MS)
    for bar in (400, 999, 1499):
        row = latest_feature_row(feature_inputs.until_bar(bar, INTERVAL_MS), CROSS_SPEC, interval_ms=INTERVAL_MS)
        np.testing.assert_array_equal(row.iloc[0].to_numpy(), full.iloc[bar].to_numpy())


def test_serving_fails_closed(feature_inputs):
    with pytest.raises(InsufficientHistory):
        latest_feature_row(feature_inputs.until_bar(CROSS_SPEC.warmup_bars - 2, INTERVAL_MS), CROSS_SPEC, interval_ms=INTERVAL_MS)
    with pytest.raises(FeatureUnavailable, match="x_ETH"):
        latest_feature_row(feature_inputs.until_bar(700, INTERVAL_MS), CROSS_SPEC, interval_ms=INTERVAL_MS)
    stale = FeatureInputs(feature_inputs.candles, feature_inputs.cross, feature_inputs.orderbook.iloc[:900])
    with pytest.raises(FeatureUnavailable, match="ob_imbalance"):
        latest_feature_row(stale.until_bar(1200, INTERVAL_MS), CROSS_SPEC, interval_ms=INTERVAL_MS)
    with pytest.raises(DataError, match="cross asset"):
        build_features(feature_inputs.candles, CROSS_SPEC)


def test_orderbook_snapshot_after_the_bar_close_is_not_used():
    m = generate_regime_candles(300, seed=13, with_orderbook=True)
    spec = SMALL_FEATURES.model_copy(update={"orderbook": True, "orderbook_max_age_ms": 10 * INTERVAL_MS})
    late = m.orderbook.assign(timestamp_ms=m.orderbook["timestamp_ms"] + 1)  # one ms after each close
    on_time = build_features(FeatureInputs(m.candles, orderbook=m.orderbook), spec, interval_ms=INTERVAL_MS)
    shifted = build_features(FeatureInputs(m.candles, orderbook=late), spec, interval_ms=INTERVAL_MS)
    # a snapshot one ms late belongs to the next bar: each bar sees the previous bar's book
    np.testing.assert_array_equal(shifted["ob_imbalance"].to_numpy()[1:], on_time["ob_imbalance"].to_numpy()[:-1])
    assert np.isnan(shifted["ob_imbalance"].iloc[0])
