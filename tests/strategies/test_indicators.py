import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradetree.strategies.indicators import ATR, EMA, SMA, RealizedVol, RollingOLS, RollingStdev


def _walk(n, seed, start=60_000.0, vol=1e-3):
    rng = np.random.default_rng(seed)
    return start * np.exp(np.cumsum(rng.normal(0.0, vol, n)))


def test_ema_matches_the_recursive_definition_and_is_ready_after_period():
    ema = EMA(4)
    xs = [10.0, 11.0, 9.0, 12.0, 15.0]
    expected = xs[0]
    for i, x in enumerate(xs):
        value = ema.update(x)
        if i:
            expected += 0.4 * (x - expected)
        assert value == pytest.approx(expected)
        assert ema.ready is (i >= 3)


def test_sma_over_a_long_run_has_no_drift():
    xs = _walk(20_000, 1)
    sma = SMA(25)
    for i, x in enumerate(xs):
        value = sma.update(x)
        if i < 24:
            assert value is None
    assert value == pytest.approx(float(np.mean(xs[-25:])), rel=1e-12)


def test_rolling_stdev_matches_numpy_on_prices_and_returns():
    prices = _walk(5_000, 2)
    returns = np.diff(np.log(prices))
    for series in (prices, returns):
        rs = RollingStdev(30)
        for i, x in enumerate(series):
            rs.update(x)
            if i in (29, 1_000, 2_017, len(series) - 1):
                window = series[i - 29 : i + 1]
                assert rs.mean == pytest.approx(float(np.mean(window)), rel=1e-9, abs=1e-15)
                assert rs.stdev == pytest.approx(float(np.std(window, ddof=1)), rel=1e-7)
        assert RollingStdev(30).stdev is None


def test_rolling_stdev_of_a_constant_is_zero_not_negative():
    rs = RollingStdev(5)
    for _ in range(50):
        rs.update(60_000.1)
    assert rs.stdev == 0.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=-1e3, max_value=1e3, allow_nan=False), min_size=4, max_size=80),
       st.integers(min_value=2, max_value=8))
def test_rolling_stdev_property(xs, window):
    rs = RollingStdev(window)
    for x in xs:
        rs.update(x)
    if len(xs) < window:
        assert rs.stdev is None
        return
    expected = float(np.std(xs[-window:], ddof=1))
    assert rs.stdev == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_rolling_ols_recovers_beta_and_residual_error():
    rng = np.random.default_rng(3)
    x = np.log(_walk(3_000, 4, start=3_000.0))
    y = 0.7 + 1.3 * x + rng.normal(0.0, 1e-4, x.size)
    ols = RollingOLS(200)
    for xi, yi in zip(x, y):
        ols.update(xi, yi)
    xs, ys = x[-200:], y[-200:]
    beta, alpha = np.polyfit(xs, ys, 1)
    assert ols.beta == pytest.approx(beta, rel=1e-6)
    assert ols.alpha == pytest.approx(alpha, rel=1e-6)
    resid = ys - (alpha + beta * xs)
    assert ols.residual(xs[-1], ys[-1]) == pytest.approx(resid[-1], rel=1e-4, abs=1e-12)
    assert ols.residual_stdev == pytest.approx(math.sqrt(np.sum(resid**2) / 198), rel=1e-5)
    assert ols.beta == pytest.approx(1.3, rel=0.02)


def test_rolling_ols_is_undefined_until_full_and_without_x_variance():
    ols = RollingOLS(3)
    ols.update(1.0, 2.0)
    ols.update(2.0, 3.0)
    assert ols.beta is None and not ols.ready
    ols.update(3.0, 4.0)
    assert ols.beta == pytest.approx(1.0) and ols.ready
    flat = RollingOLS(4)
    for y in (1.0, 2.0, 3.0, 4.0, 5.0):
        flat.update(11.0, y)
    assert flat.beta is None and flat.residual_stdev is None and not flat.ready


def test_realized_vol_is_the_stdev_of_log_returns():
    prices = _walk(500, 5)
    rv = RealizedVol(20)
    for i, p in enumerate(prices):
        value = rv.update(p)
        assert (value is None) is (i < 20)
    expected = float(np.std(np.diff(np.log(prices[-21:])), ddof=1))
    assert value == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError):
        rv.update(0.0)


def test_atr_uses_true_range_and_wilder_smoothing():
    atr = ATR(2)
    assert atr.update(11, 9, 10) is None  # tr 2
    assert atr.update(12, 11, 11.5) == pytest.approx(2.0)  # tr 2 (12 - prev close 10), mean(2, 2)
    assert atr.update(11.6, 11.4, 11.5) == pytest.approx((2.0 + 0.2) / 2)
    assert atr.update(16, 15, 15.5) == pytest.approx((1.1 + 4.5) / 2)  # gap: 16 - 11.5


@pytest.mark.parametrize("factory", [lambda: EMA(0), lambda: SMA(0), lambda: RollingStdev(1),
                                     lambda: RollingOLS(2), lambda: RealizedVol(1), lambda: ATR(0)])
def test_bad_windows_are_rejected(factory):
    with pytest.raises(ValueError):
        factory()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(min_value=-1e3, max_value=1e3), st.floats(min_value=-1e3, max_value=1e3)),
                min_size=4, max_size=60),
       st.integers(min_value=3, max_value=8))
def test_rolling_ols_beta_property(pairs, window):
    ols = RollingOLS(window)
    for x, y in pairs:
        ols.update(x, y)
    if len(pairs) < window:
        assert ols.beta is None
        return
    xs = np.array([p[0] for p in pairs[-window:]])
    ys = np.array([p[1] for p in pairs[-window:]])
    sxx = float(((xs - xs.mean()) ** 2).sum())
    if sxx < 1e-6:
        return  # (near-)constant x: beta is legitimately undefined or ill-conditioned
    expected = float(((xs - xs.mean()) * (ys - ys.mean())).sum()) / sxx
    assert ols.beta == pytest.approx(expected, rel=1e-6, abs=1e-6)
