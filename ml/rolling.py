"""Window-local rolling statistics shared by features, targets and baselines.

Each value is computed from the values inside its window only, added in a
fixed order, never from running sums. So a statistic at bar
``t`` is bit-for-bit the same whether the series stops at ``t`` or goes on,
which is what lets serving reproduce evaluation exactly.
"""

from __future__ import annotations

import numpy as np

__all__ = ["VAR_FLOOR", "log_returns", "rolling_mean", "rolling_std", "log_vol_from_var"]

# Floor for a variance before taking logs: a flat window (all returns zero) maps to
# log vol ≈ -16.1 instead of -inf, which neither the models nor R² can digest.
VAR_FLOOR = 1e-14


def log_returns(close: np.ndarray) -> np.ndarray:
    """``r[t] = ln(close[t] / close[t-1])``; ``r[0]`` is NaN."""
    close = np.asarray(close, dtype=np.float64)
    out = np.full(close.shape, np.nan)
    out[1:] = np.log(close[1:] / close[:-1])
    return out


def _window_sums(x: np.ndarray, window: int) -> np.ndarray:
    """Sums of every full window, adding the window's values in order, one vector add per
    offset. Elementwise adds never reorder, so a window's sum is the same for any series
    length (numpy's own reductions may switch between pairwise and sequential summation
    with the array's shape, which would break serving == evaluation)."""
    n_windows = len(x) - window + 1
    acc = x[:n_windows].copy()
    for j in range(1, window):
        acc += x[j : j + n_windows]
    return acc


def rolling_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Mean of ``x[t-window+1 .. t]`` at ``t``; NaN for the first ``window - 1`` values
    and wherever the window holds a NaN."""
    x = np.asarray(x, dtype=np.float64)
    out = np.full(x.shape, np.nan)
    if window <= len(x):
        out[window - 1 :] = _window_sums(x, window) / window
    return out


def rolling_std(x: np.ndarray, window: int) -> np.ndarray:
    """Sample standard deviation (ddof=1, two-pass) over the same windows as ``rolling_mean``."""
    x = np.asarray(x, dtype=np.float64)
    out = np.full(x.shape, np.nan)
    if 2 <= window <= len(x):
        mean = _window_sums(x, window) / window
        n_windows = len(mean)
        acc = np.zeros(n_windows)
        for j in range(window):
            d = x[j : j + n_windows] - mean
            acc += d * d
        out[window - 1 :] = np.sqrt(acc / (window - 1))
    return out


def log_vol_from_var(variance: np.ndarray) -> np.ndarray:
    """``ln(sqrt(max(variance, VAR_FLOOR)))``, keeping NaN as NaN."""
    variance = np.asarray(variance, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return 0.5 * np.log(np.where(np.isnan(variance), np.nan, np.maximum(variance, VAR_FLOOR)))
