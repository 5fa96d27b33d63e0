"""Prediction targets, aligned to the bar whose close is the decision time.

Row ``t`` is decided at the close of bar ``t``; its target uses bars
``t+1 .. t+horizon`` only, so the last ``horizon`` rows have no target (NaN).

- ``forward_log_vol``: ln of the per-bar realized volatility over the next
  ``horizon`` bars, ``ln sqrt(mean(r[t+1..t+h]²))`` (close-to-close log returns).
- ``forward_direction``: 1.0 if ``close[t+h] > close[t]``, 0.0 if lower, NaN
  if unchanged (a tie has no direction and is left out of training and scoring).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tradetree.ml.rolling import log_returns, log_vol_from_var, rolling_mean

__all__ = ["forward_log_vol", "trailing_log_vol", "forward_return", "forward_direction"]


def trailing_log_vol(candles: pd.DataFrame, window_bars: int) -> np.ndarray:
    """ln per-bar realized volatility over bars ``t-window+1 .. t`` (known at bar t's close)."""
    r = log_returns(candles["close"].to_numpy())
    return log_vol_from_var(rolling_mean(r * r, window_bars))


def forward_log_vol(candles: pd.DataFrame, horizon_bars: int) -> np.ndarray:
    """The volatility target: the trailing value ``horizon_bars`` bars ahead, shifted back."""
    trailing = trailing_log_vol(candles, horizon_bars)
    out = np.full(trailing.shape, np.nan)
    out[:-horizon_bars] = trailing[horizon_bars:]
    return out


def forward_return(candles: pd.DataFrame, horizon_bars: int) -> np.ndarray:
    """``ln(close[t+h] / close[t])``; NaN for the last ``h`` rows."""
    close = candles["close"].to_numpy(dtype=np.float64)
    out = np.full(close.shape, np.nan)
    out[:-horizon_bars] = np.log(close[horizon_bars:] / close[:-horizon_bars])
    return out


def forward_direction(candles: pd.DataFrame, horizon_bars: int) -> np.ndarray:
    """The direction target: 1.0 up, 0.0 down, NaN for no change or no future."""
    fwd = forward_return(candles, horizon_bars)
    out = np.where(fwd > 0, 1.0, 0.0)
    out[np.isnan(fwd) | (fwd == 0)] = np.nan
    return out
