"""The Alerter: log every alert, de-duplicate, rate-limit, deliver to Slack off the caller's path.

``Alerter`` keeps the queue, the sender and the delivery loop; what happens to
an alert (de-duplicated, rate limited, sent, and the text sent) is decided by
``telemetry.alerts``. ``AlerterActor`` is the thin Ray actor.

Guarantees:

- ``alert()`` never waits on Slack: it decides (log, de-duplicate, rate
  limit), enqueues, and returns. A background task delivers with a timeout
  per attempt and a bounded number of attempts, so a failing or hanging Slack
  can never block trading or risk actions; failures are counted.
- Every alert's key, title and text pass ``telemetry.redact`` (with the Slack
  secrets and the ``redact_env`` values) before anything else: what is
  logged, kept in ``recent()`` and sent to Slack is the redacted text.
- Every alert is logged (logger ``tradetree.alerts``) at its severity.
- The same ``key`` within ``dedup_window_secs`` is sent once; a later alert
  of *higher* severity for the key still goes out.
- Info and warning alerts share a token bucket of ``rate_limit_per_min``;
  critical alerts are never rate limited (they are de-duplicated). The next
  message that goes out says how many were held back.
- Slack gets Block Kit (``telemetry.slack_message``): the engine's name, the
  severity, the component, the text and what to do, with a plain ``text``
  fallback for notifications.
- Slack is reached with slack-sdk: an incoming webhook
  (``AsyncWebhookClient``) or a bot token + channel (``AsyncWebClient``
  ``chat_postMessage``, ``base_url`` configurable). With neither configured
  the alerter is log-only. The webhook URL and token are ``SecretStr``, never
  logged (error texts are redacted).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, SecretStr

from tradetree.core import ALERTER_ID, BackoffPolicy, Clock, HealthReport, ProbeResult, TradetreeError, WallClock
from tradetree.supervisor import ActorClient
from tradetree.telemetry import (
    AlerterConfig,
    AlertPolicyState,
    AlertVerdict,
    Severity,
    SlackMessage,
    SlackTarget,
    classify_alert,
    decide,
    format_message,
    redact,
    resolve_slack_target,
    slack_message,
)

__all__ = [
    "Severity",
    "AlerterConfig",
    "SlackTarget",
    "SlackMessage",
    "resolve_slack_target",
    "AlertRecord",
    "SlackSender",
    "SlackDeliveryError",
    "WebhookSender",
    "ChatPostSender",
    "Alerter",
    "AlerterActor",
    "AlerterClient",
]

log = logging.getLogger("tradetree.alerts")

# slack-sdk logs request URLs (a webhook URL is a secret) at debug level: silence its logger for our clients.
_SDK_LOG = logging.getLogger("tradetree.alerts.slack_sdk")
_SDK_LOG.disabled = True

_FROZEN = ConfigDict(frozen=True, extra="forbid")
# An environment value shorter than this is not redacted by value: it would blank common words.
_MIN_SECRET_LEN = 6


class AlertRecord(BaseModel):
    """One alert as the control API shows it.

    ``outcome``: queued | sent | failed | dropped (queue overflow) |
    deduplicated | rate_limited | log_only. Every text in it is redacted.
    """

    model_config = _FROZEN

    ts_ms: int
    severity: Severity
    key: str
    title: str
    text: str
    outcome: str
    component: str = ""
    attempts: int = 0
    error: str = ""


class SlackDeliveryError(TradetreeError):
    """Slack did not accept a message (HTTP error, API error, network failure)."""


class SlackSender(Protocol):
    async def send(self, message: SlackMessage) -> None:
        """Deliver one message. Raises SlackDeliveryError (or any exception) on failure."""
        ...


class WebhookSender:
    """Posts to an incoming webhook with slack-sdk's ``AsyncWebhookClient``."""

    def __init__(self, url: SecretStr, *, timeout_secs: float) -> None:
        from slack_sdk.webhook.async_client import AsyncWebhookClient

        self._client = AsyncWebhookClient(
            url=url.get_secret_value(),
            timeout=max(1, int(timeout_secs + 0.999)),
            logger=_SDK_LOG,
            retry_handlers=[],  # retries are ours: bounded and counted
        )

    async def send(self, message: SlackMessage) -> None:
        response = await self._client.send(text=message.text, blocks=list(message.blocks) or None)
        if response.status_code != 200:
            raise SlackDeliveryError(f"webhook answered HTTP {response.status_code}: {response.body[:200]}")


