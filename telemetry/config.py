"""Configuration of the tree's non-trading observers: the Prometheus exporter and the alerter."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AlerterConfig", "MetricsConfig"]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class AlerterConfig(BaseModel):
    """Where alerts go and how often. Secrets are named (a file, an environment variable), never stored here.

    The Alerter reads them in its own process, wherever Ray placed it: on a
    cluster they must be on every node (``tradetree up`` checks that they are
    when this shell has them). A ``*_file`` wins over its ``*_env``. The
    webhook wins when both it and the token resolve;
    a token needs ``slack_channel``. ``slack_base_url`` points the Web API
    client elsewhere (tests). The values of the ``redact_env`` variables (the
    venue credentials by default; values shorter than 6 characters are
    ignored) are removed from every alert text, besides what the redactor
    finds by shape; name a venue's own ``*_env`` variables here if they differ.
    """

    model_config = _FROZEN

    slack_webhook_url_env: str | None = "TRADETREE_SLACK_WEBHOOK_URL"
    slack_webhook_url_file: Path | None = None
    slack_token_env: str | None = "TRADETREE_SLACK_TOKEN"
    slack_token_file: Path | None = None
    slack_channel: str | None = None
    slack_base_url: str | None = None
    dedup_window_secs: float = Field(default=300.0, ge=0)
    rate_limit_per_min: int = Field(default=20, ge=1)
    send_timeout_secs: float = Field(default=5.0, gt=0)
    send_max_attempts: int = Field(default=3, ge=1)
    send_retry_delay_secs: float = Field(default=1.0, ge=0)
    queue_max: int = Field(default=1000, ge=1)
    recent_max: int = Field(default=500, ge=1)
    redact_env: tuple[str, ...] = ("OKX_API_KEY", "OKX_SECRET_KEY", "OKX_PASSPHRASE")


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
