import numpy as np

from tradetree.ml.data import validate_candles
from tradetree.ml.synthetic import generate_regime_candles


def test_same_seed_same_data_and_valid_candles():
    a = generate_regime_candles(500, seed=3, with_orderbook=True)
    b = generate_regime_candles(500, seed=3, with_orderbook=True)
    assert a.candles.equals(b.candles) and a.orderbook.equals(b.orderbook)
    assert not a.candles.equals(generate_regime_candles(500, seed=4).candles)
    validate_candles(a.candles)  # raises on broken OHLC brackets


def test_regimes_show_in_realized_volatility():
    m = generate_regime_candles(20_000, seed=5, regime_vols=(0.001, 0.004), intraday_amplitude=0.0)
    r = np.diff(np.log(m.candles["close"].to_numpy()))
    regime = m.regime[1:]
    low, high = r[regime == 0].std(), r[regime == 1].std()
    assert 0.0009 < low < 0.0011
    assert 0.0036 < high < 0.0044
