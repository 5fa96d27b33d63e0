"""ML configuration: feature set, CatBoost hyperparameters, walk-forward and gate.

One YAML file in ``configs/ml/`` holds one ``ModelConfig``. Every model is
frozen and rejects unknown fields; ``load_model_config`` turns any problem
into a ``ConfigError`` naming the file and the dotted field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tradetree.core import ConfigError, format_validation_error

__all__ = [
    "Task",
    "FeatureSpec",
    "CatBoostParams",
    "WalkForwardSpec",
    "GateSpec",
    "ModelConfig",
    "load_model_config",
]

_FROZEN = ConfigDict(frozen=True, extra="forbid")

Task = Literal["volatility", "direction"]


def _positive_sorted(v: tuple[int, ...]) -> tuple[int, ...]:
    if any(w < 1 for w in v):
        raise ValueError("windows must be >= 1 bar")
    return tuple(sorted(set(v)))


class FeatureSpec(BaseModel):
    """Which features ``ml.features.build_features`` computes. Windows are in bars.

    ``cross_assets`` names the extra candle frames (e.g. ``ETH``) whose returns
    and volatility become features; ``orderbook`` adds order book imbalance and
    spread, which then must be supplied.
    """

    model_config = _FROZEN

    return_windows_bars: tuple[int, ...] = (1, 4, 16, 64)
    vol_windows_bars: tuple[int, ...] = (4, 16, 64, 256)
    range_windows_bars: tuple[int, ...] = (1, 16)
    volume_window_bars: int = Field(default=64, ge=2)
    time_of_day: bool = True
    cross_assets: tuple[str, ...] = ()
    cross_return_windows_bars: tuple[int, ...] = (1, 16)
    cross_vol_windows_bars: tuple[int, ...] = (16, 64)
    orderbook: bool = False
    orderbook_max_age_ms: int = Field(default=120_000, gt=0)

    _sorted = field_validator(
        "return_windows_bars",
        "vol_windows_bars",
        "range_windows_bars",
        "cross_return_windows_bars",
        "cross_vol_windows_bars",
    )(_positive_sorted)

    @property
    def warmup_bars(self) -> int:
        """Bars of history needed before the first complete feature row (inclusive of that bar)."""
        windows = [
            *self.return_windows_bars,
            *self.vol_windows_bars,
            *self.range_windows_bars,
            self.volume_window_bars,
        ]
        if self.cross_assets:
            windows += [*self.cross_return_windows_bars, *self.cross_vol_windows_bars]
        # A w-bar return or volatility needs w returns, i.e. w + 1 closes.
        return max(windows) + 1


class CatBoostParams(BaseModel):
    """CatBoost hyperparameters. The loss is chosen by the task (RMSE or Logloss)."""

    model_config = _FROZEN

    iterations: int = Field(default=500, ge=1)
    depth: int = Field(default=6, ge=1, le=16)
    learning_rate: float = Field(default=0.05, gt=0, le=1)
    l2_leaf_reg: float = Field(default=3.0, ge=0)
    thread_count: int = Field(default=2, ge=1)
    random_seed: int = 0


class WalkForwardSpec(BaseModel):
    """Walk-forward splits. The purge gap equals the target horizon and is not configurable.

    ``test_bars`` defaults to an equal share of what follows ``min_train_bars``.
    ``max_train_bars`` turns the expanding window into a rolling one.
    """

    model_config = _FROZEN

    n_splits: int = Field(default=5, ge=1)
    min_train_bars: int = Field(default=2000, ge=10)
    test_bars: int | None = Field(default=None, ge=1)
    embargo_bars: int = Field(default=0, ge=0)
    max_train_bars: int | None = Field(default=None, ge=10)


class GateSpec(BaseModel):
    """What a model must achieve out of sample before it may be served.

    Volatility: pooled R² at least ``min_r2`` and, if ``must_beat_baselines``,
    above every baseline's. Direction: MCC at least ``min_mcc`` and above every
    baseline's.
    """

    model_config = _FROZEN

    min_r2: float = 0.0
    min_mcc: float = 0.0
    must_beat_baselines: bool = True


class ModelConfig(BaseModel):
    """One model: task, horizon, features, hyperparameters, evaluation and gate."""

    model_config = _FROZEN

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    task: Task
    horizon_bars: int = Field(ge=1)
    features: FeatureSpec = FeatureSpec()
    catboost: CatBoostParams = CatBoostParams()
    walk_forward: WalkForwardSpec = WalkForwardSpec()
    gate: GateSpec = GateSpec()
    precision_thresholds: tuple[float, ...] = (0.5, 0.52, 0.55, 0.6, 0.65, 0.7)
    # EWMA baseline half-lives as multiples of the horizon; the best on each training fold is used.
    ewma_halflives_horizons: tuple[float, ...] = Field(default=(0.5, 1.0, 2.0, 4.0, 8.0), min_length=1)

    @field_validator("precision_thresholds")
    @classmethod
    def _thresholds(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0.5 <= t < 1 for t in v):
            raise ValueError("precision thresholds must lie in [0.5, 1)")
        return tuple(sorted(set(v)))

    @field_validator("ewma_halflives_horizons")
    @classmethod
    def _halflives(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(h <= 0 for h in v):
            raise ValueError("EWMA half-lives must be > 0")
        return v

    @model_validator(mode="after")
    def _enough_training(self) -> ModelConfig:
        if self.walk_forward.min_train_bars <= self.features.warmup_bars + self.horizon_bars:
            raise ValueError(
                "walk_forward.min_train_bars must exceed features.warmup_bars + horizon_bars"
            )
        return self


def load_model_config(path: str | Path) -> ModelConfig:
    """Load one ``configs/ml/*.yaml`` file.

    Raises:
        ConfigError: unreadable file, bad YAML, or a field that fails
            validation; the message names the file and the field.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return ModelConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source=str(path))) from None
