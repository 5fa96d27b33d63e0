from decimal import Decimal as D

import pytest

from tradetree import risk
from tradetree.core.types import Order, OrderState, OrderType, Position, Side, position_id
from tradetree.risk.config import RiskConfig
from tradetree.risk.rules import (
    ExposureMonitor,
    FlipDetector,
    LossMonitor,
    RejectionStreak,
    Trip,
    breaker_alert,
    daily_pnl_by_strategy,
    pause_targets,
    paused_summary,
    rejection_streak_of,
    strategy_breaker,
)

INST = "BTC-USDT-SWAP"


def _order(coid, state, *, sid="S1", side=Side.BUY, size="1", reduce_only=False, filled="0", ms=1_000):
    o = Order(client_order_id=coid, strategy_id=sid, venue="okx", inst_id=INST, side=side,
              type=OrderType.MARKET, size=D(size), reduce_only=reduce_only, created_ms=ms, updated_ms=ms)
    return o.model_copy(update={"state": state, "filled_size": D(filled), "reject_reason": "51008 balance"
                                if state is OrderState.REJECTED else ""})


def _pos(qty, *, sid="S1", ms=2_000, inst=INST, **kw):
    return Position(strategy_id=sid, venue="okx", inst_id=inst, qty=D(qty), updated_ms=ms, **kw)


# -- rejection streak ----------------------------------------------------------------------

def test_streak_trips_exactly_once_at_the_limit():
    streak = RejectionStreak(5)
    trips = [streak.on_order(_order(f"r{i}", OrderState.REJECTED)) for i in range(8)]
    assert [t is not None for t in trips] == [False] * 4 + [True] + [False] * 3
    assert trips[4].breaker == "strategy:S1:rejections" and trips[4].strategy_id == "S1"
    assert "5 consecutive venue rejections; last: 51008 balance" == trips[4].reason
    assert streak.count("S1") == 8


def test_streak_counts_each_order_once():
    streak = RejectionStreak(2)
    assert streak.on_order(_order("r1", OrderState.REJECTED)) is None
    assert streak.on_order(_order("r1", OrderState.REJECTED)) is None  # the same rejection written twice
    assert streak.count("S1") == 1
    assert streak.on_order(_order("r2", OrderState.REJECTED)) is not None


@pytest.mark.parametrize("state, filled", [(OrderState.LIVE, "0"), (OrderState.FILLED, "1"),
                                           (OrderState.PARTIALLY_FILLED, "0.5"), (OrderState.CANCELED, "0.5")])
def test_accepted_order_resets_and_rearms(state, filled):
    streak = RejectionStreak(3)
    for i in range(3):
        streak.on_order(_order(f"a{i}", OrderState.REJECTED))
    streak.on_order(_order("ok", state, filled=filled))
    assert streak.count("S1") == 0
    trips = [streak.on_order(_order(f"b{i}", OrderState.REJECTED)) for i in range(3)]
    assert trips[2] is not None and trips[:2] == [None, None]


def test_pending_and_unfilled_cancel_do_not_reset():
    streak = RejectionStreak(3)
    streak.on_order(_order("a", OrderState.REJECTED))
    streak.on_order(_order("p", OrderState.PENDING_NEW))
    streak.on_order(_order("c", OrderState.CANCELED))
    streak.on_order(_order("b", OrderState.REJECTED))
    assert streak.on_order(_order("d", OrderState.REJECTED)) is not None


def test_streaks_are_per_strategy_and_survive_snapshot_restore():
    streak = RejectionStreak(3)
    for i in range(2):
        streak.on_order(_order(f"a{i}", OrderState.REJECTED))
        streak.on_order(_order(f"b{i}", OrderState.REJECTED, sid="S2"))
    streak.on_order(_order("a9", OrderState.REJECTED))  # trips S1 only
    again = RejectionStreak(3)
    again.restore(streak.snapshot())
    assert again.snapshot() == {"S1": {"count": 3, "tripped": True}, "S2": {"count": 2, "tripped": False}}
    assert again.on_order(_order("a10", OrderState.REJECTED)) is None  # S1 already tripped
    assert again.on_order(_order("b9", OrderState.REJECTED, sid="S2")) is not None
    again.rearm("S1")
    assert again.count("S1") == 0


# -- flip detection ---------------------------------------------------------------------------