class ChatPostSender:
    """Posts with slack-sdk's ``AsyncWebClient.chat_postMessage`` (bot token + channel)."""

    def __init__(self, token: SecretStr, channel: str, *, base_url: str | None, timeout_secs: float) -> None:
        from slack_sdk.web.async_client import AsyncWebClient

        kwargs: dict[str, Any] = {"base_url": base_url} if base_url else {}
        self._channel = channel
        self._client = AsyncWebClient(
            token=token.get_secret_value(),
            timeout=max(1, int(timeout_secs + 0.999)),
            logger=_SDK_LOG,
            retry_handlers=[],
            **kwargs,
        )

    async def send(self, message: SlackMessage) -> None:
        from slack_sdk.errors import SlackApiError

        try:
            await self._client.chat_postMessage(channel=self._channel, text=message.text,
                                                blocks=list(message.blocks) or None)
        except SlackApiError as exc:
            status = getattr(exc.response, "status_code", "?")
            error = exc.response.get("error", "") if hasattr(exc.response, "get") else ""
            raise SlackDeliveryError(f"chat.postMessage failed: HTTP {status} {error}".strip()) from None


@dataclass(eq=False)
class _Entry:
    ts_ms: int
    severity: Severity
    key: str
    title: str
    text: str
    outcome: str
    component: str = ""
    message: SlackMessage | None = None
    attempts: int = 0
    error: str = ""

    def record(self) -> AlertRecord:
        return AlertRecord(
            ts_ms=self.ts_ms, severity=self.severity, key=self.key, title=self.title, text=self.text,
            outcome=self.outcome, component=self.component, attempts=self.attempts, error=self.error,
        )


