"""Volatility forecasters a strategy can plug in.

Unit contract: ``forecast`` returns the **per-bar** volatility, the standard
deviation of one bar's log return (a fraction: 0.002 = 0.2 %), expected over
the next ``horizon_bars`` bars, as of the close of the last bar given. Use
``annualized_vol`` to convert. Forecasts are always finite and > 0.

- ``RealizedVolForecaster``: trailing close-to-close realized vol (no model).
- ``ModelVolForecaster``: a registered volatility model, through anything
  with ``predict(batch) -> list[float]`` (a ``RegisteredModel``, a plain
  ``ModelServer``, or ``actors.model_server.ModelServerClient`` for the Ray
  actor). The features come from ``ml.features.build_features``, the same
  function training used.
- ``ServedVolForecaster``: a ``ModelVolForecaster`` through a named
  ``ModelServerActor``, found on first use and again after any failure (so a
  restarted server is picked up); building one touches no Ray.

A strategy keeps a ``CandleWindow`` of its closed bars and names its
forecaster in its params (``ForecasterSpec``, built by ``build_forecaster``).
``BarWindowForecaster`` adapts any of them to a strategy that passes closes
only (``strategies.vol_scaled``), failing closed to NaN.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tradetree.core import Bar
from tradetree.ml.data import CANDLE_COLUMNS
from tradetree.ml.errors import DataError, InsufficientHistory, MLError
from tradetree.ml.features import FeatureInputs
from tradetree.ml.registry import ModelRegistry
from tradetree.ml.targets import trailing_log_vol

log = logging.getLogger(__name__)

__all__ = [
    "VolatilityForecaster",
    "Predictor",
    "RealizedVolForecaster",
    "ModelVolForecaster",
    "annualized_vol",
    "CandleWindow",
    "ForecasterSpec",
    "build_forecaster",
    "BarWindowForecaster",
    "ServedVolForecaster",
    "set_server_connector",
]

_YEAR_MS = 365 * 86_400_000


def annualized_vol(per_bar_vol: float, interval_ms: int) -> float:
    """Per-bar volatility scaled to a 365-day year (crypto trades every day)."""
    return per_bar_vol * math.sqrt(_YEAR_MS / interval_ms)


@runtime_checkable
class VolatilityForecaster(Protocol):
    """Forecasts per-bar volatility from candles (see the module doc for units)."""

    horizon_bars: int
    min_history_bars: int

    def forecast(self, candles: pd.DataFrame | FeatureInputs) -> float:
        """Per-bar vol over the next ``horizon_bars`` bars, as of the last bar's close.

        Raises:
            InsufficientHistory: fewer than ``min_history_bars`` candles.
        """
        ...


class Predictor(Protocol):
    def predict(self, batch: list[Any]) -> list[float]: ...


class RealizedVolForecaster:
    """Trailing realized volatility over ``window_bars`` bars, taken as the forecast."""

    def __init__(self, window_bars: int, *, horizon_bars: int | None = None) -> None:
        if window_bars < 1:
            raise ValueError("window_bars must be >= 1")
        self.window_bars = window_bars
        self.horizon_bars = horizon_bars or window_bars
        self.min_history_bars = window_bars + 1

    def forecast(self, candles: pd.DataFrame | FeatureInputs) -> float:
        frame = candles.candles if isinstance(candles, FeatureInputs) else candles
        if len(frame) < self.min_history_bars:
            raise InsufficientHistory(f"need {self.min_history_bars} bars, got {len(frame)}")
        tail = frame.iloc[-self.min_history_bars :]
        return float(np.exp(trailing_log_vol(tail, self.window_bars)[-1]))


class ModelVolForecaster:
    """Forecasts with a registered volatility model: ``exp`` of its ln-vol prediction."""

    def __init__(self, predictor: Predictor, *, horizon_bars: int, min_history_bars: int) -> None:
        self._predictor = predictor
        self.horizon_bars = horizon_bars
        self.min_history_bars = min_history_bars

    @classmethod
    def from_registry(
        cls, root: str | Path, name: str, version: str | None = None, *, require_approved: bool = True
    ) -> ModelVolForecaster:
        """Load ``name``/``version`` from the registry at ``root`` and forecast with it in-process.

        Raises:
            ModelNotFound, ModelIntegrityError, ModelNotApproved: from the registry.
            MLError: the model is not a volatility model.
        """
        model = ModelRegistry(root).load(name, version, require_approved=require_approved)
        if model.record.task != "volatility":
            raise MLError(f"model {name} {model.record.version} is a {model.record.task} model, not volatility")
        return cls(model, horizon_bars=model.record.horizon_bars, min_history_bars=model.min_history_bars)

    @classmethod
    def from_server(cls, server: Any) -> ModelVolForecaster:
        """Forecast through a started model server (anything with ``describe()`` and
        ``predict(batch)``: ``ModelServer`` or ``ModelServerClient``).

        Raises:
            MLError: the served model is not a volatility model.
        """
        info = server.describe()
        if info["task"] != "volatility":
            raise MLError(f"served model {info['name']} {info['version']} is a {info['task']} model, not volatility")
        return cls(server, horizon_bars=int(info["horizon_bars"]), min_history_bars=int(info["min_history_bars"]))

    def forecast(self, candles: pd.DataFrame | FeatureInputs) -> float:
        frame = candles.candles if isinstance(candles, FeatureInputs) else candles
        if len(frame) < self.min_history_bars:
            raise InsufficientHistory(f"need {self.min_history_bars} bars, got {len(frame)}")
        (log_vol,) = self._predictor.predict([candles])
        return float(math.exp(log_vol))


class CandleWindow:
    """The last ``max_bars`` closed bars of one instrument as a candle frame, for
    strategies that receive ``core.types.Bar`` events and forecast from frames.

    ``append`` accepts bars in time order; a bar with the same open time as the
    last one replaces it (a corrected bar), an older one raises ``DataError``.
    """

    def __init__(self, max_bars: int) -> None:
        if max_bars < 2:
            raise ValueError("max_bars must be >= 2")
        self.max_bars = max_bars
        self._rows: deque[tuple[int, float, float, float, float, float]] = deque(maxlen=max_bars)

    def __len__(self) -> int:
        return len(self._rows)

    def grow(self, max_bars: int) -> None:
        """Keep up to ``max_bars`` bars from now on (never shrinks; the bars held stay)."""
        if max_bars > self.max_bars:
            self.max_bars = max_bars
            self._rows = deque(self._rows, maxlen=max_bars)

    def append(self, bar: Bar) -> None:
        row = (bar.ts_ms, float(bar.open), float(bar.high), float(bar.low), float(bar.close), float(bar.volume))
        if self._rows and bar.ts_ms <= self._rows[-1][0]:
            if bar.ts_ms < self._rows[-1][0]:
                raise DataError(f"bar {bar.ts_ms} is older than the last one ({self._rows[-1][0]})")
            self._rows.pop()
        self._rows.append(row)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(list(self._rows), columns=list(CANDLE_COLUMNS)).astype({"timestamp_ms": np.int64})


class ForecasterSpec(BaseModel):
    """How a strategy config names its volatility forecaster (e.g. under ``params.vol_forecaster``).

    - ``kind: realized`` with ``window_bars``: trailing realized vol;
    - ``kind: model`` with ``registry_root``, ``name`` (and ``version``): in-process model;
    - ``kind: server`` with ``actor_name`` (and ``ray_namespace``): a running ``ModelServerActor``.
      In an engine config, ``name`` alone names an entry of its ``models:`` block; the
      engine tree fills in ``actor_name`` and ``ray_namespace`` when it starts.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["realized", "model", "server"]
    window_bars: int | None = Field(default=None, ge=1)
    registry_root: str | None = None
    name: str | None = None
    version: str | None = None
    require_approved: bool = True
    actor_name: str | None = None
    ray_namespace: str | None = None
    timeout_secs: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _complete(self) -> ForecasterSpec:
        needed = {"realized": ("window_bars",), "model": ("registry_root", "name"), "server": ()}[self.kind]
        missing = [f for f in needed if getattr(self, f) is None]
        if self.kind == "server" and self.actor_name is None and self.name is None:
            missing = ["name (a served model of the engine) or actor_name"]
        if missing:
            raise ValueError(f"forecaster kind {self.kind!r} needs {missing}")
        return self


