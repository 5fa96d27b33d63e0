"""The gateway's own gate (pure): which orders it refuses, on a snapshot of Redis."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tradetree.core.types import OrderIntent, Side, StrategyState
from tradetree.execution.gateway_rules import GatewayGateInputs, strategy_order_refusals, wind_down_refusals


def intent(strategy: str = "A", *, reduce_only: bool = False, reason: str = "") -> OrderIntent:
    return OrderIntent(strategy_id=strategy, venue="okx", inst_id="BTC-USDT-SWAP", side=Side.SELL,
                       size=Decimal(1), reduce_only=reduce_only, reason=reason)


def inputs(state: StrategyState | None = StrategyState.RUNNING, **changes) -> GatewayGateInputs:
    return GatewayGateInputs(strategy_id=changes.pop("strategy_id", "A"), strategy_state=state, **changes)


def test_a_running_strategy_on_a_quiet_venue_passes():
    assert strategy_order_refusals(intent(), inputs()) == []


@pytest.mark.parametrize(("snapshot", "reason"), [
    (inputs(kill_flag="operator: stop"), "kill flag set: operator: stop"),
    (inputs(kill_flag=""), "kill flag set: no reason given"),
    (inputs(StrategyState.PAUSED), "strategy A is PAUSED, not RUNNING"),
    (inputs(StrategyState.WINDING_DOWN), "strategy A is WINDING_DOWN, not RUNNING"),
    (inputs(StrategyState.KILLED), "strategy A is KILLED, not RUNNING"),
    (inputs(None), "strategy A has no state in Redis, not RUNNING"),
    (inputs(venue_pauses={"fill_health": "fills not arriving"}), "venue okx paused (fill_health: fills not arriving)"),
    (inputs(venue_pauses={"operator": ""}), "venue okx paused (operator)"),
    (inputs(unknown="Redis error: WRONGTYPE"), "gateway gate: state unknown: Redis error: WRONGTYPE"),
    (inputs(strategy_id="B"), "gateway gate: inputs are for strategy 'B', not 'A'"),
])
def test_a_strategy_order_is_refused_for_each_reason_alone(snapshot, reason):
    assert strategy_order_refusals(intent(), snapshot) == [reason]


def test_every_reason_is_named_together():
    both = inputs(StrategyState.PAUSED, kill_flag="k", venue_pauses={"drift": "d", "operator": "o"})
    assert strategy_order_refusals(intent(), both) == [
        "kill flag set: k", "strategy A is PAUSED, not RUNNING", "venue okx paused (drift: d; operator: o)"]


def test_nothing_in_a_strategys_intent_makes_it_a_wind_down_clip():
    # A reduce-only close that calls itself the kill switch's, of a strategy the kill switch winds down.
    clip_like = intent(reduce_only=True, reason="kill switch wind-down")
    assert strategy_order_refusals(clip_like, inputs(StrategyState.WINDING_DOWN, kill_flag="k")) == [
        "kill flag set: k", "strategy A is WINDING_DOWN, not RUNNING"]


@pytest.mark.parametrize("state", [StrategyState.WINDING_DOWN, StrategyState.KILLED])
def test_clips_of_a_strategy_the_kill_switch_owns_pass_the_flag_and_pauses(state):
    snapshot = inputs(state, kill_flag="k", venue_pauses={"fill_health": "gap", "operator": "o"})
    assert wind_down_refusals(intent(reduce_only=True), snapshot) == []
    assert wind_down_refusals(intent(reduce_only=False), snapshot) == []  # an offsetting clip, when allowed


@pytest.mark.parametrize(("state", "shown"), [
    (StrategyState.RUNNING, "RUNNING"), (StrategyState.PAUSED, "PAUSED"), (None, "no state in Redis")])
def test_an_account_level_order_of_any_other_strategy_is_refused(state, shown):
    assert wind_down_refusals(intent(reduce_only=True), inputs(state)) == [
        f"not a wind-down clip: strategy A is {shown}; account-level orders are the kill switch's, "
        f"for strategies it winds down"]


def test_unknown_inputs_refuse_clips_too():
    assert wind_down_refusals(intent(), inputs(StrategyState.WINDING_DOWN, unknown="garbled")) == [
        "gateway gate: state unknown: garbled"]
    assert wind_down_refusals(intent(), inputs(StrategyState.WINDING_DOWN, strategy_id="B")) != []
