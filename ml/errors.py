"""Errors raised by the ML pipeline. All derive from ``core.errors.TradetreeError``.

    TradetreeError
    └── MLError
        ├── DataError               candles / order book data are malformed
        ├── MissingDependency       an optional package (pyarrow, matplotlib) is not installed
        ├── InsufficientHistory     too few bars to compute every feature
        ├── FeatureUnavailable      a feature row has missing values (fail closed at serving)
        ├── LeakageDetected         a feature's past values change when future data is removed
        ├── ModelNotFound           no such model name / version in the registry
        ├── ModelIntegrityError     a registered model's files do not match their recorded hashes
        ├── ModelNotApproved        the model did not pass its evaluation gate
        └── ModelServerStateError   a ModelServer call made in the wrong lifecycle state
"""

from __future__ import annotations

from tradetree.core import TradetreeError

__all__ = [
    "MLError",
    "DataError",
    "MissingDependency",
    "InsufficientHistory",
    "FeatureUnavailable",
    "LeakageDetected",
    "ModelNotFound",
    "ModelIntegrityError",
    "ModelNotApproved",
    "ModelServerStateError",
]


class MLError(TradetreeError):
    """Base class of the ML pipeline's errors."""


class DataError(MLError):
    """Input data is malformed: missing columns, unsorted or duplicate timestamps, bad prices."""


class MissingDependency(MLError):
    """An optional package needed for this call is not installed; the message names it."""


class InsufficientHistory(MLError):
    """Fewer bars than the feature set needs (``FeatureSpec.warmup_bars``)."""


class FeatureUnavailable(MLError):
    """A feature row to predict on holds NaN (e.g. a cross asset has no bar at that time)."""


class LeakageDetected(MLError):
    """A feature uses information from after its bar (see ``ml.leakage``)."""


class ModelNotFound(MLError):
    """The registry has no model with that name, or no such version of it."""


class ModelIntegrityError(MLError):
    """A registered model's file no longer matches the sha256 recorded at registration."""


class ModelNotApproved(MLError):
    """The model failed its evaluation gate and the caller asked for approved models only."""


class ModelServerStateError(MLError):
    """A ModelServer method was called in a lifecycle state that does not allow it."""
