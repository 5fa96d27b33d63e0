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
- ``redact``: credentials never reach a log line, ``recent()``, Slack or an
  error text: the given secrets, URL user-info (``redis://:pw@host``),
  ``apiKey=``/``secret=``/``passphrase=``/``sign=``/``OK-ACCESS-*`` values,
  Bearer/Basic credentials, Slack webhook paths and tokens.
- ``classify_alert`` / ``operator_action``: which component an alert key
  comes from and the one line that tells an operator what to do about it.
- ``slack_message``: the Block Kit blocks and the plain-text fallback of one
  alert, with the engine's name (two engines on one channel stay apart).
- ``resolve_slack_target``: where Slack is, from the configuration and the environment.
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr

from tradetree.core import RISK_MONITOR_ID, ROOT_ID, ConfigError, gateway_id, reconciler_id, resolve_secret
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
    "AlertSource",
    "classify_alert",
    "operator_action",
    "SlackMessage",
    "slack_message",
    "DEDUP_PRUNE_ABOVE",
]

_FROZEN = ConfigDict(frozen=True, extra="forbid")
# Names whose value is a credential wherever it is written: query strings (apiKey=...), headers
# (OK-ACCESS-SIGN: ...), JSON or Python reprs ("secret": "..."), environment (OKX_SECRET_KEY=...).
# Any case; a name may carry prefixes (okx_, client-, ok-access-), never a bare "key".
_SECRET_NAMES = (
    r"api[_-]?key", r"api[_-]?secret", r"secret(?:[_-]?key)?", r"pass(?:phrase|word|wd)", r"pwd", r"token",
    r"sign(?:ature)?", r"ok-access-[a-z]+", r"authorization", r"x-api-key", r"credentials?", r"private[_-]?key",
)
_Replacement = str | Callable[[re.Match[str]], str]
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], _Replacement], ...] = (
    # The user-info of any URL (redis://:pw@host, https://user:pw@host), up to the last '@' before a
    # blank, so a password holding '@', ':' or '/' goes whole.
    (re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.\-]*://)\S*@"), r"\1***@"),
    (re.compile(r"(hooks\.slack\.com/services/)[^\s'\"]+"), r"\1***"),
    (re.compile(r"\bx(?:ox[a-z]|app)-[A-Za-z0-9-]+"), "***"),
    # name=value, name: value, "name":"value"; a quoted value goes whole, blanks and all. A bare
    # name:value is left alone: that is how alert keys and ids are joined (strategy:MR_sign:loss).
    (re.compile(r"(?i)(?<![\w-])((?:[a-z0-9]+[_-])*(?:" + "|".join(_SECRET_NAMES) + r")"
                r"(?:['\"]?\s*=\s*|['\"]\s*:\s*|\s*:\s+))"
                r"(?:(['\"])(?:(?!\2).)*\2|(?:(?:bearer|basic|token)\s+)?[^\s'\"&,;)}\]]+)"),
     lambda m: m.group(1) + (m.group(2) or "") + "***" + (m.group(2) or "")),
    (re.compile(r"(?i)\b(bearer)\s+(?!\*\*\*)[A-Za-z0-9\-._~+/]+=*"), r"\1 ***"),
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
    """The Slack destination from the configured files or the environment, or None for log-only.

    Raises:
        ConfigError: a token is set but ``slack_channel`` is not, or a named file cannot be read.
    """
    webhook = resolve_secret(file=config.slack_webhook_url_file, env=config.slack_webhook_url_env, environ=environ)
    if webhook is not None:
        return SlackTarget(webhook_url=webhook)
    token = resolve_secret(file=config.slack_token_file, env=config.slack_token_env, environ=environ)
    if token is not None:
        if not config.slack_channel:
            raise ConfigError(f"alerter: a Slack token is set ({config.slack_token_file or '$' + str(config.slack_token_env)}) "
                              "but slack_channel is not")
        return SlackTarget(token=token, channel=config.slack_channel, base_url=config.slack_base_url)
    return None


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every credential in it as ``***``.

    Removed: each of ``secrets`` (longest first, so one that holds another
    goes whole), the user-info of any URL, values named like credentials
    (``apiKey=``, ``secret:``, ``"passphrase": "..."``, ``sign=``,
    ``OK-ACCESS-*``, ``password``, ``token``, ``Authorization``), Bearer and
    Basic credentials, Slack webhook paths and tokens. It errs on the side of
    removing too much: an alert loses a word, never leaks a key.
    """
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


@dataclass(frozen=True)
class AlertSource:
    """What an alert key says about where the alert comes from.

    ``kind`` is a code-defined name (``safe_mode``, ``breaker``, ``drift``,
    ... or ``unknown``); ``component`` the actor that raised it
    (``FillReconciler[okx]``), "" when the key does not say; ``subject`` what
    it is about (an instrument, a strategy, an order), "" when nothing.
    """

    kind: str
    component: str = ""
    subject: str = ""
    venue: str = ""


# The reconciler's keys (after its "<venue>:" prefix) -> kind.
_RECONCILER_KINDS = {
    "drift": "drift",
    "fill_gap": "fill_gap", "fill_gap_persists": "fill_gap", "fill_gap_recurrence": "fill_gap",
    "ws_fill_flow": "fill_gap",
    "over_applied": "over_applied",
    "order_anomaly": "order_anomaly",
    "poll_failing": "poll_failing",
    "venue_paused": "venue_paused",
    "pause_failed": "pause_failed",
    "canary_failed": "canary_failed",
    "venue_resumed": "venue_released", "venue_released": "venue_released",
}


def classify_alert(key: str) -> AlertSource:
    """Where the alert keyed ``key`` comes from, read from the shapes the tree's keys have.

    ``operator:<verb>:<target>`` (an operator's action, audited by the risk
    monitor); ``<supervisor>:<child>:exit|restarted`` and ``<supervisor>:escalated``
    (``RootSupervisor:escalated`` is SAFE MODE); the risk monitor's breakers
    ``strategy:<id>:<kind>``, ``global:<kind>`` and ``<breaker>:unreadable_states``;
    the gateway's ``gateway:<venue>:<kind>[:<strategy>]``; the reconciler's
    ``<venue>:<kind>[:<subject>]``; anything naming the kill switch, or stale
    market data. Any other key is ``unknown``.
    """
    parts = key.split(":")
    last = parts[-1]
    if parts[0] == "operator" and len(parts) >= 3:
        return AlertSource("operator", RISK_MONITOR_ID, ":".join(parts[2:]))
    if len(parts) >= 2 and last == "escalated":
        supervisor = ":".join(parts[:-1])
        return AlertSource("safe_mode" if supervisor == ROOT_ID else "supervisor_escalated", supervisor)
    if len(parts) >= 3 and last in ("exit", "restarted"):
        return AlertSource(f"actor_{last}", ":".join(parts[1:-1]))
    if len(parts) >= 2 and last == "unreadable_states":
        return AlertSource("unreadable_states", RISK_MONITOR_ID, ":".join(parts[:-1]))
    if parts[0] == "risk_monitor":
        return AlertSource("streaks_reset" if last == "streaks_reset" else "risk_monitor", RISK_MONITOR_ID)
    if parts[0] == "global" and len(parts) == 2:
        return AlertSource("global_breaker", RISK_MONITOR_ID, last)
    if parts[0] == "strategy" and len(parts) >= 3:
        return AlertSource("breaker", RISK_MONITOR_ID, ":".join(parts[1:-1]))
    if parts[0] == "gateway" and len(parts) >= 3:
        kind = "reduce_only_refused" if parts[2] == "reduce_only_refused" else "gateway"
        return AlertSource(kind, gateway_id(parts[1]), ":".join(parts[3:]), parts[1])
    if len(parts) >= 2 and parts[1] in _RECONCILER_KINDS:
        venue = parts[0]
        return AlertSource(_RECONCILER_KINDS[parts[1]], reconciler_id(venue), ":".join(parts[2:]), venue)
    lowered = [p.lower() for p in parts]
    if any(p in ("kill", "kill_switch", "killswitch") for p in lowered):
        return AlertSource("kill_switch", RISK_MONITOR_ID)
    if any(p.startswith("stale") or p in ("market_data", "marks") for p in lowered):
        venue = parts[0] if len(parts) >= 2 and not lowered[0].startswith("stale") else ""
        return AlertSource("stale_data", gateway_id(venue) if venue else "", venue=venue)
    return AlertSource("unknown")


_STATUS = "`tradetree status`"
# kind -> what an operator does about a warning or a critical alert of it. {venue}, {subject}
# are the source's; each line names the command that shows or fixes the state.
_ACTIONS = {
    "safe_mode": "SAFE MODE: the kill flag is set and every strategy is paused. Find the child that kept "
                 f"failing in {_STATUS} and its log, fix the cause, then clear the kill flag "
                 "(`tradetree clear-kill <reason>`) and resume strategies one at a time.",
    "operator": "An operator acted on {subject}: check it was intended (`tradetree audit`).",
    "supervisor_escalated": "A supervisor gave up restarting its children; its parent restarts it or the "
                            f"tree enters SAFE MODE. Find the repeated failure in {_STATUS} and the logs.",
    "actor_exit": "An actor stopped and is being restarted. Nothing to do if a 'restarted' alert follows; "
                  f"if it repeats, read its log and {_STATUS}.",
    "actor_restarted": f"The actor is back. If restarts repeat, find why in its log and {_STATUS}.",
    "unreadable_states": "These strategies' stored states are unreadable and they were NOT paused: pause "
                         "them by hand (`tradetree pause <strategy>`) and check Redis.",
    "streaks_reset": "The saved rejection streaks were unreadable and restart from zero: the rejection "
                     "breaker can trip later than configured. Check Redis.",
    "risk_monitor": f"The risk monitor needs attention: check it in {_STATUS} and its log.",
    "global_breaker": "Every strategy is paused by the global {subject} breaker. Check the book "
                      "(`tradetree positions`); reset the breaker (`tradetree reset-breaker {key} <reason>`) "
                      "only once the exposure is understood, then resume strategies deliberately.",
    "breaker": "Strategy {subject} is paused by its breaker. Review its positions and fills "
               "(`tradetree positions`), then reset the breaker (`tradetree reset-breaker {key} <reason>`) "
               "and resume it (`tradetree resume {subject}`) deliberately.",
    "kill_switch": f"The kill switch is winding positions down. Watch {_STATUS} until flat; if it STALLS, close "
                   "the residual on the venue by hand.",
    "drift": "Redis and {venue} disagree on {subject}; the venue is paused. Compare the venue's position with "
             "`tradetree positions`, fix the difference, run `tradetree reconcile {venue}`, then release the "
             "venue (`tradetree release-venue {venue}`).",
    "fill_gap": "Fills on {venue} are missing or late on the WS; the reconciler fetches them by REST. Check the "
                f"venue's private WS in {_STATUS}; if the venue stays paused, reconcile and release it.",
    "over_applied": "More fill was applied than {venue} reports for order {subject}: check its fills against "
                    "the venue before trading on.",
    "order_anomaly": "Order {subject} is in a state the reconciler cannot settle: look it up on {venue} by its "
                     "client order id and cancel it by hand if it is still live.",
    "poll_failing": "REST polling of {venue} fails: check the venue's status page, the API key and the network. "
                    "New orders are refused once positions are no longer verified.",
    "venue_paused": "{venue} is paused: no new orders. Fix the cause in the text above, run `tradetree "
                    "reconcile {venue}`, then release it (`tradetree release-venue {venue}`).",
    "reduce_only_refused": "{venue} refused a close of {subject} (51205) and it was sent once more without "
                           "the venue's reduce-only. If it repeats, check what else trades that instrument on "
                           "this account and compare `tradetree positions` with the venue.",
    "gateway": f"The {{venue}} gateway needs attention: check it in {_STATUS} and its log.",
    "pause_failed": "The venue pause could NOT be written to Redis, so orders may still flow: check Redis now, "
                    "and engage the kill switch (`tradetree kill <reason>`) if it does not come back.",
    "canary_failed": "The canary round trip failed and {venue} stays paused. Check its WS and REST in "
                     f"{_STATUS}; release the venue by hand once fills flow.",
    "venue_released": "{venue} takes orders again: check that strategies resume as expected.",
    "stale_data": "Market data is stale: check the venue's public WS in " + _STATUS + "; the freshness gate "
                  "refuses orders until tickers flow again.",
}
_GENERIC_ACTION = f"Read the text above, check the component in {_STATUS} and the engine's log."
_INFO_ACTION = "No action needed: for the record (it is logged too)."


def operator_action(key: str, severity: Severity) -> str:
    """The one line that tells an operator what to do about an alert of ``severity`` keyed ``key``.

    Info alerts (a recovery, a restart done) need none; a key of no known shape
    gets a generic line.
    """
    if severity is Severity.INFO:
        return _INFO_ACTION
    source = classify_alert(key)
    template = _ACTIONS.get(source.kind)
    if template is None:
        return _GENERIC_ACTION
    return template.format(venue=source.venue or "the venue", subject=source.subject or "?", key=key)


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
                   held_back: int = 0, engine: str = "") -> str:
    """The plain Slack text of an alert, with the notes of a SEND decision.

    With ``engine`` the first line names it (``[CRITICAL] paper: title``). It is
    the notification text and the fallback of the Block Kit message.
    """
    head = f"{engine}: {title}" if engine else title
    lines = [f"[{severity.value.upper()}] {head}"]
    if text:
        lines.append(text)
    notes = _notes(suppressed, held_back)
    if notes:
        lines.append("(" + "; ".join(notes) + ")")
    lines.append(f"key: {key}")
    return "\n".join(lines)


def _notes(suppressed: int, held_back: int) -> list[str]:
    notes = []
    if suppressed:
        notes.append(f"+{suppressed} similar alert(s) suppressed")
    if held_back:
        notes.append(f"{held_back} alert(s) held back by the rate limit, see logs")
    return notes


@dataclass(frozen=True)
class SlackMessage:
    """One alert as Slack gets it: Block Kit ``blocks`` and the ``text`` fallback notifications show."""

    text: str
    blocks: tuple[dict[str, Any], ...]


_SEVERITY_EMOJI = {Severity.INFO: ":information_source:", Severity.WARNING: ":warning:",
                   Severity.CRITICAL: ":rotating_light:"}
# Slack's limits: a header's text 150 characters, a section's 3000, a field's 2000; the text of a
# message is cut past 40000, and a long alert is unreadable long before that.
_HEADER_MAX, _SECTION_MAX, _FIELD_MAX, _TEXT_MAX = 150, 3000, 2000, 4000


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _mrkdwn_escape(text: str) -> str:
    # Slack's three control characters: an alert's text must not become a link or a mention.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(engine: str, severity: Severity, key: str, title: str, text: str, *,
                  component: str = "", suppressed: int = 0, held_back: int = 0) -> SlackMessage:
    """The Block Kit message of an alert: a header with the severity, the engine and the title;
    fields with the engine, severity, component and key; the text; what to do; the notes.

    ``component`` "" takes the one ``classify_alert(key)`` reads ("unknown" if
    none). The text goes as plain text, so nothing in it is read as a link or a
    mention. Inputs are shown as given: redact them first.
    """
    from slack_sdk.models.blocks import ContextBlock, DividerBlock, HeaderBlock, SectionBlock
    from slack_sdk.models.blocks.basic_components import MarkdownTextObject, PlainTextObject

    component = component or classify_alert(key).component or "unknown"
    action = operator_action(key, severity)
    sev = severity.value.upper()
    header = f"{_SEVERITY_EMOJI[severity]} {sev} · {engine} · {title}" if engine else \
        f"{_SEVERITY_EMOJI[severity]} {sev} · {title}"

    def field(label: str, value: str, *, code: bool = False) -> MarkdownTextObject:
        shown = _mrkdwn_escape(value)
        if code:  # ids hold '_' and '*', which mrkdwn would read as emphasis
            shown = "`" + shown.replace("`", "'") + "`"
        return MarkdownTextObject(text=_clip(f"*{label}*\n{shown}", _FIELD_MAX))

    blocks: list[Any] = [
        HeaderBlock(text=PlainTextObject(text=_clip(header, _HEADER_MAX), emoji=True)),
        SectionBlock(fields=[field("Engine", engine or "unnamed"), field("Severity", sev),
                             field("Component", component, code=True), field("Key", key, code=True)]),
    ]
    if text.strip():  # Slack refuses a blank text object
        blocks.append(SectionBlock(text=PlainTextObject(text=_clip(text, _SECTION_MAX), emoji=False)))
    blocks.append(SectionBlock(text=MarkdownTextObject(
        text=_clip(f"*What to do:* {_mrkdwn_escape(action)}", _SECTION_MAX))))
    notes = _notes(suppressed, held_back)
    if notes:
        blocks += [DividerBlock(), ContextBlock(elements=[MarkdownTextObject(text=_clip("; ".join(notes), _FIELD_MAX))])]
    fallback = format_message(severity, key, title, text, suppressed=suppressed, held_back=held_back,
                              engine=engine)
    fallback += f"\ncomponent: {component}\nwhat to do: {action}"
    return SlackMessage(text=_clip(fallback, _TEXT_MAX), blocks=tuple(b.to_dict() for b in blocks))