def build_forecaster(spec: ForecasterSpec | Mapping[str, Any]) -> VolatilityForecaster:
    """The forecaster ``spec`` describes.

    ``server`` gives a ``ServedVolForecaster``: nothing is resolved here; a
    server that is missing or down makes its ``forecast`` raise instead.

    Raises:
        pydantic.ValidationError: an incomplete or unknown spec.
        ModelNotFound, ModelIntegrityError, ModelNotApproved, MLError: as ``from_registry``.
        MLError: ``server`` without ``actor_name`` (only an engine tree resolves ``name`` to its actor).
    """
    spec = spec if isinstance(spec, ForecasterSpec) else ForecasterSpec.model_validate(dict(spec))
    if spec.kind == "realized":
        return RealizedVolForecaster(int(spec.window_bars or 0))
    if spec.kind == "model":
        return ModelVolForecaster.from_registry(
            str(spec.registry_root), str(spec.name), spec.version, require_approved=spec.require_approved
        )
    if spec.actor_name is None:
        raise MLError(
            f"forecaster kind 'server' names model {spec.name!r} but no actor_name: only the engine tree "
            "resolves a served model (from its models: block); elsewhere use kind 'model' with registry_root"
        )
    return ServedVolForecaster(spec.actor_name, ray_namespace=spec.ray_namespace, timeout_secs=spec.timeout_secs)


