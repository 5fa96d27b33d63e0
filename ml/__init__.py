"""Machine learning signals: CatBoost volatility and direction models. Built under issue 5.

The pipeline, in the order data flows:

- ``ml.data``: load / validate candles and order book snapshots; ccxt download cache.
- ``ml.features``: ``build_features``, the one feature function for training and serving.
- ``ml.targets``: forward ln realized volatility and forward direction.
- ``ml.dataset``: complete rows of features, target and baseline inputs.
- ``ml.splits``: walk-forward splits with purge and embargo.
- ``ml.baselines``: persistence, EWMA, HAR-RV; majority, momentum.
- ``ml.metrics``, ``ml.evaluation``: scores, walk-forward evaluation, the serving gate.
- ``ml.leakage``: look-ahead feature check, shuffled-target check.
- ``ml.models``, ``ml.registry``, ``ml.pipeline``: CatBoost, the on-disk registry, train-and-register.
- ``ml.forecaster``: volatility forecasters for strategies; ``actors.model_server`` serves models.
- ``ml.plots`` (needs matplotlib), ``ml.cli`` (``tradetree ml train|eval|list``).
"""

# The folder sits at the repository root but installs as tradetree.ml; loading it
# under a second name would give every class and module-level state two copies.
if __name__ != "tradetree.ml":
    raise ImportError(f"import tradetree.ml, not {__name__}")

from tradetree.ml.cli import register as register_commands
from tradetree.ml.config import CatBoostParams, FeatureSpec, GateSpec, ModelConfig, WalkForwardSpec, load_model_config
from tradetree.ml.data import fetch_ohlcv_cached, load_candles, load_orderbook_snapshots
from tradetree.ml.dataset import Dataset, build_dataset
from tradetree.ml.errors import MLError, ModelServerStateError
from tradetree.ml.evaluation import EvaluationResult, walk_forward_evaluate
from tradetree.ml.features import FeatureInputs, build_features, feature_names, latest_feature_row
from tradetree.ml.forecaster import (
    BarWindowForecaster,
    ForecasterSpec,
    ModelVolForecaster,
    RealizedVolForecaster,
    VolatilityForecaster,
    annualized_vol,
    build_forecaster,
    set_server_connector,
)
from tradetree.ml.leakage import find_lookahead_features, shuffled_target_r2
from tradetree.ml.pipeline import train_and_register
from tradetree.ml.registry import MODEL_FILE, ModelRegistry, RegisteredModel, file_sha256

__all__ = [
    "CatBoostParams",
    "FeatureSpec",
    "GateSpec",
    "ModelConfig",
    "WalkForwardSpec",
    "load_model_config",
    "fetch_ohlcv_cached",
    "load_candles",
    "load_orderbook_snapshots",
    "Dataset",
    "build_dataset",
    "EvaluationResult",
    "walk_forward_evaluate",
    "FeatureInputs",
    "build_features",
    "feature_names",
    "latest_feature_row",
    "ModelVolForecaster",
    "RealizedVolForecaster",
    "VolatilityForecaster",
    "annualized_vol",
    "find_lookahead_features",
    "shuffled_target_r2",
    "train_and_register",
    "ModelRegistry",
    "RegisteredModel",
    "BarWindowForecaster",
    "ForecasterSpec",
    "MLError",
    "MODEL_FILE",
    "ModelServerStateError",
    "build_forecaster",
    "file_sha256",
    "register_commands",
    "set_server_connector",
]
