"""Baselines scored in the same walk-forward run as the model, on the same rows.

Volatility (target: ln per-bar realized vol over the next ``h`` bars):

- ``persistence``: the trailing realized vol over the last ``h`` bars, as is.
- ``ewma``: ln sqrt of an EWMA of squared returns (RiskMetrics style); the
  half-life (from a grid of multiples of ``h``) and a linear calibration
  ``a + b·x`` are fitted on each training fold, so the baseline is not
  handicapped by the Jensen bias of logs.
- ``har_rv``: HAR-RV in logs, OLS of the target on trailing ln realized vol
  over ``h``, ``5h`` and ``22h`` bars (the daily / weekly / monthly cascade of
  Corsi 2009 with the horizon as the day).

Direction (target: sign of the forward ``h``-bar return), probabilities of up:

- ``majority``: the training fold's up rate for every row.
- ``momentum``: up if the last ``h``-bar return was up (1.0 / 0.0 / 0.5).

Every baseline reads only the columns of ``baseline_inputs``, all causal.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import pandas as pd

from tradetree.ml.metrics import r2_score
from tradetree.ml.rolling import log_vol_from_var
from tradetree.ml.targets import trailing_log_vol

__all__ = [
    "Baseline",
    "baseline_inputs",
    "PersistenceBaseline",
    "EwmaBaseline",
    "HarRvBaseline",
    "MajorityBaseline",
    "MomentumBaseline",
    "volatility_baselines",
    "direction_baselines",
]


class Baseline(Protocol):
    name: str

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> None: ...

    def predict(self, X: pd.DataFrame) -> np.ndarray: ...


def _ewma_column(k: float) -> str:
    return f"ewma_log_vol_{k:g}h"


def baseline_inputs(
    candles: pd.DataFrame, horizon_bars: int, ewma_halflives_horizons: tuple[float, ...]
) -> pd.DataFrame:
    """Causal inputs of every baseline, one row per bar (NaN during warm-up).

    Columns: ``log_rv_1h``, ``log_rv_5h``, ``log_rv_22h`` (trailing ln per-bar
    vol over h, 5h, 22h bars), ``ewma_log_vol_{k}h`` for each half-life
    multiple ``k``, and ``ret_h`` (the last h-bar log return).
    """
    h = horizon_bars
    close = candles["close"].to_numpy(dtype=np.float64)
    r = np.concatenate([[np.nan], np.log(close[1:] / close[:-1])])
    cols = {
        "log_rv_1h": trailing_log_vol(candles, h),
        "log_rv_5h": trailing_log_vol(candles, 5 * h),
        "log_rv_22h": trailing_log_vol(candles, 22 * h),
    }
    r2 = pd.Series(r * r)
    for k in ewma_halflives_horizons:
        ewma = r2.ewm(halflife=k * h, adjust=False, ignore_na=True).mean().to_numpy(copy=True)
        ewma[: 22 * h] = np.nan  # same warm-up as HAR, so all baselines score the same rows
        cols[_ewma_column(k)] = log_vol_from_var(ewma)
    ret_h = np.full(close.shape, np.nan)
    ret_h[h:] = np.log(close[h:] / close[:-h])
    cols["ret_h"] = ret_h
    return pd.DataFrame(cols, index=candles.index)


def _ols(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    design = np.column_stack([np.ones(len(X)), X])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return coef


class PersistenceBaseline:
    name = "persistence"

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> None:
        """Nothing to fit."""

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return X["log_rv_1h"].to_numpy(dtype=float)


class EwmaBaseline:
    name = "ewma"

    def __init__(self, halflives_horizons: tuple[float, ...]) -> None:
        self._halflives = halflives_horizons
        self.column: str | None = None
        self.coef: np.ndarray | None = None

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> None:
        best = -np.inf
        for k in self._halflives:
            x = X[_ewma_column(k)].to_numpy(dtype=float)
            coef = _ols(x[:, None], y)
            score = r2_score(y, coef[0] + coef[1] * x)
            if score > best:
                best, self.column, self.coef = score, _ewma_column(k), coef

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        if self.column is None or self.coef is None:
            raise RuntimeError("EwmaBaseline.predict before fit")
        return self.coef[0] + self.coef[1] * X[self.column].to_numpy(dtype=float)


class HarRvBaseline:
    name = "har_rv"
    columns = ("log_rv_1h", "log_rv_5h", "log_rv_22h")

    def __init__(self) -> None:
        self.coef: np.ndarray | None = None

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> None:
        self.coef = _ols(X[list(self.columns)].to_numpy(dtype=float), y)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        if self.coef is None:
            raise RuntimeError("HarRvBaseline.predict before fit")
        return self.coef[0] + X[list(self.columns)].to_numpy(dtype=float) @ self.coef[1:]


class MajorityBaseline:
    name = "majority"

    def __init__(self) -> None:
        self.rate: float | None = None

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> None:
        self.rate = float(np.mean(y))

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        if self.rate is None:
            raise RuntimeError("MajorityBaseline.predict before fit")
        return np.full(len(X), self.rate)


class MomentumBaseline:
    name = "momentum"

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> None:
        """Nothing to fit."""

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        ret = X["ret_h"].to_numpy(dtype=float)
        return np.where(ret > 0, 1.0, np.where(ret < 0, 0.0, 0.5))


def volatility_baselines(ewma_halflives_horizons: tuple[float, ...]) -> list[Baseline]:
    """Fresh, unfitted volatility baselines."""
    return [PersistenceBaseline(), EwmaBaseline(ewma_halflives_horizons), HarRvBaseline()]


def direction_baselines() -> list[Baseline]:
    """Fresh, unfitted direction baselines."""
    return [MajorityBaseline(), MomentumBaseline()]
