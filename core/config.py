"""Configuration pieces shared by every layer: Redis, venues, strategies.

The whole engine's config (``EngineConfig``) lives in ``tradetree.config``,
which assembles these with the simulator, risk, reconciler and alert settings.

Every model is frozen and rejects unknown fields; units are in field names.
``load_strategy_config`` (and ``tradetree.config.load_engine_config``) turn any problem into a
``ConfigError`` whose message names the file and the dotted field path.

Credentials never live in config files: a venue names the environment
variables (or a secrets file) to read them from, and they are held as
``SecretStr`` so they do not leak through ``repr``, logs or ``model_dump``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from tradetree.core.errors import ConfigError

__all__ = [
    "RedisConfig",
    "ActorCallConfig",
    "VenueCredentials",
    "VenueConfig",
    "StrategyConfig",
    "load_strategy_config",
    "format_validation_error",
    "read_yaml",
]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class RedisConfig(BaseModel):
    """Where position truth lives.

    ``url=None`` means: ``$REDIS_URL`` if set, else the embedded Redis
    (a local ``redis-server`` when one is on PATH, else in-process fakeredis).
    """

    model_config = _FROZEN

    url: str | None = None
    namespace: str = Field(default="tradetree", pattern=r"^[A-Za-z0-9_.\-]+$")
    socket_timeout_secs: float = Field(default=2.0, gt=0)
    # Where every process of the tree reads the password when ``url`` carries none: a file (e.g. a
    # Kubernetes Secret mounted on every Ray pod) wins over the environment variable. The actors
    # read it themselves; it never travels as a Ray argument.
    password_file: Path | None = None
    password_env: str | None = "REDIS_PASSWORD"

    def url_here(self) -> str | None:
        """The URL this process (the driver, an operator's CLI) connects with: ``url``, else
        ``$REDIS_URL``, with the password from the sources above when it carries none. None: the
        embedded Redis. The tree's actors get a locator instead (``core.secrets``).

        Raises:
            ConfigError: a named source cannot be read.
        """
        from tradetree.core.embedded_redis import resolve_redis_url
        from tradetree.core.secrets import with_password_from_sources

        url = resolve_redis_url(self.url)
        if url is None:
            return None
        return with_password_from_sources(url, password_file=self.password_file, password_env=self.password_env)


class ActorCallConfig(BaseModel):
    """Calls to named actors (``supervisor.ActorClient``): the timeout a call gets unless it names its own.

    Every call has one; there is no way to wait forever on an actor.
    """

    model_config = _FROZEN

    call_timeout_secs: float = Field(default=10.0, gt=0)


class VenueCredentials(BaseModel):
    """API credentials, resolved from the environment or a secrets file."""

    model_config = _FROZEN

    api_key: SecretStr
    secret_key: SecretStr
    passphrase: SecretStr


class VenueConfig(BaseModel):
    """One venue connection.

    Leave ``rest_url`` and ``ws_url`` unset to trade against the embedded
    simulator. Point them at a standalone ``tradetree sim``, OKX demo trading
    or OKX itself with the same shape.
    """

    model_config = _FROZEN

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    kind: Literal["okx"] = "okx"
    rest_url: str | None = None
    ws_url: str | None = None  # base, e.g. ws://127.0.0.1:8443/ws/v5
    sandbox: bool = False  # OKX demo trading (x-simulated-trading header)
    api_key_env: str = "OKX_API_KEY"
    secret_key_env: str = "OKX_SECRET_KEY"
    passphrase_env: str = "OKX_PASSPHRASE"
    secrets_file: Path | None = None  # YAML with api_key / secret_key / passphrase
    instruments: tuple[str, ...] = ("BTC-USDT-SWAP",)
    http_timeout_secs: float = Field(default=10.0, gt=0)
    ws_reconnect_min_secs: float = Field(default=0.5, gt=0)
    ws_reconnect_max_secs: float = Field(default=30.0, gt=0)

    @property
    def uses_embedded_simulator(self) -> bool:
        return self.rest_url is None

    @model_validator(mode="after")
    def _urls_together(self) -> VenueConfig:
        if (self.rest_url is None) != (self.ws_url is None):
            raise ValueError("rest_url and ws_url must be given together (or both left unset)")
        return self

    def resolve_credentials(self, environ: dict[str, str] | None = None) -> VenueCredentials:
        """Read credentials from ``secrets_file`` if set, else from the environment.

        Raises:
            ConfigError: a credential is missing or the secrets file is unreadable.
        """
        env = os.environ if environ is None else environ
        if self.secrets_file is not None:
            try:
                raw = yaml.safe_load(Path(self.secrets_file).read_text()) or {}
                return VenueCredentials.model_validate(raw)
            except (OSError, yaml.YAMLError) as exc:
                raise ConfigError(f"{self.secrets_file}: cannot read secrets file: {exc}") from None
            except ValidationError as exc:
                raise ConfigError(format_validation_error(exc, source=str(self.secrets_file))) from None
        missing = [n for n in (self.api_key_env, self.secret_key_env, self.passphrase_env) if not env.get(n)]
        if missing:
            raise ConfigError(
                f"venue {self.name}: credentials missing: set {', '.join(missing)} "
                "or give secrets_file"
            )
        return VenueCredentials(
            api_key=SecretStr(env[self.api_key_env]),
            secret_key=SecretStr(env[self.secret_key_env]),
            passphrase=SecretStr(env[self.passphrase_env]),
        )


class StrategyConfig(BaseModel):
    """A versioned strategy deployment: which class, where, with what parameters.

    ``id`` defaults to ``<class>_<version>_<first symbol's base>``, so a new
    version gets a fresh per-strategy state.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    class_name: str = Field(alias="class")
    version: str = Field(pattern=r"^v[0-9]+$")
    venue: str
    symbols: tuple[str, ...] = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    bar_interval_ms: int = Field(default=60_000, gt=0)
    id: str = ""

    @model_validator(mode="after")
    def _default_id(self) -> StrategyConfig:
        if not self.id:
            base = self.symbols[0].split("-")[0]
            object.__setattr__(self, "id", f"{self.class_name}_{self.version}_{base}")
        return self


def format_validation_error(exc: ValidationError, *, source: str) -> str:
    """One line per problem: ``<source>: <dotted.field>: <message>``."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        lines.append(f"{source}: {loc}: {err['msg']}")
    return "\n".join(lines)


def read_yaml(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def load_strategy_config(path: str | Path) -> StrategyConfig:
    """Load one strategy file. Raises ConfigError naming the file and field."""
    path = Path(path)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return StrategyConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source=str(path))) from None
