"""ModelServer: serves one registered CatBoost model to strategies, batched.

``ModelServer`` is plain Python (testable without Ray); ``ModelServerActor``
is the thin Ray shell, one line per method; ``ModelServerClient`` wraps an
actor handle with the same ``predict`` / ``describe`` calls so a forecaster
can use either.

Lifecycle: UNSTARTED -> SERVING (``start``) -> STOPPED (``stop``); ``start``
again reloads. Serving fails closed: by default only a model that passed
its walk-forward gate is loaded, its file is checked against the registered
sha256, and a batch with any unusable item raises rather than answering in part.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import ray

from tradetree.core import Clock, ComponentState, HealthReport, ProbeResult, WallClock, model_server_id
from tradetree.ml import MODEL_FILE, MLError, ModelRegistry, ModelServerStateError, RegisteredModel, file_sha256
from tradetree.supervisor import ActorClient
from tradetree.telemetry import MODEL_SERVER_STATE_LABELS

__all__ = ["ModelServer", "ModelServerActor", "ModelServerClient", "connect_model_server"]

log = logging.getLogger(__name__)


class ModelServer:
    """Loads ``name`` (``version``, default latest) from the registry at ``registry_root``.

    ``predict(batch)`` takes items that are feature rows (mappings of feature
    name to value), candle frames, or ``ml.features.FeatureInputs`` (the last
    bar of each is predicted, with the training feature function), and returns
    one float per item in the model's units: ln per-bar volatility for a
    volatility model, P(up) for a direction model.
    """

    def __init__(
        self,
        registry_root: str | Path,
        name: str,
        version: str | None = None,
        *,
        require_approved: bool = True,
        clock: Clock | None = None,
    ) -> None:
        self._registry = ModelRegistry(registry_root)
        self.name = name
        self._requested_version = version
        self._require_approved = require_approved
        self._clock = clock or WallClock()
        self._model: RegisteredModel | None = None
        self.state = ComponentState.NEW
        self.predictions_served = 0
        self.batches_failed = 0

    def start(self) -> None:
        """Load (or reload) the model and start serving.

        Raises:
            ModelNotFound, ModelIntegrityError, ModelNotApproved: from the registry;
            the server stays out of SERVING.
        """
        self._model = self._registry.load(self.name, self._requested_version, require_approved=self._require_approved)
        self.state = ComponentState.RUNNING
        log.info("serving model %s %s", self.name, self._model.record.version)

    def stop(self) -> None:
        """Stop serving and drop the model. Idempotent."""
        self._model = None
        self.state = ComponentState.STOPPED

    def _serving(self) -> RegisteredModel:
        if self.state is not ComponentState.RUNNING or self._model is None:
            raise ModelServerStateError(f"ModelServer {self.name} is {self._published_state()}: call start() before predict()")
        return self._model

    def predict(self, batch: list[Any]) -> list[float]:
        """One prediction per item, in order (see the class doc).

        Raises:
            ModelServerStateError: not serving.
            InsufficientHistory, FeatureUnavailable, DataError, KeyError, TypeError:
                an item cannot be turned into a complete feature row; nothing is returned.
        """
        model = self._serving()
        try:
            out = model.predict(list(batch))
        except Exception:
            self.batches_failed += 1
            raise
        self.predictions_served += len(out)
        return out

    def describe(self) -> dict[str, Any]:
        """Name, version, task, horizon, bar interval, history needed and features of the served model.

        Raises:
            ModelServerStateError: not serving.
        """
        model = self._serving()
        record = model.record
        return {
            "name": record.name,
            "version": record.version,
            "task": record.task,
            "horizon_bars": record.horizon_bars,
            "interval_ms": record.interval_ms,
            "min_history_bars": model.min_history_bars,
            "features": list(record.features),
            "approved": record.approved,
            "created_at": record.meta.get("created_at"),
        }

    def check_health(self) -> HealthReport:
        """Probes: the server is serving; the model file still matches its sha256;
        the model reproduces the canary prediction recorded at registration."""
        probes = [ProbeResult(name="serving", ok=self.state is ComponentState.RUNNING, detail=self._published_state())]
        model = self._model
        if model is not None:
            path = model.record.path / MODEL_FILE
            try:
                intact = file_sha256(path) == model.record.meta.get("model_sha256")
                detail = "" if intact else f"{path} changed since registration"
            except OSError as exc:
                intact, detail = False, f"{path}: {exc}"
            probes.append(ProbeResult(name="model_file_integrity", ok=intact, detail=detail))
            canary = model.record.meta.get("canary", {})
            try:
                got = model.predict([canary["features"]])[0]
                ok = got == canary["prediction"]
                detail = "" if ok else f"canary predicts {got!r}, registered {canary['prediction']!r}"
            except Exception as exc:  # a probe reports failure, it never raises
                ok, detail = False, f"canary prediction failed: {type(exc).__name__}: {exc}"
            probes.append(ProbeResult(name="canary_prediction", ok=ok, detail=detail))
        return HealthReport(component=model_server_id(self.name), ts_ms=self._clock.now_ms(), probes=tuple(probes))

    def _published_state(self) -> str:
        return MODEL_SERVER_STATE_LABELS.get(self.state, self.state.value)

    def stats(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self._published_state(),
            "version": None if self._model is None else self._model.record.version,
            "predictions_served": self.predictions_served,
            "batches_failed": self.batches_failed,
        }


class _ModelServerShell:
    """Ray shell around ``ModelServer``: same constructor, one-line delegation."""

    def __init__(self, registry_root: str, name: str, version: str | None = None, *, require_approved: bool = True) -> None:
        self._impl = ModelServer(registry_root, name, version, require_approved=require_approved)

    async def start(self) -> None:
        self._impl.start()

    async def stop(self) -> None:
        self._impl.stop()

    async def check_health(self) -> HealthReport:
        return self._impl.check_health()

    async def predict(self, batch: list[Any]) -> list[float]:
        return self._impl.predict(batch)

    async def describe(self) -> dict[str, Any]:
        return self._impl.describe()

    async def stats(self) -> dict[str, Any]:
        return self._impl.stats()


ModelServerActor = ray.remote(num_cpus=0, max_restarts=0)(_ModelServerShell)


def connect_model_server(actor_name: str, ray_namespace: str | None, timeout_secs: float) -> ModelServerClient:
    """A client of the ``ModelServerActor`` named ``actor_name``: the connector
    the strategy host registers for ``ml``'s served forecasters.

    Raises:
        MLError: Ray is not running in this process. The client's calls raise
        ``ActorNotFound`` / ``ActorDied`` / ``CallTimeout`` as ``ActorClient`` does.
    """
    if not ray.is_initialized():
        raise MLError(f"model server {actor_name}: Ray is not running here (a backtest? use kind 'model')")
    return ModelServerClient(actor_name, namespace=ray_namespace, timeout_secs=timeout_secs)


class ModelServerClient:
    """``predict`` / ``describe`` on the ``ModelServerActor`` named ``actor_name``, blocking (for
    forecasters) or awaitable (``apredict``, for code on an event loop), through ``ActorClient``:
    every call, the awaitable one included, waits at most ``timeout_secs``."""

    def __init__(self, actor_name: str, *, namespace: str | None = None, timeout_secs: float = 10.0,
                 client: ActorClient | None = None) -> None:
        self.actor_name = actor_name
        self._actors = client or ActorClient(namespace, timeout_secs=timeout_secs)

    def predict(self, batch: list[Any]) -> list[float]:
        return self._actors.call_sync(self.actor_name, "predict", batch)

    async def apredict(self, batch: list[Any]) -> list[float]:
        return await self._actors.call(self.actor_name, "predict", batch)

    def describe(self) -> dict[str, Any]:
        return self._actors.call_sync(self.actor_name, "describe")
