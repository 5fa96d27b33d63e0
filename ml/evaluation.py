"""Walk-forward evaluation of the CatBoost model against baselines, and the serving gate.

Each fold trains the model and every baseline on the fold's training rows
only and predicts its test block; metrics are pooled over all test rows
(plus per fold). The gate decides whether the model may be served.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tradetree.ml.baselines import direction_baselines, volatility_baselines
from tradetree.ml.config import ModelConfig
from tradetree.ml.dataset import Dataset
from tradetree.ml.metrics import (
    accuracy,
    log_loss,
    mcc,
    precision_at_thresholds,
    r2_score,
    rmse,
    roc_auc,
    vol_direction_accuracy,
)
from tradetree.ml.models import TrainedModel, fit_catboost
from tradetree.ml.splits import walk_forward_splits

__all__ = ["MODEL_COLUMN", "GateResult", "EvaluationResult", "walk_forward_evaluate", "score", "apply_gate"]

MODEL_COLUMN = "catboost"


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class EvaluationResult:
    """Out-of-sample predictions and scores.

    ``predictions`` has one row per test row: ``timestamp_ms, bar, fold, y``,
    ``current_log_vol`` and one column per model (``catboost`` and each
    baseline's name). ``metrics[name]`` holds the pooled scores,
    ``fold_metrics`` one dict per fold and model, ``precision`` (direction
    only) the precision-at-threshold table per model.
    """

    task: str
    horizon_bars: int
    n_rows: int
    data_sha256: str
    predictions: pd.DataFrame
    metrics: dict[str, dict[str, float]]
    fold_metrics: list[dict[str, Any]]
    gate: GateResult
    precision: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    feature_importance: dict[str, float] = field(default_factory=dict)

    @property
    def model_names(self) -> list[str]:
        return list(self.metrics)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (NaN as None), without the per-row predictions."""
        return _json_clean(
            {
                "task": self.task,
                "horizon_bars": self.horizon_bars,
                "n_rows": self.n_rows,
                "n_test_rows": len(self.predictions),
                "data_sha256": self.data_sha256,
                "metrics": self.metrics,
                "fold_metrics": self.fold_metrics,
                "precision": self.precision,
                "gate": {"passed": self.gate.passed, "reasons": list(self.gate.reasons)},
                "feature_importance": self.feature_importance,
            }
        )


def _json_clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_clean(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return None if math.isnan(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def score(task: str, y: np.ndarray, pred: np.ndarray, current_log_vol: np.ndarray) -> dict[str, float]:
    """The task's metrics for one prediction column."""
    if task == "volatility":
        return {
            "r2": r2_score(y, pred),
            "rmse": rmse(y, pred),
            "vol_direction_accuracy": vol_direction_accuracy(y, pred, current_log_vol),
        }
    label = (pred > 0.5).astype(float)
    return {
        "accuracy": accuracy(y, label),
        "mcc": mcc(y, label),
        "auc": roc_auc(y, pred),
        "log_loss": log_loss(y, pred),
        "up_rate_called": float(np.mean(label)) if len(label) else math.nan,
    }


def apply_gate(task: str, metrics: dict[str, dict[str, float]], config: ModelConfig) -> GateResult:
    """Whether the model's pooled metrics pass ``config.gate`` (reasons say why not)."""
    key, floor = ("r2", config.gate.min_r2) if task == "volatility" else ("mcc", config.gate.min_mcc)
    model = metrics[MODEL_COLUMN][key]
    reasons = []
    if not model >= floor:  # NaN fails too
        reasons.append(f"{key} {model:.4f} below the floor {floor:.4f}")
    if config.gate.must_beat_baselines:
        for name, m in metrics.items():
            if name != MODEL_COLUMN and not model > m[key]:
                reasons.append(f"{key} {model:.4f} does not beat {name} ({m[key]:.4f})")
    return GateResult(passed=not reasons, reasons=tuple(reasons))


def walk_forward_evaluate(dataset: Dataset, config: ModelConfig) -> EvaluationResult:
    """Train and test the model and the baselines on every walk-forward fold.

    Raises:
        DataError: too few rows for ``config.walk_forward`` (see ``walk_forward_splits``).
    """
    task = config.task
    splits = walk_forward_splits(dataset.bars, horizon_bars=config.horizon_bars, spec=config.walk_forward)
    parts: list[pd.DataFrame] = []
    fold_metrics: list[dict[str, Any]] = []
    importance = pd.Series(0.0, index=dataset.X.columns)
    for split in splits:
        tr, te = split.train, split.test
        model: TrainedModel = fit_catboost(task, dataset.X.iloc[tr], dataset.y[tr], config.catboost)
        importance += pd.Series(model.feature_importance()) / len(splits)
        part = pd.DataFrame(
            {
                "timestamp_ms": dataset.timestamps_ms[te],
                "bar": dataset.bars[te],
                "fold": split.fold,
                "y": dataset.y[te],
                "current_log_vol": dataset.current_log_vol[te],
                MODEL_COLUMN: model.predict(dataset.X.iloc[te]),
            }
        )
        baselines = volatility_baselines(config.ewma_halflives_horizons) if task == "volatility" else direction_baselines()
        for baseline in baselines:
            baseline.fit(dataset.baseline_X.iloc[tr], dataset.y[tr])
            part[baseline.name] = baseline.predict(dataset.baseline_X.iloc[te])
        for name in [MODEL_COLUMN, *(b.name for b in baselines)]:
            fold_metrics.append(
                {
                    "fold": split.fold,
                    "model": name,
                    "n_train": len(tr),
                    "n_test": len(te),
                    "test_start_ms": int(dataset.timestamps_ms[te[0]]),
                    **score(task, part["y"].to_numpy(), part[name].to_numpy(), part["current_log_vol"].to_numpy()),
                }
            )
        parts.append(part)
    predictions = pd.concat(parts, ignore_index=True)
    names = [c for c in predictions.columns if c not in ("timestamp_ms", "bar", "fold", "y", "current_log_vol")]
    y, current = predictions["y"].to_numpy(), predictions["current_log_vol"].to_numpy()
    metrics = {n: score(task, y, predictions[n].to_numpy(), current) for n in names}
    precision = (
        {n: precision_at_thresholds(y, predictions[n].to_numpy(), config.precision_thresholds) for n in names}
        if task == "direction"
        else {}
    )
    return EvaluationResult(
        task=task,
        horizon_bars=config.horizon_bars,
        n_rows=len(dataset),
        data_sha256=dataset.data_sha256,
        predictions=predictions,
        metrics=metrics,
        fold_metrics=fold_metrics,
        gate=apply_gate(task, metrics, config),
        precision=precision,
        feature_importance={k: float(v) for k, v in importance.sort_values(ascending=False).items()},
    )
