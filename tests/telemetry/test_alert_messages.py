"""Where an alert comes from, what the operator does about it, and its Block Kit message (pure)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradetree.core import RISK_MONITOR_ID, ROOT_ID, STRATEGY_SUPERVISOR_ID, gateway_id, reconciler_id
from tradetree.execution.discrepancy_keys import drift_key, fill_gap_key
from tradetree.execution.fill_health import WS_FLOW_KEY
from tradetree.risk.rules import GLOBAL_LOSS, GLOBAL_NOTIONAL, strategy_breaker
from tradetree.telemetry.alerts import (
    AlertSource,
    Severity,
    classify_alert,
    operator_action,
    slack_message,
)

VENUE_SUP = "VenueSupervisor[okx]"

# The keys the tree raises, built the way the raising code builds them (the reconciler prefixes
# "<venue>:"), with the component and the kind each must be read as.
RAISED = [
    (f"{ROOT_ID}:escalated", "safe_mode", ROOT_ID),
    (f"{VENUE_SUP}:escalated", "supervisor_escalated", VENUE_SUP),
    (f"{VENUE_SUP}:{gateway_id('okx')}:exit", "actor_exit", gateway_id("okx")),
    (f"{STRATEGY_SUPERVISOR_ID}:MR_BTC:restarted", "actor_restarted", "MR_BTC"),
    (strategy_breaker("MR_BTC", "loss"), "breaker", RISK_MONITOR_ID),
    (strategy_breaker("MR_BTC", "rejections"), "breaker", RISK_MONITOR_ID),
    (GLOBAL_LOSS, "global_breaker", RISK_MONITOR_ID),
    (GLOBAL_NOTIONAL, "global_breaker", RISK_MONITOR_ID),
    (f"{GLOBAL_LOSS}:unreadable_states", "unreadable_states", RISK_MONITOR_ID),
    ("risk_monitor:streaks_reset", "streaks_reset", RISK_MONITOR_ID),
    (f"okx:{drift_key('BTC-USDT-SWAP')}", "drift", reconciler_id("okx")),
    (f"okx:{fill_gap_key('c1')}", "fill_gap", reconciler_id("okx")),
    ("okx:fill_gap_persists:c1", "fill_gap", reconciler_id("okx")),
    ("okx:fill_gap_recurrence", "fill_gap", reconciler_id("okx")),
    (f"okx:{WS_FLOW_KEY}", "fill_gap", reconciler_id("okx")),
    ("okx:over_applied:c1", "over_applied", reconciler_id("okx")),
    ("okx:order_anomaly:c1", "order_anomaly", reconciler_id("okx")),
    ("okx:poll_failing", "poll_failing", reconciler_id("okx")),
    ("okx:venue_paused", "venue_paused", reconciler_id("okx")),
    ("okx:pause_failed", "pause_failed", reconciler_id("okx")),
    ("okx:canary_failed", "canary_failed", reconciler_id("okx")),
    ("okx:venue_released", "venue_released", reconciler_id("okx")),
    ("kill_switch:global", "kill_switch", RISK_MONITOR_ID),
    ("operator:clear-kill:global", "operator", RISK_MONITOR_ID),
    (f"operator:reset-breaker:{strategy_breaker('MR_BTC', 'loss')}", "operator", RISK_MONITOR_ID),
    ("gateway:okx:reduce_only_refused:MR_BTC", "reduce_only_refused", gateway_id("okx")),
    ("okx:stale_marks:BTC-USDT-SWAP", "stale_data", gateway_id("okx")),
]


@pytest.mark.parametrize(("key", "kind", "component"), RAISED)
def test_every_key_the_tree_raises_has_a_component_and_its_own_action(key, kind, component):
    source = classify_alert(key)
    assert (source.kind, source.component) == (kind, component)
    action = operator_action(key, Severity.CRITICAL)
    assert action and action != operator_action("no:such:shape", Severity.CRITICAL)
    assert "{" not in action and "?" not in action  # every placeholder was filled from the key


def test_actions_name_what_the_key_says():
    assert "tradetree reconcile okx" in operator_action(f"okx:{drift_key('ETH-USDT-SWAP')}", Severity.CRITICAL)
    assert "ETH-USDT-SWAP" in operator_action(f"okx:{drift_key('ETH-USDT-SWAP')}", Severity.CRITICAL)
    breaker = operator_action(strategy_breaker("MR_BTC", "loss"), Severity.CRITICAL)
    assert "tradetree resume MR_BTC" in breaker and "tradetree reset-breaker strategy:MR_BTC:loss" in breaker
    assert "tradetree audit" in operator_action("operator:clear-kill:global", Severity.WARNING)
    assert classify_alert(f"operator:reset-breaker:{GLOBAL_LOSS}").subject == GLOBAL_LOSS
    assert "SAFE MODE" in operator_action(f"{ROOT_ID}:escalated", Severity.CRITICAL)
    assert "kill switch" in operator_action("okx:pause_failed", Severity.CRITICAL)


def test_info_needs_no_action_and_an_unknown_key_gets_a_generic_one():
    assert operator_action("okx:poll_failing", Severity.INFO).startswith("No action needed")
    assert classify_alert("operator:something") == AlertSource("unknown")
    assert operator_action("operator:something", Severity.WARNING).startswith("Read the text above")
    # a segment that only contains a known word is not that kind
    assert classify_alert("okx:drift:SKILL-USDT").kind == "drift"
    assert classify_alert("StrategySupervisor:killer_bot:exit").kind == "actor_exit"


def _fields(blocks) -> dict[str, str]:
    out = {}
    for block in blocks:
        for f in block.get("fields", []):
            label, _, value = f["text"].partition("\n")
            out[label.strip("*")] = value
    return out


def test_the_message_has_the_engine_severity_component_text_and_what_to_do():
    msg = slack_message("paper", Severity.WARNING, "okx:poll_failing", "okx: REST polling failing", "3 in a row",
                        suppressed=2, held_back=1)
    kinds = [b["type"] for b in msg.blocks]
    assert kinds == ["header", "section", "section", "section", "divider", "context"]
    assert msg.blocks[0]["text"]["text"] == ":warning: WARNING · paper · okx: REST polling failing"
    assert _fields(msg.blocks) == {"Engine": "paper", "Severity": "WARNING", "Component": "`FillReconciler[okx]`",
                                   "Key": "`okx:poll_failing`"}
    assert msg.blocks[2]["text"] == {"type": "plain_text", "text": "3 in a row", "emoji": False}
    assert msg.blocks[3]["text"]["text"].startswith("*What to do:* REST polling of okx fails")
    assert "+2 similar alert(s) suppressed; 1 alert(s) held back" in msg.blocks[5]["elements"][0]["text"]
    assert msg.text.splitlines()[0] == "[WARNING] paper: okx: REST polling failing"
    assert "what to do: REST polling of okx fails" in msg.text


def test_markup_in_ids_is_escaped_and_no_text_means_no_text_block():
    msg = slack_message("<!here>", Severity.INFO, "k", "t", "", component="a<@U1>&`b`")
    fields = _fields(msg.blocks)
    assert fields["Engine"] == "&lt;!here&gt;" and fields["Component"] == "`a&lt;@U1&gt;&amp;'b'`"
    assert [b["type"] for b in msg.blocks] == ["header", "section", "section"]


@settings(max_examples=200, deadline=None)
@given(engine=st.text(max_size=200), severity=st.sampled_from(list(Severity)), key=st.text(max_size=300),
       title=st.text(max_size=400), text=st.text(max_size=5000), component=st.text(max_size=300),
       suppressed=st.integers(0, 10**6), held_back=st.integers(0, 10**6))
def test_any_alert_makes_a_message_slack_accepts(engine, severity, key, title, text, component, suppressed,
                                                 held_back):
    # slack-sdk's models check Slack's limits when they serialise: a long or odd alert must still go out.
    msg = slack_message(engine, severity, key, title, text, component=component, suppressed=suppressed,
                        held_back=held_back)
    assert msg.text and len(msg.text) <= 4000
    assert len(msg.blocks[0]["text"]["text"]) <= 150
    assert all(len(f["text"]) <= 2000 for b in msg.blocks for f in b.get("fields", []))
    assert all(len(b["text"]["text"]) <= 3000 for b in msg.blocks if b["type"] == "section" and "text" in b)
    json.dumps(msg.blocks)