def test_intended_flip_close_then_open_is_not_a_trip():
    flips = FlipDetector()
    assert flips.on_position(_pos("1")) is None  # first sight: no verdict
    flips.on_order(_order("close", OrderState.FILLED, side=Side.SELL, reduce_only=True, filled="1"))
    flips.on_order(_order("open", OrderState.FILLED, side=Side.SELL, filled="1"))
    assert flips.on_position(_pos("-1", ms=3_000)) is None


def test_duplicate_close_flip_is_unintended():
    flips = FlipDetector()
    flips.on_position(_pos("1"))
    flips.on_order(_order("close1", OrderState.FILLED, side=Side.SELL, reduce_only=True, filled="1"))
    flips.on_order(_order("close2", OrderState.FILLED, side=Side.SELL, reduce_only=True, filled="1"))
    trip = flips.on_position(_pos("-1", ms=3_000))
    assert trip is not None and trip.breaker == "strategy:S1:flip" and trip.strategy_id == "S1"
    assert "flipped from long to short (-1)" in trip.reason
    assert flips.on_position(_pos("-1", ms=4_000)) is None  # one flip, one trip


def test_flip_through_flat_is_seen():
    flips = FlipDetector()
    flips.on_position(_pos("-2"))
    assert flips.on_position(_pos("0", ms=3_000)) is None
    trip = flips.on_position(_pos("2", ms=4_000))
    assert trip is not None and "from short to long" in trip.reason


def test_opening_order_too_small_or_wrong_side_does_not_explain():
    flips = FlipDetector()
    flips.on_position(_pos("1"))
    flips.on_order(_order("open", OrderState.FILLED, side=Side.SELL, size="1", filled="1"))
    assert flips.on_position(_pos("-2", ms=3_000)) is not None  # opened 1, position -2
    flips = FlipDetector()
    flips.on_position(_pos("1"))
    flips.on_order(_order("buy", OrderState.FILLED, side=Side.BUY, size="5", filled="5"))
    assert flips.on_position(_pos("-1", ms=3_000)) is not None


def test_rejected_canceled_stale_and_other_strategy_orders_do_not_explain():
    flips = FlipDetector(window_ms=60_000)
    flips.on_position(_pos("1"))
    flips.on_order(_order("rej", OrderState.REJECTED, side=Side.SELL))
    flips.on_order(_order("can", OrderState.CANCELED, side=Side.SELL))
    flips.on_order(_order("old", OrderState.FILLED, side=Side.SELL, filled="1", ms=1_000))
    flips.on_order(_order("other", OrderState.FILLED, sid="S2", side=Side.SELL, filled="1", ms=100_000))
    assert flips.on_position(_pos("-1", ms=100_000)) is not None  # "old" ended 99 s before


def test_live_opening_order_explains_a_flip_whatever_its_age():
    flips = FlipDetector(window_ms=1_000)
    flips.on_position(_pos("1"))
    flips.on_order(_order("lim", OrderState.LIVE, side=Side.SELL, size="2", ms=0))
    assert flips.on_position(_pos("-1", ms=10_000_000)) is None


def test_positions_first_seen_open_and_opens_from_flat_are_not_flips():
    flips = FlipDetector()
    assert flips.on_position(_pos("0")) is None
    assert flips.on_position(_pos("-3", ms=3_000)) is None


# -- loss -------------------------------------------------------------------------------------

def _p(sid, inst, realized, fees="0"):
    return Position(strategy_id=sid, venue="okx", inst_id=inst, realized_pnl=D(realized), fees=D(fees))


def test_daily_pnl_from_baselines():
    positions = [_p("S1", "A", "-50", "5"), _p("S1", "B", "20"), _p("S2", "A", "10")]
    baselines = {position_id("S1", "okx", "A"): D(-15), position_id("S2", "okx", "A"): D(0)}
    # S1: A net -55 vs -15 -> -40; B has no baseline -> 0. S2: +10.
    assert daily_pnl_by_strategy(positions, baselines) == {"S1": D(-40), "S2": D(10)}


