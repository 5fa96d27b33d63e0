from decimal import Decimal

import pytest
from pydantic import ValidationError

from tradetree.core.control_state import ControlSnapshot
from tradetree.core.errors import StoreError, StoreUnavailable
from tradetree.core.types import OrderDenied, OrderIntent, Side, StrategyState
from tradetree.risk.config import RiskConfig
from tradetree.risk.freshness_gate import (
    GATE_STATE_UNKNOWN_REDIS,
    GateInputs,
    applicable_breakers,
    check,
    deny,
    unknown_inputs,
    unknown_reason,
)

NOW = 1_700_000_000_000
CFG = RiskConfig(max_verification_age_secs=10, max_market_data_age_secs=5)


def _intent(**kw):
    base = dict(strategy_id="S1", venue="okx", inst_id="BTC-USDT-SWAP", side=Side.BUY, size=Decimal(1))
    base.update(kw)
    return OrderIntent(**base)


def _control(**kw):
    base = dict(venue="okx", verified_at_ms=NOW - 1_000, discrepancies={}, venue_pause=None, breakers={})
    base.update(kw)
    return ControlSnapshot(**base)


def _inputs(**kw):
    base = dict(now_ms=NOW, strategy_id="S1", strategy_state="RUNNING", kill_flag=None,
                control=_control(), last_market_data_ms=NOW - 500)
    base.update(kw)
    return GateInputs(**base)


def _one(reasons, needle):
    assert len(reasons) == 1, reasons
    assert needle in reasons[0], reasons
    return reasons[0]


def test_allowed_when_everything_is_fresh():
    assert check(_intent(), _inputs(), CFG) == []
    assert check(_intent(reduce_only=True, side=Side.SELL), _inputs(), CFG) == []


def test_inputs_are_required_fields():
    with pytest.raises(ValueError):
        GateInputs(now_ms=NOW, strategy_id="S1")


@pytest.mark.parametrize(
    "inputs, needle",
    [
        (_inputs(control=_control(verified_at_ms=None)), "position verification on okx unknown"),
        (_inputs(control=_control(verified_at_ms=NOW - 10_001)), "position verification on okx stale"),
        (_inputs(control=_control(discrepancies={"order:1": {"detail": "filled 2, applied 1", "since_ms": 1}})),
         "discrepancy open on okx: order:1 filled 2, applied 1"),
        (_inputs(last_market_data_ms=NOW - 5_001), "market data stale: 5.0 s old"),
        (_inputs(last_market_data_ms=None), "market data unknown"),
        (_inputs(control=_control(venue_pause="fill gap recurs")), "venue okx paused: fill gap recurs"),
        (_inputs(control=_control(breakers={"global:loss": {"reason": "lost 500"}})), "breaker global:loss open: lost 500"),
        (_inputs(control=_control(breakers={"venue:okx:drift": {"reason": "d"}})), "breaker venue:okx:drift open"),
        (_inputs(control=_control(breakers={"strategy:S1:rejections": {"reason": "5"}})), "breaker strategy:S1:rejections"),
        (_inputs(control=_control(breakers={"fill_gap": {"reason": "?"}})), "breaker fill_gap open"),
        (_inputs(kill_flag="operator kill"), "kill flag set: operator kill"),
        (_inputs(kill_flag=""), "kill flag set: no reason given"),
        (_inputs(strategy_state="PAUSED"), "S1 is PAUSED, not RUNNING"),
        (_inputs(strategy_state="KILLED"), "S1 is KILLED, not RUNNING"),
        (_inputs(strategy_state="WINDING_DOWN"), "WINDING_DOWN: only reduce-only"),
        (_inputs(strategy_state=None), "strategy state unknown"),
        (_inputs(control=None), "control state unknown"),
        (_inputs(strategy_id="S2"), "gate inputs are for strategy 'S2'"),
        (_inputs(control=_control(venue="binance")), "control state is for venue 'binance'"),
    ],
)
def test_each_condition_refuses(inputs, needle):
    _one(check(_intent(), inputs, CFG), needle)


