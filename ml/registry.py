"""A model registry on disk: ``<root>/<name>/v<N>/`` per registered version.

Each version folder holds:

- ``model.cbm``: the CatBoost model;
- ``features.json``: feature names (in model order) and the ``FeatureSpec``;
- ``metrics.json``: walk-forward metrics and the gate verdict;
- ``meta.json``: name, version, task, horizon, bar interval, created_at,
  sha256 of the training data and of ``model.cbm``, the full ``ModelConfig``,
  the training span, and a canary (one feature row and the model's prediction
  for it, re-checked by health probes).

A version is written into a hidden temporary folder and renamed into place,
so readers never see half a version and two writers never share a number.
Versions are never modified after registration.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import catboost
import numpy as np
import pandas as pd

from tradetree.core import Clock, WallClock
from tradetree.ml.config import FeatureSpec, ModelConfig
from tradetree.ml.errors import FeatureUnavailable, ModelIntegrityError, ModelNotApproved, ModelNotFound
from tradetree.ml.features import FeatureInputs, latest_feature_row
from tradetree.ml.models import TrainedModel, load_catboost

__all__ = ["DEFAULT_REGISTRY_ROOT", "ModelRecord", "RegisteredModel", "ModelRegistry", "file_sha256"]

DEFAULT_REGISTRY_ROOT = Path("models/registry")
MODEL_FILE = "model.cbm"
_VERSION = re.compile(r"^v(\d+)$")
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelIntegrityError(f"{path}: unreadable: {exc}") from None


@dataclass(frozen=True)
class ModelRecord:
    """What the registry knows about one version, without loading the model."""

    name: str
    version: str
    path: Path
    meta: dict[str, Any]
    metrics: dict[str, Any]
    features: list[str]

    @property
    def task(self) -> str:
        return str(self.meta["task"])

    @property
    def horizon_bars(self) -> int:
        return int(self.meta["horizon_bars"])

    @property
    def interval_ms(self) -> int:
        return int(self.meta["interval_ms"])

    @property
    def approved(self) -> bool:
        """Whether the model passed its walk-forward gate."""
        return bool(self.metrics.get("gate", {}).get("passed", False))

    @property
    def config(self) -> ModelConfig:
        return ModelConfig.model_validate(self.meta["config"])

    @property
    def feature_spec(self) -> FeatureSpec:
        return self.config.features


class RegisteredModel:
    """A loaded version: the model plus the contract to predict from raw inputs.

    ``predict`` takes a batch whose items are feature rows (mappings of
    feature name to value) or raw inputs (a candle frame or ``FeatureInputs``,
    whose last bar is predicted with the same feature function as training),
    and returns one float per item: ln per-bar vol (volatility) or P(up).
    """

    def __init__(self, record: ModelRecord, model: TrainedModel) -> None:
        self.record = record
        self.model = model
        self.spec = record.feature_spec

    @property
    def min_history_bars(self) -> int:
        return self.spec.warmup_bars

    def feature_row(self, item: Any) -> pd.DataFrame:
        """One-row feature frame for one batch item (see class doc).

        Raises:
            InsufficientHistory, FeatureUnavailable, DataError: from ``latest_feature_row``;
                FeatureUnavailable also for a feature row holding NaN or inf.
            KeyError: a feature row lacks a feature.
            TypeError: an item of another type.
        """
        if isinstance(item, (pd.DataFrame, FeatureInputs)):
            return latest_feature_row(item, self.spec, interval_ms=self.record.interval_ms)
        if isinstance(item, dict) or hasattr(item, "keys"):
            missing = [f for f in self.model.feature_names if f not in item]
            if missing:
                raise KeyError(f"feature row lacks {missing}")
            row = {f: float(item[f]) for f in self.model.feature_names}
            unknown = [f for f, v in row.items() if not np.isfinite(v)]
            if unknown:
                raise FeatureUnavailable(f"feature row has no finite value for {unknown}")
            return pd.DataFrame([row])
        raise TypeError(f"cannot predict on {type(item).__name__}: give a feature mapping, candles or FeatureInputs")

    def predict(self, batch: list[Any]) -> list[float]:
        if not batch:
            return []
        frame = pd.concat([self.feature_row(item) for item in batch], ignore_index=True)
        return [float(v) for v in self.model.predict(frame)]

    def predict_frame(self, features: pd.DataFrame) -> np.ndarray:
        """Predictions for a feature frame (evaluation path)."""
        return self.model.predict(features)


class ModelRegistry:
    """Register, list and load model versions under ``root``."""

    def __init__(self, root: str | Path = DEFAULT_REGISTRY_ROOT, *, clock: Clock | None = None) -> None:
        self.root = Path(root)
        self._clock = clock or WallClock()

    def versions(self, name: str) -> list[str]:
        """Versions of ``name``, oldest first (``[]`` if none)."""
        folder = self.root / name
        if not folder.is_dir():
            return []
        found = [(int(m.group(1)), p.name) for p in folder.iterdir() if p.is_dir() and (m := _VERSION.match(p.name))]
        return [v for _, v in sorted(found)]

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self.versions(p.name))

    def register(
        self,
        name: str,
        model: TrainedModel,
        *,
        config: ModelConfig,
        metrics: dict[str, Any],
        data_sha256: str,
        interval_ms: int,
        train_span_ms: tuple[int, int],
        n_train_rows: int,
        canary_features: pd.DataFrame,
    ) -> ModelRecord:
        """Write a new version of ``name`` and return its record.

        ``metrics`` should carry ``gate: {passed, reasons}``; ``canary_features``
        is a one-row feature frame whose prediction is stored for health probes.

        Raises:
            ValueError: a bad name, or a model whose task/features disagree with ``config``.
        """
        if not _NAME.match(name):
            raise ValueError(f"bad model name {name!r}: letters, digits, _ . - only")
        if model.task != config.task:
            raise ValueError(f"model task {model.task} differs from config task {config.task}")
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            model.save(tmp / MODEL_FILE)
            canary = canary_features[model.feature_names].iloc[[0]]
            now_ms = self._clock.now_ms()
            meta = {
                "name": name,
                "task": config.task,
                "horizon_bars": config.horizon_bars,
                "interval_ms": int(interval_ms),
                "created_ms": now_ms,
                "created_at": datetime.fromtimestamp(now_ms / 1000, tz=UTC).isoformat(),
                "data_sha256": data_sha256,
                "model_sha256": file_sha256(tmp / MODEL_FILE),
                "catboost_version": catboost.__version__,
                "n_train_rows": int(n_train_rows),
                "train_first_ms": int(train_span_ms[0]),
                "train_last_ms": int(train_span_ms[1]),
                "config": config.model_dump(mode="json"),
                "canary": {
                    "features": {k: float(v) for k, v in canary.iloc[0].items()},
                    "prediction": float(model.predict(canary)[0]),
                },
            }
            (tmp / "features.json").write_text(
                json.dumps({"names": model.feature_names, "spec": config.features.model_dump(mode="json")}, indent=2)
            )
            (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False))
            while True:
                versions = self.versions(name)
                number = int(versions[-1][1:]) + 1 if versions else 1
                try:
                    # rename onto an existing non-empty folder fails: a concurrent writer took it.
                    meta["version"] = f"v{number}"
                    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
                    os.rename(tmp, folder / f"v{number}")
                    break
                except OSError:
                    if not (folder / f"v{number}").exists():
                        raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return self.record(name, f"v{number}")

    def record(self, name: str, version: str | None = None) -> ModelRecord:
        """The record of ``name`` at ``version`` (default: the latest).

        Raises:
            ModelNotFound: no such name or version.
            ModelIntegrityError: its JSON files are unreadable.
        """
        versions = self.versions(name)
        if not versions:
            raise ModelNotFound(f"no model named {name!r} in {self.root}")
        version = version or versions[-1]
        if version not in versions:
            raise ModelNotFound(f"model {name!r} has no version {version!r} (have {versions})")
        path = self.root / name / version
        features = _read_json(path / "features.json")
        return ModelRecord(
            name=name,
            version=version,
            path=path,
            meta=_read_json(path / "meta.json"),
            metrics=_read_json(path / "metrics.json"),
            features=list(features["names"]),
        )

    def records(self) -> list[ModelRecord]:
        """Every version of every model, by name then version."""
        return [self.record(n, v) for n in self.names() for v in self.versions(n)]

    def load(self, name: str, version: str | None = None, *, require_approved: bool = False) -> RegisteredModel:
        """Load a version, verifying the model file against its recorded sha256.

        Raises:
            ModelNotFound: no such name or version.
            ModelIntegrityError: the model file is missing or altered.
            ModelNotApproved: ``require_approved`` and the model failed its gate.
        """
        record = self.record(name, version)
        model_path = record.path / MODEL_FILE
        if not model_path.is_file():
            raise ModelIntegrityError(f"{model_path}: missing")
        actual = file_sha256(model_path)
        if actual != record.meta.get("model_sha256"):
            raise ModelIntegrityError(f"{model_path}: sha256 {actual} differs from the registered one")
        if require_approved and not record.approved:
            reasons = "; ".join(record.metrics.get("gate", {}).get("reasons", [])) or "no gate verdict"
            raise ModelNotApproved(f"model {name} {record.version} did not pass its gate: {reasons}")
        return RegisteredModel(record, load_catboost(model_path, record.task, record.features))  # type: ignore[arg-type]
