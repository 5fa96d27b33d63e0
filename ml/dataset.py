"""A supervised dataset: complete feature rows, their targets and the baselines' inputs.

Only rows where every feature, the target and every baseline input are
known are kept, so the model and the baselines are scored on the same rows.
Row ``i`` is bar ``bars[i]`` of the candle frame.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from tradetree.ml.baselines import baseline_inputs
from tradetree.ml.config import ModelConfig
from tradetree.ml.data import frames_sha256, infer_interval_ms, validate_candles
from tradetree.ml.errors import DataError
from tradetree.ml.features import FeatureInputs, build_features
from tradetree.ml.targets import forward_direction, forward_log_vol, trailing_log_vol

__all__ = ["Dataset", "build_dataset", "inputs_sha256"]


@dataclass(frozen=True)
class Dataset:
    """Aligned arrays, one entry per usable bar.

    ``current_log_vol`` is the trailing ln realized vol over the horizon (the
    reference for direction-of-volatility-change accuracy); ``data_sha256``
    identifies all input frames.
    """

    X: pd.DataFrame
    y: np.ndarray
    baseline_X: pd.DataFrame
    bars: np.ndarray
    timestamps_ms: np.ndarray
    current_log_vol: np.ndarray
    interval_ms: int
    data_sha256: str

    def __len__(self) -> int:
        return len(self.y)

    def with_shuffled_target(self, seed: int) -> Dataset:
        """The same rows with the targets permuted: nothing should predict these."""
        rng = np.random.default_rng(seed)
        return replace(self, y=self.y[rng.permutation(len(self.y))])


def inputs_sha256(inputs: FeatureInputs) -> str:
    """sha256 of the candles, every cross frame and the order book, as used."""
    frames: dict[str, pd.DataFrame | None] = {"candles": inputs.candles, "orderbook": inputs.orderbook}
    frames |= {f"cross:{name}": frame for name, frame in inputs.cross.items()}
    return frames_sha256(frames)


def build_dataset(
    inputs: FeatureInputs | pd.DataFrame, config: ModelConfig, *, interval_ms: int | None = None
) -> Dataset:
    """Features, target and baseline inputs for ``config``, incomplete rows dropped.

    Raises:
        DataError: malformed candles, missing cross / order book inputs, or no
            complete row at all.
    """
    if isinstance(inputs, pd.DataFrame):
        inputs = FeatureInputs(candles=inputs)
    inputs = FeatureInputs(
        candles=validate_candles(inputs.candles),
        cross={k: validate_candles(v, source=f"cross asset {k}") for k, v in inputs.cross.items()},
        orderbook=inputs.orderbook,
    )
    candles = inputs.candles
    interval_ms = interval_ms or infer_interval_ms(candles)
    h = config.horizon_bars
    X = build_features(inputs, config.features, interval_ms=interval_ms)
    y = forward_log_vol(candles, h) if config.task == "volatility" else forward_direction(candles, h)
    base = baseline_inputs(candles, h, config.ewma_halflives_horizons)
    current = trailing_log_vol(candles, h)
    keep = X.notna().all(axis=1).to_numpy() & ~np.isnan(y) & base.notna().all(axis=1).to_numpy()
    if not keep.any():
        raise DataError(
            f"no complete rows: {len(candles)} bars, features need {config.features.warmup_bars}, "
            f"baselines {22 * h + 1}, target {h} ahead"
        )
    bars = np.flatnonzero(keep)
    return Dataset(
        X=X.iloc[bars].reset_index(drop=True),
        y=y[bars],
        baseline_X=base.iloc[bars].reset_index(drop=True),
        bars=bars,
        timestamps_ms=candles["timestamp_ms"].to_numpy()[bars],
        current_log_vol=current[bars],
        interval_ms=int(interval_ms),
        data_sha256=inputs_sha256(inputs),
    )
