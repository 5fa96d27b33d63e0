import numpy as np
import pandas as pd
import pytest

from tradetree.ml.targets import forward_direction, forward_log_vol, forward_return, trailing_log_vol


def candles_from_closes(closes):
    closes = np.asarray(closes, dtype=float)
    return pd.DataFrame(
        {
            "timestamp_ms": np.arange(len(closes), dtype=np.int64) * 60_000,
            "open": closes, "high": closes, "low": closes, "close": closes,
            "volume": np.ones(len(closes)),
        }
    )


def test_forward_log_vol_uses_only_the_next_horizon_returns():
    closes = [100, 101, 99, 102, 102, 105, 104]
    c = candles_from_closes(closes)
    r = np.diff(np.log(closes))
    y = forward_log_vol(c, 2)
    # row 1: returns of bars 2 and 3
    assert y[1] == pytest.approx(0.5 * np.log(np.mean(r[1:3] ** 2)))
    assert np.isnan(y[-2:]).all() and not np.isnan(y[:-2]).any()
    # the target at t is the trailing value at t + h
    assert np.array_equal(y[:-2], trailing_log_vol(c, 2)[2:])


def test_forward_direction_and_ties():
    c = candles_from_closes([100, 101, 101, 100, 103])
    assert np.allclose(forward_return(c, 1)[:-1], np.diff(np.log([100, 101, 101, 100, 103])))
    d = forward_direction(c, 1)
    assert d[0] == 1.0 and np.isnan(d[1]) and d[2] == 0.0 and d[3] == 1.0 and np.isnan(d[4])


def test_flat_window_is_floored_not_minus_infinity():
    c = candles_from_closes([100.0] * 6)
    assert np.isfinite(trailing_log_vol(c, 3)[3:]).all()