def test_breakers_of_other_strategies_and_venues_do_not_apply():
    breakers = {"strategy:S2:flip": {}, "venue:binance:drift": {}, "strategy:S1x:loss": {}}
    assert check(_intent(), _inputs(control=_control(breakers=breakers)), CFG) == []
    assert applicable_breakers({**breakers, "strategy:S1:loss": {}, "global:x": {}},
                               venue="okx", strategy_id="S1") == ["global:x", "strategy:S1:loss"]


def test_future_timestamps_count_as_fresh():
    assert check(_intent(), _inputs(last_market_data_ms=NOW + 2_000), CFG) == []


def test_unknown_inputs_refuse_and_say_what_is_unknown():
    inputs = _inputs(strategy_state=None, kill_flag=None, control=None,
                     unknown=(GATE_STATE_UNKNOWN_REDIS,))
    assert check(_intent(), inputs, CFG) == [GATE_STATE_UNKNOWN_REDIS]
    # and a wind-down close cannot slip through unknown state either
    assert check(_intent(reduce_only=True), inputs, CFG) == [GATE_STATE_UNKNOWN_REDIS]


def test_wind_down_reduce_only_passes_kill_flag_and_breakers():
    inputs = _inputs(strategy_state="WINDING_DOWN", kill_flag="kill switch",
                     control=_control(breakers={"global:loss": {"reason": "r"},
                                                "strategy:S1:flip": {"reason": "f"}}))
    assert check(_intent(reduce_only=True, side=Side.SELL), inputs, CFG) == []
    # the same inputs refuse a non-reduce-only order (for every reason that applies)
    reasons = check(_intent(), inputs, CFG)
    assert any("WINDING_DOWN" in r for r in reasons)
    assert any("kill flag" in r for r in reasons) and any("global:loss" in r for r in reasons)


def test_wind_down_still_needs_fresh_market_data_and_verified_positions():
    base = dict(strategy_state="WINDING_DOWN", kill_flag="kill switch")
    intent = _intent(reduce_only=True)
    _one(check(intent, _inputs(**base, last_market_data_ms=NOW - 60_000), CFG), "market data stale")
    _one(check(intent, _inputs(**base, control=_control(verified_at_ms=None)), CFG), "verification")
    _one(check(intent, _inputs(**base, control=_control(venue_pause="drift")), CFG), "paused")


def test_running_strategy_reduce_only_does_not_pass_the_kill_flag():
    _one(check(_intent(reduce_only=True), _inputs(kill_flag="k"), CFG), "kill flag set")


def test_deny_builds_the_event_and_refuses_empty_reasons():
    denied = deny(_intent(), ["kill flag set: k"], ts_ms=NOW, checked_by="gateway")
    assert isinstance(denied, OrderDenied)
    assert denied.reasons == ("kill flag set: k",) and denied.checked_by == "gateway"
    with pytest.raises(ValueError):
        deny(_intent(), [], ts_ms=NOW, checked_by="gateway")


@pytest.mark.parametrize(
    "exc, expected",
    [
        (StoreUnavailable("down"), GATE_STATE_UNKNOWN_REDIS),
        (StoreError("WRONGTYPE"), "state unknown: WRONGTYPE"),
        (RuntimeError("bug"), "state unknown: RuntimeError: bug"),
    ],
)
def test_a_read_error_becomes_an_unknown_reason_that_refuses(exc, expected):
    assert unknown_reason(exc) == expected
    inputs = unknown_inputs(NOW, "S1", NOW - 100, unknown_reason(exc))
    assert inputs.unknown == (expected,) and inputs.last_market_data_ms == NOW - 100
    assert inputs.strategy_state is None and inputs.control is None and inputs.kill_flag is None
    assert check(_intent(), inputs, CFG) == [expected]
    assert check(_intent(reduce_only=True), inputs, CFG) == [expected]


def test_the_strategy_state_is_the_enum_whether_given_as_it_or_as_the_stored_text():
    assert _inputs(strategy_state="WINDING_DOWN").strategy_state is StrategyState.WINDING_DOWN
    assert _inputs(strategy_state=StrategyState.PAUSED).strategy_state is StrategyState.PAUSED
    with pytest.raises(ValidationError):
        _inputs(strategy_state="running")  # not a state the store writes: refused, never read as RUNNING
    assert check(_intent(), _inputs(strategy_state=StrategyState.RUNNING), CFG) == []
