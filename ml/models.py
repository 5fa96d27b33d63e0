"""CatBoost models for the two tasks, with one prediction contract.

- ``volatility``: CatBoostRegressor (RMSE); a prediction is ln per-bar
  realized volatility over the next ``horizon_bars`` bars.
- ``direction``: CatBoostClassifier (Logloss); a prediction is P(up).

Features go in as float64 in ``feature_names`` order, whatever the column
order of the frame. Training is deterministic for a seed and ``thread_count``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from catboost import CatBoostClassifier, CatBoostRegressor

from tradetree.ml.config import CatBoostParams, Task

__all__ = ["TrainedModel", "fit_catboost", "load_catboost"]

_FILE_FORMAT = "cbm"


class TrainedModel:
    """A fitted CatBoost model plus what it needs to be used: task and feature order."""

    def __init__(self, task: Task, feature_names: list[str], booster: CatBoostRegressor | CatBoostClassifier):
        self.task = task
        self.feature_names = list(feature_names)
        self.booster = booster

    def _matrix(self, X: pd.DataFrame) -> np.ndarray:
        missing = [c for c in self.feature_names if c not in X.columns]
        if missing:
            raise KeyError(f"feature frame lacks {missing}")
        return X[self.feature_names].to_numpy(dtype=np.float64)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Predictions for every row of ``X`` (ln vol, or P(up)). Raises KeyError for a missing feature."""
        matrix = self._matrix(X)
        if self.task == "direction":
            return np.asarray(self.booster.predict_proba(matrix)[:, 1], dtype=np.float64)
        return np.asarray(self.booster.predict(matrix), dtype=np.float64)

    def feature_importance(self) -> dict[str, float]:
        values = self.booster.get_feature_importance()
        return {n: float(v) for n, v in zip(self.feature_names, values, strict=True)}

    def save(self, path: str | Path) -> None:
        self.booster.save_model(str(path), format=_FILE_FORMAT)


def _booster(task: Task, params: CatBoostParams) -> CatBoostRegressor | CatBoostClassifier:
    common = dict(
        iterations=params.iterations,
        depth=params.depth,
        learning_rate=params.learning_rate,
        l2_leaf_reg=params.l2_leaf_reg,
        thread_count=params.thread_count,
        random_seed=params.random_seed,
        verbose=False,
        allow_writing_files=False,
    )
    if task == "direction":
        return CatBoostClassifier(loss_function="Logloss", **common)
    return CatBoostRegressor(loss_function="RMSE", **common)


def fit_catboost(task: Task, X: pd.DataFrame, y: np.ndarray, params: CatBoostParams) -> TrainedModel:
    """Fit on every row of ``X`` (columns = features, in order) against ``y``.

    Raises:
        ValueError: ``X`` and ``y`` differ in length, or hold NaN.
    """
    matrix = X.to_numpy(dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(matrix) != len(y):
        raise ValueError(f"{len(matrix)} feature rows but {len(y)} targets")
    if np.isnan(matrix).any() or np.isnan(y).any():
        raise ValueError("training data holds NaN; drop incomplete rows first")
    booster = _booster(task, params)
    booster.fit(matrix, y.astype(np.int64) if task == "direction" else y)
    return TrainedModel(task, list(X.columns), booster)


def load_catboost(path: str | Path, task: Task, feature_names: list[str]) -> TrainedModel:
    """Load a model saved by ``TrainedModel.save``."""
    booster = CatBoostClassifier() if task == "direction" else CatBoostRegressor()
    booster.load_model(str(path), format=_FILE_FORMAT)
    return TrainedModel(task, feature_names, booster)