def test_loss_monitor_trips_once_and_rearms_when_back_within():
    losses = LossMonitor(D(100), D(150))
    assert losses.update({"S1": D(-99)}) == []
    (trip,) = losses.update({"S1": D(-100)})
    assert trip.breaker == "strategy:S1:loss" and trip.strategy_id == "S1" and "daily loss 100" in trip.reason
    assert losses.update({"S1": D(-120)}) == []
    assert losses.update({"S1": D(-20)}) == []
    assert [t.breaker for t in losses.update({"S1": D(-101)})] == ["strategy:S1:loss"]
    trips = losses.update({"S1": D(-101), "S2": D(-60)})
    assert [(t.breaker, t.strategy_id) for t in trips] == [("global:loss", None)]
    losses.rearm("strategy:S1:loss")
    assert [t.breaker for t in losses.update({"S1": D(-101), "S2": D(-60)})] == ["strategy:S1:loss"]


def test_loss_monitor_without_limits_never_trips():
    assert LossMonitor(None, None).update({"S1": D(-10**9)}) == []


# -- exposure ------------------------------------------------------------------------------------

def test_exposure_monitor_position_and_notional_limits():
    cfg = RiskConfig(max_position_qty=D(5), max_strategy_notional=D(1000), max_global_notional=D(1500),
                     contract_values={"okx:BTC-USDT-SWAP": D("0.01")})
    mon = ExposureMonitor(cfg)
    ok = [_pos("2", avg_price=D(40_000)), _pos("-1", sid="S2", avg_price=D(40_000))]  # 800 + 400
    assert mon.update(ok) == []
    trips = mon.update([_pos("6", avg_price=D(10_000)), _pos("-1", sid="S2", avg_price=D(40_000))])
    assert [t.breaker for t in trips] == ["strategy:S1:position"]
    assert "okx:BTC-USDT-SWAP 6 (limit 5)" in trips[0].reason
    trips = mon.update([_pos("3", avg_price=D(40_000)), _pos("-3", sid="S2", avg_price=D(40_000))])
    assert [t.breaker for t in trips] == ["strategy:S1:notional", "strategy:S2:notional", "global:notional"]
    assert mon.update([_pos("3", avg_price=D(40_000)), _pos("-3", sid="S2", avg_price=D(40_000))]) == []


def test_exposure_with_unknown_contract_value_trips_notional_fail_closed():
    mon = ExposureMonitor(RiskConfig(max_strategy_notional=D(10**9)))
    (trip,) = mon.update([_pos("1", avg_price=D(1))])
    assert trip.breaker == "strategy:S1:notional" and "no contract value configured" in trip.reason
    assert ExposureMonitor(RiskConfig()).update([_pos("1000", avg_price=D(1))]) == []


def test_public_surface_is_what_it_claims():
    for name in risk.__all__:
        assert getattr(risk, name) is not None
    assert sorted(risk.__all__) == sorted(set(risk.__all__))


def test_a_strategy_trip_pauses_its_strategy_a_global_one_every_running_one():
    states = {"S2": "RUNNING", "S1": "RUNNING", "S3": "PAUSED", "S4": "WINDING_DOWN", "S5": "KILLED"}
    assert pause_targets(Trip(breaker="strategy:S3:loss", strategy_id="S3", reason="r"), states) == ["S3"]
    assert pause_targets(Trip(breaker="global:loss", strategy_id=None, reason="r"), states) == ["S1", "S2"]
    assert pause_targets(Trip(breaker="global:loss", strategy_id=None, reason="r"), {}) == []


@pytest.mark.parametrize("name, expected", [
    (strategy_breaker("S1", "rejections"), "S1"),
    (strategy_breaker("a:b", "rejections"), "a:b"),
    (strategy_breaker("S1", "loss"), None),
    ("global:loss", None),
    ("venue:okx:rejections", None),
])
def test_only_a_rejection_breaker_rearms_a_streak(name, expected):
    assert rejection_streak_of(name) == expected


def test_breaker_alert_is_keyed_by_the_breaker_and_says_who_was_paused():
    trip = Trip(breaker="strategy:S1:flip", strategy_id="S1", reason="position flipped")
    assert breaker_alert(trip, ["S1"]) == (
        "strategy:S1:flip", "Breaker strategy:S1:flip opened", "position flipped. Strategies paused: S1.")
    assert breaker_alert(trip, [])[2] == "position flipped. Strategies paused: none was RUNNING."
    assert paused_summary(["S1", "S2"]) == "S1, S2"

