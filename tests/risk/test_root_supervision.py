"""The root supervisor's heartbeat as a verdict: the refusal text, the latch, the gates' use of it, the alarm."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tradetree.core.control_state import ControlSnapshot
from tradetree.core.names import ROOT_HEARTBEAT_STALE_SECS
from tradetree.core.types import OrderIntent, Side, StrategyState
from tradetree.execution.gateway_rules import GatewayGateInputs, strategy_order_refusals, wind_down_refusals
from tradetree.risk.config import RiskConfig
from tradetree.risk.freshness_gate import GateInputs, check
from tradetree.risk.root_supervision import (
    ROOT_ALERT_KEY,
    RootAlarm,
    RootLatch,
    parse_heartbeat_ms,
    root_alarm_step,
    root_heartbeat_age_secs,
    root_unsupervised_reason,
)

NOW = 1_700_000_000_000  # 22:13:20 UTC


def test_a_fresh_heartbeat_is_supervised():
    assert root_unsupervised_reason(NOW - 9_999, NOW, 10.0) is None
    assert root_unsupervised_reason(NOW - 10_000, NOW, 10.0) is None  # stale *after* 10 s
    assert root_unsupervised_reason(NOW + 5_000, NOW, 10.0) is None  # a root clock slightly ahead


def test_a_stale_heartbeat_says_how_old():
    assert root_unsupervised_reason(NOW - 12_300, NOW, 10.0) == (
        "tree unsupervised: RootSupervisor heartbeat 12.3s old (stale after 10s)")


def test_a_missing_heartbeat_is_unsupervised():
    assert root_unsupervised_reason(None, NOW, 10.0) == (
        "tree unsupervised: no RootSupervisor heartbeat in Redis (stale after 10s)")


def test_the_default_staleness_is_the_contracts():
    assert root_unsupervised_reason(NOW - int(ROOT_HEARTBEAT_STALE_SECS * 1000) - 1, NOW) is not None
    assert root_unsupervised_reason(NOW - int(ROOT_HEARTBEAT_STALE_SECS * 1000), NOW) is None


@given(hb=st.one_of(st.none(), st.integers(0, 2 * NOW)), now=st.integers(0, 2 * NOW),
       stale=st.floats(0.1, 3600, allow_nan=False))
def test_unsupervised_exactly_when_missing_or_older_than_stale(hb, now, stale):
    reason = root_unsupervised_reason(hb, now, stale)
    expected = hb is None or now - hb > stale * 1000
    assert (reason is not None) == expected
    if reason is not None:
        assert reason.startswith("tree unsupervised: ")


def test_heartbeat_parsing_and_age():
    assert parse_heartbeat_ms(b"123") == 123 and parse_heartbeat_ms("123") == 123
    assert parse_heartbeat_ms(None) is None and parse_heartbeat_ms(b"soon") is None
    assert root_heartbeat_age_secs(None, NOW) is None
    assert root_heartbeat_age_secs(NOW - 1_500, NOW) == 1.5
    assert root_heartbeat_age_secs(NOW + 1_500, NOW) == 0


def test_the_latch_arms_once_a_heartbeat_was_seen_and_never_disarms():
    latch = RootLatch()
    assert latch.observe(False) is False and latch.observe(False) is False
    assert latch.observe(True) is True
    assert latch.observe(False) is True  # the root's field vanished: still judged (and refused)


# -- the freshness gate (strategy hosts) -----------------------------------------------------------

CFG = RiskConfig(max_verification_age_secs=10, max_market_data_age_secs=5)


def _intent(**kw) -> OrderIntent:
    base = dict(strategy_id="S1", venue="okx", inst_id="BTC-USDT-SWAP", side=Side.BUY, size=Decimal(1))
    return OrderIntent(**{**base, **kw})


def _gate(**kw) -> GateInputs:
    control = ControlSnapshot(venue="okx", verified_at_ms=NOW - 1_000, discrepancies={}, venue_pause=None,
                              breakers={})
    base = dict(now_ms=NOW, strategy_id="S1", strategy_state="RUNNING", kill_flag=None, control=control,
                last_market_data_ms=NOW - 500)
    return GateInputs(**{**base, **kw})


def test_the_freshness_gate_refuses_opening_risk_while_unsupervised():
    stale = _gate(root_heartbeat_ms=NOW - 12_300, root_armed=True)
    assert check(_intent(), stale, CFG) == [
        "tree unsupervised: RootSupervisor heartbeat 12.3s old (stale after 10s)"]
    assert check(_intent(), _gate(root_heartbeat_ms=None, root_armed=True), CFG) != []
    assert check(_intent(reduce_only=True, side=Side.SELL), stale, CFG) == []  # closing stays possible


def test_the_freshness_gate_passes_with_a_fresh_root_or_when_not_armed():
    assert check(_intent(), _gate(root_heartbeat_ms=NOW - 1_000, root_armed=True), CFG) == []
    assert check(_intent(), _gate(root_heartbeat_ms=None, root_armed=False), CFG) == []
    assert check(_intent(), _gate(), CFG) == []  # a host that does not watch the root


# -- the gateway's gate ------------------------------------------------------------------------------


def _gw(**kw) -> GatewayGateInputs:
    return GatewayGateInputs(**{"strategy_id": "S1", "strategy_state": StrategyState.RUNNING, "now_ms": NOW, **kw})


def test_the_gateway_refuses_a_strategys_opening_order_while_unsupervised():
    stale = _gw(root_heartbeat_ms=NOW - 12_300, root_armed=True)
    assert strategy_order_refusals(_intent(), stale) == [
        "tree unsupervised: RootSupervisor heartbeat 12.3s old (stale after 10s)"]
    assert strategy_order_refusals(_intent(reduce_only=True, side=Side.SELL), stale) == []
    assert strategy_order_refusals(_intent(), _gw(root_armed=True)) != []  # missing, once armed
    assert strategy_order_refusals(_intent(), _gw(root_heartbeat_ms=NOW - 500, root_armed=True)) == []
    assert strategy_order_refusals(_intent(), _gw(root_armed=False)) == []


def test_the_kill_switchs_clips_pass_an_unsupervised_tree():
    for hb in (None, NOW - 60_000):
        clip = _gw(strategy_state=StrategyState.WINDING_DOWN, root_heartbeat_ms=hb, root_armed=True)
        assert wind_down_refusals(_intent(reduce_only=True, side=Side.SELL), clip) == []


# -- the risk monitor's alarm --------------------------------------------------------------------------


def test_the_alarm_alerts_once_when_stale_and_once_on_recovery():
    alarm = RootAlarm()
    alarm, alert = root_alarm_step(alarm, NOW - 1_000, NOW, armed=True)
    assert alert is None and alarm.since_ms is None

    last = NOW + 1_000
    alarm, alert = root_alarm_step(alarm, last, NOW + 12_000, armed=True)
    assert alert is not None and alert.severity == "critical" and alert.key == ROOT_ALERT_KEY
    assert alert.text.startswith("tree unsupervised since 22:13:21 UTC: strategies refused new risk; "
                                 "the root is being re-created by Ray / run tradetree status")
    assert alarm.since_ms == last
    for later in (NOW + 13_000, NOW + 60_000):  # every loop after: no repeat
        alarm, again = root_alarm_step(alarm, last, later, armed=True)
        assert again is None and alarm.since_ms == last

    alarm, back = root_alarm_step(alarm, NOW + 61_000, NOW + 61_500, armed=True)
    assert back is not None and back.severity == "info" and back.key != ROOT_ALERT_KEY
    assert "heartbeats again" in back.text and alarm.since_ms is None
    alarm, none = root_alarm_step(alarm, NOW + 62_000, NOW + 62_500, armed=True)
    assert none is None


def test_a_missing_heartbeat_alarms_from_when_it_was_noticed():
    alarm, alert = root_alarm_step(RootAlarm(), None, NOW, armed=True)
    assert alert is not None and alarm.since_ms == NOW and "since 22:13:20 UTC" in alert.text


@pytest.mark.parametrize("hb", [None, NOW - 60_000])
def test_no_alarm_before_a_root_heartbeat_was_ever_seen(hb):
    alarm = RootAlarm()
    assert root_alarm_step(alarm, hb, NOW, armed=False) == (alarm, None)
