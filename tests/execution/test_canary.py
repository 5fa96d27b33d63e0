"""The canary's decisions: whether it runs, what it trades, which way, the verdict, the schedule."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tradetree.core.backoff import BackoffPolicy
from tradetree.core.config import VenueConfig
from tradetree.core.types import FillLayer, Instrument, InstrumentKind, Order, OrderState, OrderType, Position, Side
from tradetree.execution.canary import (
    CanaryState,
    CanaryStepKind,
    CanaryVerdict,
    canary_active,
    canary_instrument,
    canary_size,
    describe_fills,
    first_leg_side,
    judge,
    leftover_close,
    leftover_positions,
    legs_complete,
    plan_canary_tick,
    unsettled_canary,
)
from tradetree.execution.fill_health import WS_FLOW_KEY, FillHealthActionKind, FillHealthMonitor
from tradetree.execution.reconciliation import ReconcilerConfig

SIM_VENUE = VenueConfig(name="okx", instruments=("BTC-USDT", "BTC-USDT-SWAP", "ETH-USDT-SWAP"))
LIVE_VENUE = VenueConfig(name="okx", rest_url="https://www.okx.com", ws_url="wss://ws.okx.com:8443/ws/v5")


def _inst(inst_id: str, kind: InstrumentKind, min_size: str = "0.01") -> Instrument:
    return Instrument(venue="okx", inst_id=inst_id, kind=kind, base=inst_id.split("-")[0], quote="USDT",
                      settle="USDT" if kind is InstrumentKind.SWAP else None, tick_size=Decimal("0.1"),
                      lot_size=Decimal("0.01"), min_size=Decimal(min_size))


INSTRUMENTS = {
    "BTC-USDT": _inst("BTC-USDT", InstrumentKind.SPOT),
    "BTC-USDT-SWAP": _inst("BTC-USDT-SWAP", InstrumentKind.SWAP),
    "ETH-USDT-SWAP": _inst("ETH-USDT-SWAP", InstrumentKind.SWAP, min_size="0.1"),
}


def test_on_by_default_for_the_embedded_simulator_only():
    assert canary_active(ReconcilerConfig(), SIM_VENUE)
    assert not canary_active(ReconcilerConfig(), LIVE_VENUE)
    assert canary_active(ReconcilerConfig(canary_enabled=True), LIVE_VENUE)
    assert not canary_active(ReconcilerConfig(canary_enabled=False), SIM_VENUE)


def test_instrument_defaults_to_the_first_configured_swap_and_must_be_a_swap():
    assert canary_instrument(ReconcilerConfig(), SIM_VENUE, INSTRUMENTS).inst_id == "BTC-USDT-SWAP"
    chosen = canary_instrument(ReconcilerConfig(canary_inst_id="ETH-USDT-SWAP"), SIM_VENUE, INSTRUMENTS)
    assert chosen.inst_id == "ETH-USDT-SWAP"
    with pytest.raises(ValueError, match="not a swap"):
        canary_instrument(ReconcilerConfig(canary_inst_id="BTC-USDT"), SIM_VENUE, INSTRUMENTS)
    with pytest.raises(ValueError, match="not listed"):
        canary_instrument(ReconcilerConfig(canary_inst_id="SOL-USDT-SWAP"), SIM_VENUE, INSTRUMENTS)
    spot_only = VenueConfig(name="okx", instruments=("BTC-USDT",))
    with pytest.raises(ValueError, match="no configured swap"):
        canary_instrument(ReconcilerConfig(), spot_only, INSTRUMENTS)


def test_size_is_the_minimum_unless_configured_and_must_be_tradable():
    swap = INSTRUMENTS["ETH-USDT-SWAP"]
    assert canary_size(ReconcilerConfig(), swap) == Decimal("0.1")
    assert canary_size(ReconcilerConfig(canary_size=Decimal("0.3")), swap) == Decimal("0.3")
    with pytest.raises(ValueError, match="below the minimum"):
        canary_size(ReconcilerConfig(canary_size=Decimal("0.05")), swap)
    with pytest.raises(ValueError, match="multiple of the lot"):
        canary_size(ReconcilerConfig(canary_size=Decimal("0.105")), swap)


def test_backoff_bounds_are_validated():
    with pytest.raises(ValueError, match="canary_max_interval_secs"):
        ReconcilerConfig(canary_interval_secs=10, canary_max_interval_secs=5)


@pytest.mark.parametrize(("net", "side"), [(Decimal(0), Side.BUY), (Decimal(3), Side.BUY), (Decimal(-2), Side.SELL)])
def test_first_leg_follows_the_net_position_so_the_way_back_reduces_it(net, side):
    assert first_leg_side(net) is side


def test_leftover_is_closed_reduce_only_when_the_account_allows_it():
    assert leftover_close(Decimal(0), Decimal(5)) is None
    close = leftover_close(Decimal("0.01"), Decimal("2"))
    assert (close.side, close.size, close.reduce_only) == (Side.SELL, Decimal("0.01"), True)
    close = leftover_close(Decimal("-0.01"), Decimal("-0.01"))
    assert (close.side, close.reduce_only) == (Side.BUY, True)
    # The account is net short although our canary leg is long: a reduce-only sell would be refused.
    close = leftover_close(Decimal("0.01"), Decimal("-3"))
    assert (close.side, close.reduce_only) == (Side.SELL, False)
    assert not leftover_close(Decimal("0.02"), Decimal("0.01")).reduce_only


def test_verdict_needs_every_fill_applied_and_the_ws_to_have_delivered_them():
    ws, poll = FillLayer.WS, FillLayer.POLL
    assert judge(2, {"a": ws, "b": ws}, 2, all_applied=True) is CanaryVerdict.WS
    # The poller applied them a moment before the WS delivered them: the WS still carried them.
    assert judge(2, {"a": poll, "b": poll}, 2, all_applied=True) is CanaryVerdict.WS
    assert judge(2, {"a": poll, "b": poll}, 0, all_applied=True) is CanaryVerdict.NOT_WS
    assert judge(2, {"a": ws, "b": poll}, 1, all_applied=True) is CanaryVerdict.NOT_WS
    assert judge(1, {"a": ws}, 1, all_applied=False) is CanaryVerdict.INCOMPLETE
    assert judge(0, {}, 5, all_applied=True) is CanaryVerdict.INCOMPLETE


def test_the_state_waits_an_interval_backs_off_while_failing_and_starts_over():
    state = CanaryState.initial(2.0, 5.0)
    assert not state.due(100.0)
    state = state.armed(100.0).armed(101.0)  # arming again does not push it back
    assert not state.due(101.9) and state.due(102.0)
    state = state.after(102.0, CanaryVerdict.NOT_WS)
    assert state.interval_secs == 4.0 and state.next_at == 106.0
    state = state.after(106.0, CanaryVerdict.INCOMPLETE)
    assert state.interval_secs == 5.0  # capped
    state = state.after(111.0, CanaryVerdict.FAILED)
    assert state.interval_secs == 5.0 and state.failures_in_row == 3
    state = state.after(116.0, CanaryVerdict.WS)
    assert state.interval_secs == 2.0 and state.failures_in_row == 0
    state = state.after(118.0, CanaryVerdict.NOT_WS).disarmed()
    assert not state.is_armed and state.interval_secs == 2.0
    with pytest.raises(ValueError):
        CanaryState.initial(3.0, 2.0)


def test_ws_flow_loss_alerts_and_pauses_once_and_resolves_once():
    monitor = FillHealthMonitor("okx", gap_alert_secs=1.0, ws_flow_window_secs=60.0)
    counts = {"ws": {"delivered": 0, "applied": 0}, "poll": {"delivered": 0, "applied": 0}}
    monitor.observe_layer_counts(counts, 0.0)
    monitor.observe_layer_counts({**counts, "poll": {"delivered": 1, "applied": 1}}, 0.5)
    assert monitor.check_ws_flow(1.0) == []  # unmatched for 0.5 s only
    actions = monitor.check_ws_flow(1.6)
    assert [(a.kind, a.key) for a in actions] == [(FillHealthActionKind.ALERT, WS_FLOW_KEY),
                                                  (FillHealthActionKind.PAUSE_VENUE, WS_FLOW_KEY)]
    assert monitor.ws_flow_episode_open and monitor.check_ws_flow(2.0) == []
    monitor.observe_layer_counts({"ws": {"delivered": 1, "applied": 0}, "poll": {"delivered": 1, "applied": 1}}, 3.0)
    assert [(a.kind, a.key) for a in monitor.check_ws_flow(3.0)] == [(FillHealthActionKind.RESOLVED, WS_FLOW_KEY)]
    assert monitor.check_ws_flow(4.0) == [] and monitor.ws_flow_losses == 1


# -- the schedule as a state machine, and one tick -------------------------------------------------


def test_the_state_machine_returns_new_states_and_leaves_the_old_one_alone():
    initial = CanaryState.initial(2.0, 5.0)
    armed = initial.armed(10.0)
    assert not initial.is_armed and armed.next_at == 12.0
    assert armed.armed(11.0) is armed  # arming again changes nothing
    failed = armed.after(12.0, CanaryVerdict.NOT_WS)
    assert (failed.interval_secs, failed.failures_in_row, failed.next_at) == (4.0, 1, 16.0)
    assert armed.interval_secs == 2.0
    capped = failed.after(16.0, CanaryVerdict.FAILED)
    assert (capped.interval_secs, capped.next_at) == (5.0, 21.0)
    good = capped.after(21.0, CanaryVerdict.WS)
    assert (good.interval_secs, good.failures_in_row, good.next_at) == (2.0, 0, 23.0)
    assert capped.disarmed() == initial


@pytest.mark.parametrize("base, cap", [(2.0, 5.0), (0.1, 0.4), (3.0, 3.0), (1.5, 1000.0)])
def test_the_backoff_doubles_per_failure_in_a_row_up_to_the_maximum_as_the_shared_policy(base, cap):
    state = CanaryState.initial(base, cap).armed(0.0)
    assert state.backoff == BackoffPolicy(base_secs=base, cap_secs=cap)
    intervals = []
    for _ in range(80):
        state = state.after(0.0, CanaryVerdict.NOT_WS)
        intervals.append(state.interval_secs)
    assert intervals == [min(base * 2**k, cap) for k in range(1, 81)]
    assert state.failures_in_row == 80 and state.after(0.0, CanaryVerdict.WS).interval_secs == base


def tick(state, now=10.0, paused=True, kill=None, poll_healthy=True):
    return plan_canary_tick(state, now=now, fill_health_paused=paused, kill_flag=kill, poll_healthy=poll_healthy)


def test_a_tick_runs_a_round_trip_only_while_paused_due_unkilled_and_polled():
    state = CanaryState.initial(2.0, 5.0)
    idle = tick(state.armed(0.0), paused=False)
    assert idle.kind is CanaryStepKind.IDLE and not idle.state.is_armed
    first = tick(state, now=10.0)
    assert first.kind is CanaryStepKind.NOT_DUE and first.state.next_at == 12.0
    killed = tick(first.state, now=12.0, kill="operator")
    assert killed.kind is CanaryStepKind.BLOCKED and killed.reason == "kill flag set: operator"
    blind = tick(first.state, now=12.0, poll_healthy=False)
    assert blind.kind is CanaryStepKind.BLOCKED and "REST poll is not healthy" in blind.reason
    go = tick(first.state, now=12.0)
    assert go.kind is CanaryStepKind.PROCEED and go.state == first.state


def test_an_earlier_canary_order_must_be_final_with_its_fills_applied():
    def order(coid, state, filled):
        return Order(client_order_id=coid, strategy_id="_canary", venue="okx", inst_id="BTC-USDT-SWAP",
                     side=Side.BUY, type=OrderType.MARKET, size=Decimal(1), state=state,
                     filled_size=Decimal(filled), created_ms=1, updated_ms=1)

    assert unsettled_canary([]) == ""
    assert unsettled_canary([(order("a", OrderState.FILLED, "1"), Decimal(1))]) == ""
    assert unsettled_canary([(order("a", OrderState.FILLED, "1"), Decimal(0))]) == (
        "earlier canary order a still settling (filled)")
    assert "order b still settling (live)" in unsettled_canary([(order("b", OrderState.LIVE, "0"), Decimal(0))])


def test_legs_are_complete_when_every_leg_applied_what_the_venue_filled():
    assert legs_complete([Decimal(1), Decimal(1)], [Decimal(1), Decimal(1)])
    assert not legs_complete([Decimal(1), Decimal(0)], [Decimal(1), Decimal(1)])
    with pytest.raises(ValueError):
        legs_complete([Decimal(1)], [Decimal(1), Decimal(1)])


def test_the_detail_names_the_layers_that_applied_the_fills():
    assert describe_fills({"t1": FillLayer.WS, "t2": FillLayer.POLL}, 1) == (
        "2 canary fill(s) applied by poll, ws; the WS delivered 1 fill(s) meanwhile")
    assert describe_fills({}, 0) == "0 canary fill(s) applied by no layer; the WS delivered 0 fill(s) meanwhile"


def test_leftovers_are_the_venues_non_flat_canary_positions():
    positions = [Position(strategy_id="_canary", venue="okx", inst_id="A", qty=Decimal(1)),
                 Position(strategy_id="_canary", venue="okx", inst_id="B", qty=Decimal(0)),
                 Position(strategy_id="_canary", venue="binance", inst_id="A", qty=Decimal(-1))]
    assert [p.inst_id for p in leftover_positions(positions, "okx")] == ["A"]