class Alerter:
    """Alert logic: decide, log, enqueue; a background task talks to Slack.

    Args:
        config: the alerter's settings.
        engine_name: the engine config's ``name``, shown on every Slack message.
        environ: where the secrets' environment variables are read (default os.environ).
        sender: a SlackSender to use instead of the one the config resolves to.
        clock, sleep: injectable for tests.

    Raises:
        ConfigError: the Slack settings are inconsistent (see resolve_slack_target).
    """

    def __init__(
        self,
        config: AlerterConfig | None = None,
        *,
        engine_name: str = "tradetree",
        environ: Mapping[str, str] | None = None,
        sender: SlackSender | None = None,
        clock: Clock | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self._config = config or AlerterConfig()
        self.engine_name = engine_name
        self._clock: Clock = clock or WallClock()
        self._sleep = sleep or asyncio.sleep
        env = os.environ if environ is None else environ
        target = resolve_slack_target(self._config, env)
        known = [env.get(name, "") for name in self._config.redact_env]
        self._secrets = (target.secrets() if target else []) + [v for v in known if len(v) >= _MIN_SECRET_LEN]
        self._sender: SlackSender | None = sender or _sender_for(target, self._config)
        self._queue: deque[_Entry] = deque()
        self._wakeup = asyncio.Event()
        self._recent: deque[_Entry] = deque(maxlen=self._config.recent_max)
        self._policy = AlertPolicyState.initial(self._config.rate_limit_per_min, self._clock.monotonic())
        self._task: asyncio.Task[None] | None = None
        self._last_error = ""
        self._stats = dict.fromkeys(
            ("received", "queued", "sent", "failed", "dropped", "deduplicated", "rate_limited", "log_only"), 0
        )

    @property
    def slack_configured(self) -> bool:
        return self._sender is not None

    async def start(self) -> None:
        """Start the delivery task (idempotent). Alerts raised before are kept and sent."""
        if self._sender is not None and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._deliver_loop(), name="alerter-delivery")

    async def stop(self) -> None:
        """Stop delivering. Undelivered alerts stay in ``recent()`` as queued."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def alert(self, severity: Severity | str, key: str, title: str, text: str = "", *,
              component: str = "") -> AlertRecord:
        """Raise an alert. Never waits on Slack; returns what was decided (redacted).

        ``component``: the actor the alert comes from; "" takes the one the key
        names (``telemetry.classify_alert``).

        Raises:
            ValueError: ``severity`` is not info, warning or critical.
        """
        sev = Severity(severity)
        # Redacted first: nothing after this line sees the raw text. The key is redacted too (the
        # same key redacts the same way, so de-duplication is unchanged).
        key, title, text, component = (self._redact(v) for v in (key, title, text, component))
        component = component or classify_alert(key).component
        entry = _Entry(ts_ms=self._clock.now_ms(), severity=sev, key=key, title=title, text=text, outcome="",
                       component=component)
        self._stats["received"] += 1
        self._recent.append(entry)
        decision, self._policy = decide(self._policy, self._config, sev, key, self._clock.monotonic())
        if decision.verdict is not AlertVerdict.SEND:
            entry.outcome = decision.verdict.value
            self._count_and_log(entry)
            return entry.record()
        if self._sender is None:
            entry.outcome = "log_only"
            self._count_and_log(entry)
            return entry.record()
        entry.message = self._message(sev, key, title, text, component, decision.suppressed, decision.held_back)
        entry.outcome = "queued"
        self._count_and_log(entry)
        if len(self._queue) >= self._config.queue_max:
            dropped = self._queue.popleft()
            dropped.outcome = "dropped"
            self._stats["dropped"] += 1
            log.warning("alert queue full: dropped %s %r", dropped.severity.value, dropped.title)
        self._queue.append(entry)
        self._wakeup.set()
        return entry.record()

    def recent(self, n: int = 50) -> list[AlertRecord]:
        """The last ``n`` alerts (every outcome), oldest first."""
        if n <= 0:
            return []
        return [e.record() for e in list(self._recent)[-n:]]

    def stats(self) -> dict[str, int]:
        """Counters: received, queued, sent, failed, dropped, deduplicated, rate_limited, log_only, pending."""
        return {**self._stats, "pending": len(self._queue)}

    def check_health(self) -> HealthReport:
        """Probes what a restart can fix: the delivery task runs and the queue is not full.

        A Slack outage is reported in the detail but does not fail a probe:
        restarting the alerter would not bring Slack back, and must not
        escalate the tree.
        """
        if self._sender is None:
            sender = ProbeResult(name="delivery_task", ok=True, detail="log-only (no Slack configured)")
        else:
            running = self._task is not None and not self._task.done()
            detail = "running" if running else "not running"
            if self._last_error:
                detail += f"; last Slack error: {self._last_error}"
            sender = ProbeResult(name="delivery_task", ok=running, detail=detail)
        full = len(self._queue) >= self._config.queue_max
        queue = ProbeResult(name="queue", ok=not full, detail=f"{len(self._queue)}/{self._config.queue_max} pending")
        return HealthReport(component="alerter", ts_ms=self._clock.now_ms(), probes=(sender, queue))

    # -- internals

    def _count_and_log(self, entry: _Entry) -> None:
        self._stats[entry.outcome] += 1
        level = entry.severity.log_level if entry.outcome in ("queued", "log_only") else logging.INFO
        log.log(level, "alert %s [%s] %s %s: %s (%s)", entry.severity.value, entry.key, entry.component or "-",
                entry.title, entry.text, entry.outcome)

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets)

    def _message(self, sev: Severity, key: str, title: str, text: str, component: str, suppressed: int,
                 held_back: int) -> SlackMessage:
        try:
            return slack_message(self.engine_name, sev, key, title, text, component=component,
                                 suppressed=suppressed, held_back=held_back)
        except Exception as exc:  # building blocks must never cost the caller its alert: send the text alone
            log.warning("alert %s: no Block Kit message (%s: %s), sending its text", key, type(exc).__name__, exc)
            plain = format_message(sev, key, title, text, suppressed=suppressed, held_back=held_back,
                                   engine=self.engine_name)
            return SlackMessage(text=plain, blocks=())

    async def _deliver_loop(self) -> None:
        assert self._sender is not None
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            entry = self._queue.popleft()
            await self._deliver(entry)

    async def _deliver(self, entry: _Entry) -> None:
        assert self._sender is not None and entry.message is not None
        cfg = self._config
        for attempt in range(1, cfg.send_max_attempts + 1):
            entry.attempts = attempt
            try:
                await asyncio.wait_for(self._sender.send(entry.message), timeout=cfg.send_timeout_secs)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure of Slack is counted, never propagated to callers
                if isinstance(exc, asyncio.TimeoutError):
                    error = f"no answer within {cfg.send_timeout_secs:g}s"
                else:
                    error = self._redact(f"{type(exc).__name__}: {exc}")[:300]
                entry.error = error
                self._last_error = error
                if attempt < cfg.send_max_attempts:
                    # attempts here count from 1; the policy's from 0
                    await self._sleep(BackoffPolicy(base_secs=cfg.send_retry_delay_secs).delay(attempt - 1))
                continue
            entry.outcome = "sent"
            entry.error = ""
            self._stats["sent"] += 1
            self._last_error = ""
            return
        entry.outcome = "failed"
        self._stats["failed"] += 1
        log.warning("alert %r not delivered to Slack after %d attempt(s): %s", entry.title, entry.attempts,
                    entry.error)


def _sender_for(target: SlackTarget | None, config: AlerterConfig) -> SlackSender | None:
    if target is None:
        return None
    if target.webhook_url is not None:
        return WebhookSender(target.webhook_url, timeout_secs=config.send_timeout_secs)
    assert target.token is not None and target.channel is not None
    return ChatPostSender(target.token, target.channel, base_url=target.base_url,
                          timeout_secs=config.send_timeout_secs)


class AlerterActor:
    """Thin Ray actor over ``Alerter`` (the supervisor applies ``ray.remote`` and the options).

    Secrets are read from the actor process's environment (set them through the
    cluster or the actor's ``runtime_env``). ``engine_name`` is the engine
    config's ``name`` (``tree.build_root_spec`` passes it).
    """

    def __init__(self, config: AlerterConfig | None = None, *, engine_name: str = "tradetree") -> None:
        self._impl = Alerter(config, engine_name=engine_name)

    async def start(self) -> None:
        await self._impl.start()

    async def stop(self) -> None:
        await self._impl.stop()

    async def check_health(self) -> HealthReport:
        return self._impl.check_health()

    async def alert(self, severity: str, key: str, title: str, text: str = "", component: str = "") -> AlertRecord:
        return self._impl.alert(severity, key, title, text, component=component)

    async def recent(self, n: int = 50) -> list[AlertRecord]:
        return self._impl.recent(n)

    async def stats(self) -> dict[str, int]:
        return self._impl.stats()


class AlerterClient:
    """The one way other actors send to the tree's Alerter (``ALERTER_ID``), through ``ActorClient``.

    ``alert`` raises the client's errors (``ActorNotFound`` while the alerter is
    not started or being restarted, ``CallTimeout``, ...): each caller decides
    what an undelivered alert means to it (the risk monitor keeps it and sends
    it again; a reconciler logs it, having logged every alert already).
    """

    def __init__(self, actor_name: str = ALERTER_ID, namespace: str | None = None, *,
                 timeout_secs: float = 5.0, client: ActorClient | None = None) -> None:
        self.actor_name = actor_name
        self._client = client or ActorClient(namespace, timeout_secs=timeout_secs)

    async def alert(self, severity: str, key: str, title: str, text: str) -> None:
        await self._client.call(self.actor_name, "alert", severity, key, title, text)
