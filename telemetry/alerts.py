"""What the alerter decides about an alert, as pure functions over a snapshot of its state.

The Alerter actor keeps the queue, the Slack sender and the delivery loop;
everything it decides before an alert reaches the queue is here, driven by
an injected monotonic ``now``, so the rules can be tested without a clock,
an event loop or Slack:

- ``decide``: the same ``key`` within ``dedup_window_secs`` is sent once; a
  later alert of *higher* severity for the key still goes out. Info and
  warning alerts share a token bucket of ``rate_limit_per_min``; critical
  alerts are never rate limited (they are de-duplicated).
- ``format_message``: the text sent, noting how many alerts of the key were
  suppressed and how many were held back by the rate limit since the last send.
- ``redact``: secrets and anything shaped like a Slack webhook path or token
  never reach a log line or an error text.
- ``resolve_slack_target``: where Slack is, from the configuration and the environment.
"""

from __future__ import annotations

import enum
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from pydantic import BaseModel, ConfigDict, SecretStr

from tradetree.core import ConfigError
from tradetree.telemetry.config import AlerterConfig

__all__ = [
    "Severity",
    "SlackTarget",
    "resolve_slack_target",
    "AlertVerdict",
    "AlertPolicyState",
    "AlertDecision",
    "decide",
    "format_message",
    "redact",
    "DEDUP_PRUNE_ABOVE",
]

_FROZEN = ConfigDict(frozen=True, extra="forbid")
_SECRET_PATTERNS = (
    re.compile(r"(hooks\.slack\.com/services/)[^\s'\"]+"),
    re.compile(r"xox[a-z]-[A-Za-z0-9-]+"),
)
# Keys of long-quiet alerts are forgotten only past this many, so a steady set of keys costs no pruning.
DEDUP_PRUNE_ABOVE = 4096


class Severity(str, enum.Enum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return {"info": 0, "warning": 1, "critical": 2}[self.value]

    @property
    def log_level(self) -> int:
        return {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.CRITICAL}[self.value]


class SlackTarget(BaseModel):
    """A resolved Slack destination. ``repr`` and dumps never show the secrets."""

    model_config = _FROZEN

    webhook_url: SecretStr | None = None
    token: SecretStr | None = None
    channel: str | None = None
    base_url: str | None = None

    def secrets(self) -> list[str]:
        return [s.get_secret_value() for s in (self.webhook_url, self.token) if s is not None]


def resolve_slack_target(config: AlerterConfig, environ: Mapping[str, str] | None = None) -> SlackTarget | None:
    """The Slack destination from the environment, or None for log-only.

    Raises:
        ConfigError: a token is set but ``slack_channel`` is not.
    """
    env = os.environ if environ is None else environ
    webhook = env.get(config.slack_webhook_url_env) if config.slack_webhook_url_env else None
    if webhook:
        return SlackTarget(webhook_url=SecretStr(webhook))
    token = env.get(config.slack_token_env) if config.slack_token_env else None
    if token:
        if not config.slack_channel:
            raise ConfigError(f"alerter: {config.slack_token_env} is set but slack_channel is not")
        return SlackTarget(token=SecretStr(token), channel=config.slack_channel, base_url=config.slack_base_url)
    return None


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with each of ``secrets`` and anything shaped like a Slack webhook path or token as ``***``."""
    for secret in secrets:
        text = text.replace(secret, "***")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "***", text)
    return text


class AlertVerdict(str, enum.Enum):
    """What happens to an alert before delivery; the values are the outcomes the control API shows."""

    SEND = "send"
    DEDUPLICATED = "deduplicated"
    RATE_LIMITED = "rate_limited"


@dataclass(frozen=True)
class AlertPolicyState:
    """What the policy remembers between alerts. Build the first with ``initial``.

    ``last_sent``: key -> (monotonic time, severity) of its last alert let through;
    ``suppressed``: key -> duplicates since then; ``held_back``: rate-limited
    alerts since the last message; ``tokens`` at monotonic ``tokens_at``.
    """

    tokens: float
    tokens_at: float
    last_sent: Mapping[str, tuple[float, Severity]] = field(default_factory=dict)
    suppressed: Mapping[str, int] = field(default_factory=dict)
    held_back: int = 0

    @classmethod
    def initial(cls, rate_limit_per_min: int, now: float) -> AlertPolicyState:
        """A full bucket at ``now``: the first ``rate_limit_per_min`` alerts go out at once."""
        return cls(tokens=float(rate_limit_per_min), tokens_at=now)


@dataclass(frozen=True)
class AlertDecision:
    """The verdict and, when it is SEND, the notes its message carries (taken out of the state)."""

    verdict: AlertVerdict
    suppressed: int = 0
    held_back: int = 0


def _refill(state: AlertPolicyState, per_min: int, now: float) -> float:
    return min(float(per_min), state.tokens + (now - state.tokens_at) * (per_min / 60.0))


def decide(
    state: AlertPolicyState, config: AlerterConfig, severity: Severity, key: str, now: float
) -> tuple[AlertDecision, AlertPolicyState]:
    """The verdict on an alert of ``severity`` for ``key`` at monotonic ``now``, and the state after it.

    A SEND takes the key's suppressed count and the held-back count out of the
    state into the decision, for ``format_message``.
    """
    last = state.last_sent.get(key)
    if last is not None and now - last[0] < config.dedup_window_secs and severity.rank <= last[1].rank:
        suppressed = {**state.suppressed, key: state.suppressed.get(key, 0) + 1}
        return AlertDecision(AlertVerdict.DEDUPLICATED), replace(state, suppressed=suppressed)
    tokens = state.tokens
    tokens_at = state.tokens_at
    if severity is not Severity.CRITICAL:
        # Critical alerts skip the bucket and leave it untouched, as if they had not been asked.
        tokens, tokens_at = _refill(state, config.rate_limit_per_min, now), now
        if tokens < 1.0:
            held = replace(state, tokens=tokens, tokens_at=tokens_at, held_back=state.held_back + 1)
            return AlertDecision(AlertVerdict.RATE_LIMITED), held
        tokens -= 1.0
    last_sent = {**state.last_sent, key: (now, severity)}
    if len(last_sent) > DEDUP_PRUNE_ABOVE:
        window = config.dedup_window_secs
        last_sent = {k: v for k, v in last_sent.items() if now - v[0] < window}
    suppressed = dict(state.suppressed)
    count = suppressed.pop(key, 0)
    decision = AlertDecision(AlertVerdict.SEND, suppressed=count, held_back=state.held_back)
    return decision, AlertPolicyState(tokens=tokens, tokens_at=tokens_at, last_sent=last_sent,
                                      suppressed=suppressed, held_back=0)


def format_message(severity: Severity, key: str, title: str, text: str, *, suppressed: int = 0,
                   held_back: int = 0) -> str:
    """The Slack text of an alert, with the notes of a SEND decision."""
    lines = [f"[{severity.value.upper()}] {title}"]
    if text:
        lines.append(text)
    notes = []
    if suppressed:
        notes.append(f"+{suppressed} similar alert(s) suppressed")
    if held_back:
        notes.append(f"{held_back} alert(s) held back by the rate limit, see logs")
    if notes:
        lines.append("(" + "; ".join(notes) + ")")
    lines.append(f"key: {key}")
    return "\n".join(lines)
