"""Leakage checks: features that peek at the future, and targets nothing should predict.

``find_lookahead_features`` rebuilds the features on inputs cut at a bar
(all that was known at its close) and compares that bar's row with the row
built from the whole series. An honest feature gives the same value; one
that uses later bars (a centred window, a negative shift, a z-score over the
whole sample) changes or turns NaN, and is reported.

``shuffled_target_r2`` is the complementary end-to-end check: with the
targets permuted, walk-forward R² must fall to about zero; a pipeline that
still "predicts" leaks through something other than the features' values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tradetree.ml.config import ModelConfig
from tradetree.ml.dataset import Dataset
from tradetree.ml.evaluation import MODEL_COLUMN, walk_forward_evaluate
from tradetree.ml.features import FeatureInputs

__all__ = ["LeakageReport", "find_lookahead_features", "shuffled_target_r2"]

FeatureBuilder = Callable[[FeatureInputs], pd.DataFrame]


@dataclass(frozen=True)
class LeakageReport:
    """``leaky`` names the features whose value at a checked bar depends on later data;
    ``max_abs_diff`` is the largest change seen per leaky feature (inf when a value
    appeared or vanished)."""

    leaky: tuple[str, ...]
    checked_bars: tuple[int, ...]
    max_abs_diff: dict[str, float]

    @property
    def ok(self) -> bool:
        return not self.leaky


def find_lookahead_features(
    build: FeatureBuilder,
    inputs: FeatureInputs,
    *,
    interval_ms: int,
    bars: Sequence[int] | None = None,
    n_bars: int = 8,
    seed: int = 0,
    rtol: float = 1e-9,
) -> LeakageReport:
    """Report features whose value at a bar changes when later data is removed.

    ``build`` maps inputs to a feature frame with one row per candle (e.g.
    ``lambda i: build_features(i, spec, interval_ms=...)``). The checked bars
    are ``bars`` or ``n_bars`` drawn (seeded) from the second half of the
    series, where every window is full.
    """
    full = build(inputs)
    n = len(inputs.candles)
    if bars is None:
        rng = np.random.default_rng(seed)
        bars = sorted(int(b) for b in rng.choice(np.arange(n // 2, n - 1), size=min(n_bars, n - 1 - n // 2), replace=False))
    worst: dict[str, float] = {}
    for bar in bars:
        cut_row = build(inputs.until_bar(bar, interval_ms)).iloc[bar]
        full_row = full.iloc[bar]
        for name in full.columns:
            a, b = float(full_row[name]), float(cut_row[name])
            if np.isnan(a) and np.isnan(b):
                continue
            if np.isnan(a) != np.isnan(b):
                diff = float("inf")
            elif abs(a - b) <= rtol * max(abs(a), abs(b), 1e-300):
                continue
            else:
                diff = abs(a - b)
            worst[name] = max(worst.get(name, 0.0), diff)
    leaky = tuple(c for c in full.columns if c in worst)
    return LeakageReport(leaky=leaky, checked_bars=tuple(bars), max_abs_diff=worst)


def shuffled_target_r2(dataset: Dataset, config: ModelConfig, *, seed: int = 0) -> float:
    """Pooled walk-forward R² of the model trained and scored on permuted targets.

    About zero (slightly negative from fitting noise) for an honest pipeline.

    Raises:
        ValueError: ``config.task`` is not ``volatility``.
    """
    if config.task != "volatility":
        raise ValueError("shuffled_target_r2 scores a volatility model")
    result = walk_forward_evaluate(dataset.with_shuffled_target(seed), config)
    return result.metrics[MODEL_COLUMN]["r2"]
