"""The whole engine's configuration: one YAML file plus the strategy files it names.

``EngineConfig`` assembles the shared pieces (``core.config``) with the
simulator, risk, kill switch, reconciler and alert settings. Every model is
frozen and rejects unknown fields; ``load_engine_config`` turns any problem
into a ``ConfigError`` naming the file and the dotted field.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from actors.alerter import AlerterConfig
from core.config import (
    RedisConfig,
    StrategyConfig,
    VenueConfig,
    format_validation_error,
    load_strategy_config,
    read_yaml,
)
from core.errors import ConfigError
from execution.reconciliation import ReconcilerConfig
from risk.config import RiskConfig
from risk.kill_switch import KillSwitchConfig
from sim.config import SimulatorConfig

__all__ = ["EngineConfig", "MetricsConfig", "SupervisionConfig", "load_engine_config", "check_strategies"]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class SupervisionConfig(BaseModel):
    """Restart intensities of the tree's supervisors and the venue children's start gate.

    A supervisor tolerates ``*_intensity`` restarts of its children within
    ``*_period_secs``; one more escalates (the root: SAFE MODE). A venue's
    gateway or reconciler that is (re)started must pass its probes within
    ``venue_startup_timeout_secs`` or the start counts as failed.
    """

    model_config = _FROZEN

    root_intensity: int = Field(default=3, ge=0)
    root_period_secs: float = Field(default=60.0, gt=0)
    venue_intensity: int = Field(default=5, ge=0)
    venue_period_secs: float = Field(default=60.0, gt=0)
    strategy_intensity: int = Field(default=10, ge=0)
    strategy_period_secs: float = Field(default=60.0, gt=0)
    venue_startup_timeout_secs: float = Field(default=60.0, gt=0)


class MetricsConfig(BaseModel):
    """The tree's Prometheus endpoint: ``http://{host}:{port}/metrics``, served by the MetricsExporter actor.

    Off unless enabled (``configs/paper.yaml`` enables it for ``make run``), so
    trees started by tests bind no fixed port. The exporter re-reads the tree
    every ``refresh_secs``; a scrape returns the latest snapshot and never waits
    on an actor. Each actor or Redis read is bounded by ``call_timeout_secs``.
    ``port: 0`` binds a free port (the runner reports which). Keep ``host`` on
    loopback unless the network in front of it is trusted: the endpoint has no
    authentication (it exports no secret, but positions and P&L).
    """

    model_config = _FROZEN

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=9464, ge=0, le=65535)
    refresh_secs: float = Field(default=5.0, gt=0)
    call_timeout_secs: float = Field(default=3.0, gt=0)


class EngineConfig(BaseModel):
    """The whole tree: Redis, venues, strategies and the embedded simulator."""

    model_config = _FROZEN

    name: str = "tradetree"
    redis: RedisConfig = RedisConfig()
    venues: tuple[VenueConfig, ...] = Field(min_length=1)
    strategies: tuple[StrategyConfig, ...] = ()
    strategy_files: tuple[Path, ...] = ()  # relative to the engine config's folder
    simulator: SimulatorConfig = SimulatorConfig()
    risk: RiskConfig = RiskConfig()
    reconciler: ReconcilerConfig = ReconcilerConfig()
    alerts: AlerterConfig = AlerterConfig()
    # Wind-down clips in venue units (contracts for swaps): 100 BTC-USDT-SWAP contracts = 1 BTC.
    kill_switch: KillSwitchConfig = KillSwitchConfig(max_clip_size=Decimal("100"))
    supervision: SupervisionConfig = SupervisionConfig()
    metrics: MetricsConfig = MetricsConfig()
    heartbeat_interval_secs: float = Field(default=1.0, gt=0)
    # The venue's dead-man switch (OKX cancel-all-after): if the engine stops re-arming it for this
    # long, the venue cancels our open orders. 0 = off; else OKX's bounds, 10..120 s.
    dead_man_switch_secs: int = Field(default=60, ge=0, le=120)
    dashboard_port: int = 8265

    @model_validator(mode="after")
    def _check_refs(self) -> "EngineConfig":
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
        return self

    def venue(self, name: str) -> VenueConfig:
        for v in self.venues:
            if v.name == name:
                return v
        raise KeyError(name)


def load_engine_config(path: str | Path) -> EngineConfig:
    """Load an engine config and the strategy files it names.

    Raises:
        ConfigError: unreadable file, bad YAML, or a field that fails
            validation; the message names the file and the field.
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
    extra = [load_strategy_config(path.parent / f).model_dump(by_alias=True) for f in files]
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


def check_strategies(config: EngineConfig) -> None:
    """Build every configured strategy once, so bad classes or params fail at start.

    Raises:
        ConfigError: unknown class, or params that fail validation (named).
    """
    from strategies.registry import build_strategy

    for strategy in config.strategies:
        build_strategy(strategy)
