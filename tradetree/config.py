"""The whole engine's configuration: one YAML file plus the strategy files it names.

``EngineConfig`` assembles the shared pieces (``core.config``) with the
simulator, risk, kill switch, reconciler and alert settings. Every model is
frozen and rejects unknown fields; ``load_engine_config`` turns any problem
into a ``ConfigError`` naming the file and the dotted field.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tradetree.core import (
    ConfigError,
    RedisConfig,
    StrategyConfig,
    VenueConfig,
    format_validation_error,
    load_strategy_config,
    model_server_id,
    read_yaml,
)
from tradetree.execution import ReconcilerConfig
from tradetree.risk import KillSwitchConfig, RiskConfig
from tradetree.sim import SimulatorConfig
from tradetree.telemetry import AlerterConfig, MetricsConfig

__all__ = [
    "EngineConfig",
    "MetricsConfig",
    "RayJobConfig",
    "ServedModelConfig",
    "SupervisionConfig",
    "load_engine_config",
    "check_strategies",
    "served_model_refs",
    "resolve_served_models",
]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class SupervisionConfig(BaseModel):
    """Restart intensities of the tree's supervisors and the venue children's start gate.

    A supervisor tolerates ``*_intensity`` restarts of its children within
    ``*_period_secs``; one more escalates (the root: SAFE MODE). A venue's
    gateway or reconciler that is (re)started must pass its probes within
    ``venue_startup_timeout_secs`` or the start counts as failed; every other
    child but a model server (alerter, metrics, risk monitor, strategy hosts)
    within ``child_startup_timeout_secs``. A supervisor's own bound is the sum
    of its children's (they start one after the other).
    """

    model_config = _FROZEN

    root_intensity: int = Field(default=3, ge=0)
    root_period_secs: float = Field(default=60.0, gt=0)
    # Ray resources the root supervisor needs (e.g. {"tradetree_root": 1} set on two or more nodes
    # with `ray start --resources`): where Ray may place and re-create it. Empty: anywhere.
    root_resources: dict[str, float] = Field(default_factory=dict)
    venue_intensity: int = Field(default=5, ge=0)
    venue_period_secs: float = Field(default=60.0, gt=0)
    strategy_intensity: int = Field(default=10, ge=0)
    strategy_period_secs: float = Field(default=60.0, gt=0)
    # The ServiceSupervisor (alerter, metrics exporter) never escalates: past this it alerts on the
    # crash loop and restarts at the child's longest backoff. Its own knob, not the root's: a
    # flapping exporter says nothing about whether trading is safe.
    service_intensity: int = Field(default=5, ge=0)
    service_period_secs: float = Field(default=60.0, gt=0)
    venue_startup_timeout_secs: float = Field(default=60.0, gt=0)
    child_startup_timeout_secs: float = Field(default=30.0, gt=0)


_SECRET_LIKE = re.compile(r"KEY|SECRET|PASS|TOKEN|CREDENTIAL|WEBHOOK|AUTH", re.IGNORECASE)


class RayJobConfig(BaseModel):
    """What the tree's Ray job carries to every node: Ray's own ``runtime_env`` (``working_dir``,
    ``pip``, ``env_vars``, ...), given to ``ray.init`` so every actor of the tree, and every actor
    Ray re-creates on another node, runs in it.

    No secret goes here: Ray shows a job's runtime_env on its dashboard and in ``ray job status``.
    An ``env_vars`` name that looks like one is refused; the actors read secrets on their node from
    the sources the config names (``redis.password_file``, ``venues[].secrets_file``,
    ``alerts.slack_webhook_url_file`` or their env vars).
    """

    model_config = _FROZEN

    runtime_env: dict[str, Any] = Field(default_factory=dict)

    @field_validator("runtime_env")
    @classmethod
    def _no_secrets(cls, env: dict[str, Any]) -> dict[str, Any]:
        from ray.runtime_env import RuntimeEnv

        unknown = sorted(set(env) - set(RuntimeEnv.known_fields))
        if unknown:
            raise ValueError(f"unknown runtime_env field(s) {unknown} (Ray knows {sorted(RuntimeEnv.known_fields)})")
        env_vars = env.get("env_vars") or {}
        if not isinstance(env_vars, dict) or not all(isinstance(v, str) for v in env_vars.values()):
            raise ValueError("runtime_env.env_vars: a mapping of names to string values")
        secret_like = sorted(k for k in env_vars if _SECRET_LIKE.search(k))
        if secret_like:
            raise ValueError(f"runtime_env.env_vars {secret_like} look like secrets, and Ray shows a job's "
                             "runtime_env on its dashboard: set them on the nodes (e.g. from a Kubernetes "
                             "Secret) and name them in the config (redis.password_env, venues[].api_key_env, ...)")
        return env


class ServedModelConfig(BaseModel):
    """One registered model the tree serves, as the supervised child ``ModelServer[<name>]``.

    ``version`` None serves the latest version at start. ``registry_root`` must
    exist when the config is loaded (a relative one is taken from the engine
    config's folder by ``load_engine_config``). Unless ``require_approved`` is
    false, only a model that passed its walk-forward gate is served.
    Strategies name it with ``vol_forecaster: {kind: server, name: <name>}``.
    """

    model_config = _FROZEN

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    version: str | None = Field(default=None, pattern=r"^v[0-9]+$")
    registry_root: Path
    require_approved: bool = True

    @field_validator("registry_root")
    @classmethod
    def _exists(cls, root: Path) -> Path:
        if not root.is_dir():
            raise ValueError(f"registry_root {str(root)!r} is not a directory (train and register a model first: "
                             "tradetree ml train --registry ...)")
        return root


def served_model_refs(strategy: StrategyConfig) -> list[tuple[str, str]]:
    """``(params field, model name)`` for every served model (``kind: server`` with a ``name``
    and no ``actor_name``) the strategy's params name. Unknown classes name none."""
    from tradetree.strategies import STRATEGY_CLASSES

    cls = STRATEGY_CLASSES.get(strategy.class_name)
    refs = []
    for field in getattr(cls, "forecaster_params", ()):
        spec = strategy.params.get(field)
        if isinstance(spec, Mapping) and spec.get("kind") == "server" and spec.get("actor_name") is None \
                and isinstance(spec.get("name"), str):
            refs.append((field, spec["name"]))
    return refs


def _unknown_served_models(strategy: StrategyConfig, known: Sequence[str]) -> list[str]:
    return [f"params.{field}.name: served model {name!r} is not in the engine config's models: (have {list(known)})"
            for field, name in served_model_refs(strategy) if name not in known]


def resolve_served_models(strategy: StrategyConfig, *, ray_namespace: str) -> StrategyConfig:
    """``strategy`` with each served model it names pointed at the tree's actor
    (``actor_name`` = ``model_server_id(name)``, ``ray_namespace``). Others unchanged."""
    refs = served_model_refs(strategy)
    if not refs:
        return strategy
    params = dict(strategy.params)
    for field, name in refs:
        params[field] = {**params[field], "actor_name": model_server_id(name), "ray_namespace": ray_namespace}
    return strategy.model_copy(update={"params": params})


class EngineConfig(BaseModel):
    """The whole tree: Redis, venues, strategies and the embedded simulator."""

    model_config = _FROZEN

    name: str = "tradetree"
    redis: RedisConfig = RedisConfig()
    venues: tuple[VenueConfig, ...] = Field(min_length=1)
    strategies: tuple[StrategyConfig, ...] = ()
    strategy_files: tuple[Path, ...] = ()  # relative to the engine config's folder
    models: tuple[ServedModelConfig, ...] = ()  # served by ModelServer[<name>] children of the tree
    simulator: SimulatorConfig = SimulatorConfig()
    risk: RiskConfig = RiskConfig()
    reconciler: ReconcilerConfig = ReconcilerConfig()
    alerts: AlerterConfig = AlerterConfig()
    # Wind-down clips in venue units (contracts for swaps): 100 BTC-USDT-SWAP contracts = 1 BTC.
    kill_switch: KillSwitchConfig = KillSwitchConfig(max_clip_size=Decimal("100"))
    supervision: SupervisionConfig = SupervisionConfig()
    metrics: MetricsConfig = MetricsConfig()
    ray: RayJobConfig = RayJobConfig()
    heartbeat_interval_secs: float = Field(default=1.0, gt=0)
    # The venue's dead-man switch (OKX cancel-all-after): if the engine stops re-arming it for this
    # long, the venue cancels our open orders. 0 = off; else OKX's bounds, 10..120 s.
    dead_man_switch_secs: int = Field(default=60, ge=0, le=120)
    dashboard_port: int = 8265
    # The embedded Redis's append-only file, the engine lock and engine.json (how to attach) live
    # here: two engines on one host need two state dirs (and two sets of ports). Unset:
    # $TRADETREE_STATE_DIR, else .tradetree in the working directory.
    state_dir: Path = Field(default_factory=lambda: Path(os.environ.get("TRADETREE_STATE_DIR") or ".tradetree"))

    @model_validator(mode="after")
    def _check_refs(self) -> EngineConfig:
        if 0 < self.dead_man_switch_secs < 10:
            raise ValueError(f"dead_man_switch_secs must be 0 (off) or 10..120, got {self.dead_man_switch_secs}")
        names = [v.name for v in self.venues]
        if len(set(names)) != len(names):
            raise ValueError(f"venue names must be unique, got {names}")
        for i, s in enumerate(self.strategies):
            if s.venue not in names:
                raise ValueError(f"strategies.{i}.venue: unknown venue {s.venue!r} (have {names})")
        ids = [s.id for s in self.strategies]
        if len(set(ids)) != len(ids):
            raise ValueError(f"strategy ids must be unique, got {ids}")
        models = [m.name for m in self.models]
        if len(set(models)) != len(models):
            raise ValueError(f"models: names must be unique, got {models}")
        for i, s in enumerate(self.strategies):
            for problem in _unknown_served_models(s, models):
                raise ValueError(f"strategies.{i} ({s.id}): {problem}")
        return self

    def venue(self, name: str) -> VenueConfig:
        for v in self.venues:
            if v.name == name:
                return v
        raise KeyError(name)


def load_engine_config(path: str | Path) -> EngineConfig:
    """Load an engine config and the strategy files it names.

    Relative ``strategy_files`` and ``models[].registry_root`` are taken from
    the engine config's folder.

    Raises:
        ConfigError: unreadable file, bad YAML, or a field that fails
            validation; the message names the file and the field (for a
            strategy file naming a served model not in ``models:``, that file).
    """
    path = Path(path)
    raw = read_yaml(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    files = raw.get("strategy_files") or []
    if not isinstance(files, list):
        raise ConfigError(f"{path}: strategy_files: expected a list of paths")
    raw = _models_relative_to(raw, path.parent)
    known = _raw_model_names(raw)
    extra = []
    for f in files:
        strategy = load_strategy_config(path.parent / f)
        if known is not None:
            for problem in _unknown_served_models(strategy, known):
                raise ConfigError(f"{path.parent / f}: {problem}")
        extra.append(strategy.model_dump(by_alias=True))
    if extra:
        raw = {**raw, "strategies": list(raw.get("strategies") or []) + extra}
    try:
        config = EngineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source=str(path))) from None
    try:
        check_strategies(config)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return config


def _models_relative_to(raw: dict[str, Any], folder: Path) -> dict[str, Any]:
    models = raw.get("models")
    if not isinstance(models, list):
        return raw  # absent, or malformed: validation names it
    fixed = []
    for m in models:
        root = m.get("registry_root") if isinstance(m, dict) else None
        if isinstance(root, str) and not Path(root).is_absolute():
            m = {**m, "registry_root": str(folder / root)}
        fixed.append(m)
    return {**raw, "models": fixed}


def _raw_model_names(raw: dict[str, Any]) -> list[str] | None:
    """Names in a raw ``models:`` block; None when it is malformed (validation reports it)."""
    models = raw.get("models") or []
    if not isinstance(models, list) or not all(isinstance(m, dict) for m in models):
        return None
    return [m.get("name") for m in models]


def check_strategies(config: EngineConfig) -> None:
    """Build every configured strategy once, so bad classes or params fail at start.

    Served models are resolved as the tree will resolve them (nothing is
    contacted: the server is looked up on a strategy's first forecast).

    Raises:
        ConfigError: unknown class, or params that fail validation (named).
    """
    from tradetree.strategies import build_strategy

    for strategy in config.strategies:
        build_strategy(resolve_served_models(strategy, ray_namespace=config.name))
