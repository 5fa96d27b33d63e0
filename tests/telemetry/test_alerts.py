"""The alert policy as pure functions: dedup window, token bucket, notes, redaction, Slack target."""

from __future__ import annotations

import pytest

from tradetree.core.errors import ConfigError
from tradetree.telemetry import AlerterConfig
from tradetree.telemetry.alerts import (
    DEDUP_PRUNE_ABOVE,
    AlertPolicyState,
    AlertVerdict,
    Severity,
    decide,
    format_message,
    redact,
    resolve_slack_target,
)

CFG = AlerterConfig(dedup_window_secs=60.0, rate_limit_per_min=2)


def _run(alerts, cfg=CFG, state=None):
    """Feed ``(severity, key, now)`` alerts; the verdicts and the last state."""
    state = state or AlertPolicyState.initial(cfg.rate_limit_per_min, 0.0)
    verdicts = []
    for sev, key, now in alerts:
        decision, state = decide(state, cfg, Severity(sev), key, now)
        verdicts.append(decision.verdict)
    return verdicts, state


def test_same_key_within_the_window_is_sent_once_and_counted() -> None:
    verdicts, state = _run([("warning", "k", 0.0), ("warning", "k", 59.9), ("info", "k", 30.0)])
    assert verdicts == [AlertVerdict.SEND, AlertVerdict.DEDUPLICATED, AlertVerdict.DEDUPLICATED]
    assert state.suppressed == {"k": 2}


def test_same_key_after_the_window_goes_out_with_the_suppressed_count() -> None:
    _, state = _run([("warning", "k", 0.0), ("warning", "k", 10.0)])
    decision, state = decide(state, CFG, Severity.WARNING, "k", 60.0)
    assert decision.verdict is AlertVerdict.SEND and decision.suppressed == 1
    assert state.suppressed == {}


def test_higher_severity_breaks_through_the_window() -> None:
    verdicts, _ = _run([("info", "k", 0.0), ("warning", "k", 1.0), ("critical", "k", 2.0), ("critical", "k", 3.0)],
                       cfg=AlerterConfig(dedup_window_secs=60.0, rate_limit_per_min=10))
    assert verdicts == [AlertVerdict.SEND, AlertVerdict.SEND, AlertVerdict.SEND, AlertVerdict.DEDUPLICATED]


def test_token_bucket_limits_info_and_warning_and_refills_over_time() -> None:
    verdicts, state = _run([("info", "a", 0.0), ("warning", "b", 0.0), ("info", "c", 0.0), ("info", "d", 29.0)])
    assert verdicts == [AlertVerdict.SEND, AlertVerdict.SEND, AlertVerdict.RATE_LIMITED, AlertVerdict.RATE_LIMITED]
    assert state.held_back == 2
    # 2 per minute: one token back 30 s after the bucket ran dry
    decision, state = decide(state, CFG, Severity.INFO, "e", 30.0)
    assert decision.verdict is AlertVerdict.SEND and decision.held_back == 2
    assert state.held_back == 0


def test_critical_is_never_rate_limited_and_leaves_the_bucket_alone() -> None:
    verdicts, state = _run([("info", "a", 0.0), ("info", "b", 0.0), ("critical", "c", 0.0), ("critical", "d", 0.0)])
    assert verdicts == [AlertVerdict.SEND] * 4
    assert state.tokens == 0.0


def test_rate_limited_alert_does_not_open_a_dedup_window() -> None:
    verdicts, _ = _run([("info", "a", 0.0), ("info", "b", 0.0), ("info", "c", 0.0), ("info", "c", 30.0)])
    assert verdicts[2:] == [AlertVerdict.RATE_LIMITED, AlertVerdict.SEND]


def test_quiet_keys_are_forgotten_only_past_the_prune_threshold() -> None:
    cfg = AlerterConfig(dedup_window_secs=10.0, rate_limit_per_min=1)
    state = AlertPolicyState.initial(1, 0.0)
    for i in range(DEDUP_PRUNE_ABOVE):
        state = decide(state, cfg, Severity.CRITICAL, f"old{i}", 0.0)[1]
    assert len(state.last_sent) == DEDUP_PRUNE_ABOVE
    state = decide(state, cfg, Severity.CRITICAL, "new", 20.0)[1]
    assert list(state.last_sent) == ["new"]


def test_decide_leaves_the_given_state_unchanged() -> None:
    state = AlertPolicyState.initial(2, 0.0)
    decide(state, CFG, Severity.INFO, "k", 0.0)
    assert state == AlertPolicyState.initial(2, 0.0)


def test_format_message_carries_the_notes_only_when_there_are_some() -> None:
    assert format_message(Severity.WARNING, "k", "Title", "") == "[WARNING] Title\nkey: k"
    text = format_message(Severity.CRITICAL, "k", "T", "body", suppressed=3, held_back=2)
    assert text == ("[CRITICAL] T\nbody\n(+3 similar alert(s) suppressed; "
                    "2 alert(s) held back by the rate limit, see logs)\nkey: k")
    assert format_message(Severity.INFO, "k", "T", "", engine="paper").startswith("[INFO] paper: T\n")


def test_redact_hides_given_secrets_and_slack_shaped_ones() -> None:
    text = "post to https://hooks.slack.com/services/T0/B0/abc failed, token xoxb-12-ab, pw hunter2"
    assert redact(text, ["hunter2"]) == "post to https://hooks.slack.com/services/*** failed, token ***, pw ***"


def test_resolve_slack_target_prefers_the_webhook_and_needs_a_channel_for_a_token() -> None:
    cfg = AlerterConfig(slack_channel=None)
    env = {"TRADETREE_SLACK_WEBHOOK_URL": "https://hooks/x", "TRADETREE_SLACK_TOKEN": "xoxb-1"}
    target = resolve_slack_target(cfg, env)
    assert target is not None and target.secrets() == ["https://hooks/x"]
    assert resolve_slack_target(cfg, {}) is None
    with pytest.raises(ConfigError, match="slack_channel"):
        resolve_slack_target(cfg, {"TRADETREE_SLACK_TOKEN": "xoxb-1"})


def test_the_slack_webhook_can_come_from_a_mounted_file_which_wins_over_the_env(tmp_path) -> None:
    (tmp_path / "webhook").write_text("https://hooks.slack.com/services/T0/B0/from-file\n")
    cfg = AlerterConfig(slack_webhook_url_file=tmp_path / "webhook")
    target = resolve_slack_target(cfg, {"TRADETREE_SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/env"})
    assert target is not None and target.webhook_url is not None
    assert target.webhook_url.get_secret_value().endswith("/from-file")
    with pytest.raises(ConfigError, match="cannot read secret file"):
        resolve_slack_target(AlerterConfig(slack_webhook_url_file=tmp_path / "absent"), {})
