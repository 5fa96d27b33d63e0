"""Out-of-sample metrics for volatility regression and direction classification.

All functions take aligned 1-D arrays and ignore nothing silently: callers
drop NaN rows before scoring.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = [
    "r2_score",
    "rmse",
    "vol_direction_accuracy",
    "accuracy",
    "mcc",
    "roc_auc",
    "log_loss",
    "precision_at_thresholds",
]


def r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """``1 - SSE / SST`` with SST about the mean of ``y_true`` (0 for a constant-mean
    forecast; negative when worse). NaN when ``y_true`` is constant or empty."""
    y, p = np.asarray(y_true, float), np.asarray(y_pred, float)
    sst = float(np.sum((y - y.mean()) ** 2)) if len(y) else 0.0
    if sst == 0.0:
        return math.nan
    return 1.0 - float(np.sum((y - p) ** 2)) / sst


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y, p = np.asarray(y_true, float), np.asarray(y_pred, float)
    return float(np.sqrt(np.mean((y - p) ** 2))) if len(y) else math.nan


def vol_direction_accuracy(y_true: np.ndarray, y_pred: np.ndarray, current: np.ndarray) -> float:
    """Share of rows where the forecast calls the change of volatility versus ``current``
    (the trailing realized volatility over the same horizon) right: up or down.
    Rows where the realized value equals ``current`` are left out."""
    y, p, c = (np.asarray(a, float) for a in (y_true, y_pred, current))
    actual, called = np.sign(y - c), np.sign(p - c)
    mask = actual != 0
    return float(np.mean(actual[mask] == called[mask])) if mask.any() else math.nan


def accuracy(y_true: np.ndarray, y_label: np.ndarray) -> float:
    y, p = np.asarray(y_true, float), np.asarray(y_label, float)
    return float(np.mean(y == p)) if len(y) else math.nan


def mcc(y_true: np.ndarray, y_label: np.ndarray) -> float:
    """Matthews correlation of binary labels (0/1). 0 when a marginal is constant."""
    y, p = np.asarray(y_true, bool), np.asarray(y_label, bool)
    tp, tn = float(np.sum(y & p)), float(np.sum(~y & ~p))
    fp, fn = float(np.sum(~y & p)), float(np.sum(y & ~p))
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / denom if denom > 0 else 0.0


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann–Whitney, ties averaged). NaN with one class only."""
    y = np.asarray(y_true, bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = pd.Series(np.asarray(score, float)).rank(method="average").to_numpy()
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(y_true: np.ndarray, proba: np.ndarray, eps: float = 1e-12) -> float:
    y = np.asarray(y_true, float)
    p = np.clip(np.asarray(proba, float), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))) if len(y) else math.nan


def precision_at_thresholds(
    y_true: np.ndarray, proba_up: np.ndarray, thresholds: tuple[float, ...]
) -> list[dict[str, float]]:
    """The precision–recall trade-off of trading only confident calls.

    For each threshold ``t``: go long when ``P(up) >= t``, short when
    ``P(up) <= 1 - t``. Reports, per side, precision (share of calls right),
    recall (share of that side's moves caught) and coverage (share of rows
    called), and the base rate of up moves for reference.
    """
    y = np.asarray(y_true, bool)
    p = np.asarray(proba_up, float)
    n = len(y)
    base_rate = float(y.mean()) if n else math.nan
    rows = []
    for t in thresholds:
        long_, short = p >= t, p <= 1 - t
        if t == 0.5:
            short = p < 0.5  # at 0.5 every row is called exactly once
        n_long, n_short = int(long_.sum()), int(short.sum())
        n_up, n_down = int(y.sum()), int((~y).sum())
        rows.append(
            {
                "threshold": float(t),
                "base_rate_up": base_rate,
                "long_precision": float(y[long_].mean()) if n_long else math.nan,
                "long_recall": float((y & long_).sum() / n_up) if n_up else math.nan,
                "long_coverage": n_long / n if n else math.nan,
                "short_precision": float((~y[short]).mean()) if n_short else math.nan,
                "short_recall": float((~y & short).sum() / n_down) if n_down else math.nan,
                "short_coverage": n_short / n if n else math.nan,
            }
        )
    return rows
