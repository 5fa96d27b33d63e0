"""End to end: evaluate walk-forward, fit the final model on every row, register it.

The registered model is trained on the whole dataset; its metrics are the
walk-forward (out-of-sample) ones, and its gate verdict is recorded so that
serving can refuse a model that did not pass.
"""

from __future__ import annotations

from dataclasses import dataclass

from tradetree.ml.config import ModelConfig
from tradetree.ml.dataset import Dataset, build_dataset
from tradetree.ml.errors import LeakageDetected
from tradetree.ml.evaluation import EvaluationResult, walk_forward_evaluate
from tradetree.ml.features import FeatureInputs, build_features
from tradetree.ml.leakage import find_lookahead_features
from tradetree.ml.models import TrainedModel, fit_catboost
from tradetree.ml.registry import ModelRecord, ModelRegistry

__all__ = ["TrainingOutcome", "fit_final_model", "train_and_register"]


@dataclass(frozen=True)
class TrainingOutcome:
    evaluation: EvaluationResult
    record: ModelRecord
    model: TrainedModel


def fit_final_model(dataset: Dataset, config: ModelConfig) -> TrainedModel:
    """The model to serve: fitted on every row of ``dataset``."""
    return fit_catboost(config.task, dataset.X, dataset.y, config.catboost)


def train_and_register(
    inputs: FeatureInputs,
    config: ModelConfig,
    registry: ModelRegistry,
    *,
    name: str | None = None,
    leakage_check_bars: int = 4,
) -> TrainingOutcome:
    """Evaluate ``config`` walk-forward on ``inputs``, fit on all rows and register.

    The version is registered whether or not it passes its gate (so it can be
    inspected); ``ModelRecord.approved`` tells which.

    Before anything is trained, the features are rebuilt on the inputs cut at
    ``leakage_check_bars`` random bars and compared (``find_lookahead_features``).

    Raises:
        DataError: malformed inputs or too little data for the walk-forward.
        LeakageDetected: a feature's value at a bar depends on later data.
    """
    if not isinstance(inputs, FeatureInputs):
        inputs = FeatureInputs(candles=inputs)
    dataset = build_dataset(inputs, config)
    if leakage_check_bars > 0:
        report = find_lookahead_features(
            lambda i: build_features(i, config.features, interval_ms=dataset.interval_ms),
            inputs,
            interval_ms=dataset.interval_ms,
            n_bars=leakage_check_bars,
        )
        if not report.ok:
            raise LeakageDetected(f"features use future data: {list(report.leaky)} (checked bars {report.checked_bars})")
    evaluation = walk_forward_evaluate(dataset, config)
    model = fit_final_model(dataset, config)
    record = registry.register(
        name or config.name,
        model,
        config=config,
        metrics=evaluation.to_dict(),
        data_sha256=dataset.data_sha256,
        interval_ms=dataset.interval_ms,
        train_span_ms=(int(dataset.timestamps_ms[0]), int(dataset.timestamps_ms[-1])),
        n_train_rows=len(dataset),
        canary_features=dataset.X.iloc[[-1]],
    )
    return TrainingOutcome(evaluation=evaluation, record=record, model=model)