ServerConnector = Callable[[str, str | None, float], Any]
_server_connector: ServerConnector | None = None


def set_server_connector(connect: ServerConnector | None) -> None:
    """Register how a ``ServedVolForecaster`` reaches its server by actor name.

    ``ml`` sits below the actor layer and never imports it; the actor that hosts
    strategies registers ``tradetree.actors.model_server.connect_model_server``
    before it builds them. ``None`` unregisters (tests).
    """
    global _server_connector
    _server_connector = connect


def _connect_registered(actor_name: str, ray_namespace: str | None, timeout_secs: float) -> Any:
    if _server_connector is None:
        raise MLError(f"model server {actor_name}: no server connector registered here "
                      "(only the engine's strategy host reaches served models; a backtest? use kind 'model')")
    return _server_connector(actor_name, ray_namespace, timeout_secs)


class ServedVolForecaster:
    """A ``ModelVolForecaster`` through the ``ModelServerActor`` named ``actor_name``.

    The actor is looked up (and asked to ``describe`` its model) on the first
    ``forecast``, and again on the next one after any failure, so a server the
    supervisor restarted, or restarted on a new model version, is picked up.
    ``horizon_bars`` and ``min_history_bars`` are 0 until the model is known.
    ``forecast`` raises whatever the lookup or the server raises (actor not
    found, timed out, not serving, not a volatility model): wrap it in
    ``BarWindowForecaster`` to fail closed to NaN.

    ``connect(actor_name, ray_namespace, timeout_secs)`` returns the server
    (``describe`` + ``predict``); the default goes through Ray.
    """

    def __init__(self, actor_name: str, *, ray_namespace: str | None = None, timeout_secs: float = 10.0,
                 connect: Any = None) -> None:
        self.actor_name = actor_name
        self.ray_namespace = ray_namespace
        self.timeout_secs = timeout_secs
        self._connect = connect or _connect_registered
        self._inner: ModelVolForecaster | None = None
        self.horizon_bars = 0
        self.min_history_bars = 0
        self.connects = 0

    def _forecaster(self) -> ModelVolForecaster:
        if self._inner is None:
            server = self._connect(self.actor_name, self.ray_namespace, self.timeout_secs)
            inner = ModelVolForecaster.from_server(server)
            self.connects += 1
            self._inner = inner
            self.horizon_bars, self.min_history_bars = inner.horizon_bars, inner.min_history_bars
        return self._inner

    def forecast(self, candles: pd.DataFrame | FeatureInputs) -> float:
        try:
            return self._forecaster().forecast(candles)
        except InsufficientHistory:
            raise  # our window, not the server: keep the connection
        except Exception:
            self._inner = None  # resolve again next time: the server may have been restarted
            raise


class BarWindowForecaster:
    """Adapts a candle-based forecaster to strategies that hand over closes only
    (``strategies.vol_scaled.VolatilityForecaster``: ``forecast(closes) -> float``,
    NaN meaning "no forecast", never raising for lack of history).

    Feed it every closed bar with ``observe(bar)`` before the strategy asks;
    ``forecast(closes)`` then forecasts from those bars. It fails closed to NaN
    (the strategy does not trade that bar) when the forecaster cannot answer
    (too little history, a feature unavailable, the model server down or
    stopped) or when ``closes[-1]`` is not the last observed bar's close, i.e.
    the bars fed and the strategy's view disagree.
    """

    def __init__(self, forecaster: VolatilityForecaster, *, max_bars: int | None = None) -> None:
        self.forecaster = forecaster
        self.window = CandleWindow(max(max_bars or 0, forecaster.min_history_bars, 2))
        self.failures = 0
        self.last_error = ""

    def observe(self, bar: Bar) -> None:
        self.window.append(bar)

    def forecast(self, closes: Sequence[float] | None = None) -> float:
        if len(self.window) == 0:
            return math.nan
        frame = self.window.frame()
        if closes is not None and len(closes) and float(closes[-1]) != float(frame["close"].iloc[-1]):
            self.last_error = f"closes end at {closes[-1]}, the last observed bar closed at {frame['close'].iloc[-1]}"
            return math.nan
        if len(frame) < self.forecaster.min_history_bars:
            return math.nan
        try:
            value = float(self.forecaster.forecast(frame))
        except InsufficientHistory:
            value = math.nan  # still warming up (a served model's history need is known only once asked)
        except Exception as exc:  # no forecast means no new risk; the error is kept for stats
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("volatility forecast unavailable: %s", self.last_error)
            value = math.nan
        # A forecaster that learns its history need late (ServedVolForecaster) gets a window that fits it.
        self.window.grow(self.forecaster.min_history_bars)
        return value if math.isfinite(value) and value > 0 else math.nan
