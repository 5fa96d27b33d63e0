"""The kill executor's decisions, without the executor: resume or start, retry or stall, sleep, lease."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from tradetree.core.errors import (
    OrderRejected,
    StoreError,
    StoreUnavailable,
    VenueAuthError,
    VenueUnavailable,
)
from tradetree.core.types import Order, OrderIntent, OrderState, Position, Side
from tradetree.risk.kill_run import (
    LeaseVerdict,
    StepFailure,
    StepRefused,
    action_phase,
    classify_failure,
    clip_refusal,
    done_note,
    global_kill_targets,
    iteration_cap,
    lease_verdict,
    next_delay,
    pending_kills,
    plan_progress,
    stall_reason,
    start_run,
    stuck_reason,
    timeout_reason,
)
from tradetree.risk.kill_switch import (
    AwaitOrders,
    CancelOrders,
    KillPhase,
    KillProgress,
    KillState,
    KillSwitchConfig,
    OffsetPosition,
    SubmitClip,
    WindDownPlan,
    backoff_delay,
)

D = Decimal
CFG = KillSwitchConfig(max_clip_size=D(1), step_max_attempts=3, backoff_min_secs=1, backoff_max_secs=8,
                       max_duration_secs=60, verify_interval_secs=2, call_timeout_secs=5, lease_secs=30)
INST = "BTC-USDT-SWAP"


def progress(**kw) -> KillProgress:
    base = dict(scope="global", strategy_id=None, reason="drift", state=KillState.RUNNING, phase=KillPhase.FLAG,
                started_ms=100, updated_ms=100, owner="ks-1")
    return KillProgress(**{**base, **kw})


def intent(size: str = "1") -> OrderIntent:
    return OrderIntent(strategy_id="A", venue="okx", inst_id=INST, side=Side.SELL, size=D(size), reduce_only=True)


# -- starting and resuming ------------------------------------------------------------------------


def test_nothing_recorded_starts_a_new_episode():
    fresh = progress()
    start = start_run(fresh, None, requested=True)
    assert start.progress == fresh and start.recheck == () and start.note == "kill requested: drift"
    assert start.new_episode


def test_a_request_on_a_done_kill_starts_a_new_episode_a_resume_does_not():
    fresh, done = progress(reason="again", updated_ms=900), progress(state=KillState.DONE, runs=3)
    assert start_run(fresh, done, requested=True).progress == fresh
    assert start_run(fresh, done, requested=True).new_episode
    resumed = start_run(fresh, done, requested=False)
    assert resumed.progress.runs == 4 and resumed.note == "resuming DONE kill" and not resumed.new_episode


def test_a_stalled_kill_is_resumed_under_the_new_owner_with_its_orders_rechecked():
    existing = progress(state=KillState.STALLED, phase=KillPhase.FLATTEN, runs=2, failed_attempts=5,
                        stalled_reason="cancel okx failed", finished_ms=500, owner="ks-old",
                        client_order_ids=("k1", "k2"), orders_submitted=2, strategies=("A",))
    fresh = progress(reason="operator", updated_ms=900, owner="ks-new")

    start = start_run(fresh, existing, requested=True)

    p = start.progress
    assert (p.state, p.runs, p.failed_attempts, p.stalled_reason, p.finished_ms) == (
        KillState.RUNNING, 3, 0, "", None)
    assert p.owner == "ks-new" and p.updated_ms == 900
    assert (p.reason, p.phase, p.orders_submitted, p.strategies) == ("drift", KillPhase.FLATTEN, 2, ("A",))
    assert start.recheck == ("k1", "k2")
    assert start.note == "kill requested again (drift): resuming"
    assert start_run(fresh, existing, requested=False).note == "resuming STALLED kill"


def test_a_host_continues_running_and_stalled_kills_only():
    kills = [progress(scope="a"), progress(scope="b", state=KillState.STALLED),
             progress(scope="c", state=KillState.DONE), None]
    assert [p.scope for p in pending_kills(kills)] == ["a", "b"]


# -- failures --------------------------------------------------------------------------------------


@pytest.mark.parametrize("exc, error, retryable", [
    (TimeoutError(), "no answer within 5s", True),
    (VenueUnavailable("503", venue="okx"), "VenueUnavailable: 503", True),
    (OrderRejected("too big", venue="okx"), "OrderRejected: too big", True),
    (StoreUnavailable("down"), "StoreUnavailable: down", True),
    (StoreError("WRONGTYPE"), "StoreError: WRONGTYPE", True),
    (StepRefused("denied: stale"), "StepRefused: denied: stale", True),
    (VenueAuthError("bad key", venue="okx"), "VenueAuthError: bad key", False),
    (ValueError("bad state"), "ValueError: bad state", False),
    (TypeError("wrong"), "TypeError: wrong", False),
])
def test_failures_are_retried_unless_retrying_cannot_help(exc, error, retryable):
    assert classify_failure(exc, 5.0) == StepFailure(error, retryable)


def test_an_unexpected_exception_is_not_a_step_failure():
    assert classify_failure(RuntimeError("bug"), 5.0) is None
    assert classify_failure(KeyError("x"), 5.0) is None


def test_a_step_stalls_when_not_retryable_or_out_of_attempts():
    transient, fatal = StepFailure("VenueUnavailable: 503", True), StepFailure("VenueAuthError: key", False)
    assert stall_reason("cancel okx", 1, transient, CFG) is None
    assert stall_reason("cancel okx", 2, transient, CFG) is None
    assert stall_reason("cancel okx", 3, transient, CFG) == "cancel okx failed 3 times in a row; last: VenueUnavailable: 503"
    assert stall_reason("cancel okx", 1, fatal, CFG) == "cancel okx: not retryable: VenueAuthError: key"


# -- sleeping --------------------------------------------------------------------------------------


def test_after_a_clean_iteration_sleep_the_verify_interval_within_the_time_left():
    assert next_delay([], CFG, random.Random(1), 100) == 2
    assert next_delay([], CFG, random.Random(1), 0.5) == 0.5
    assert next_delay([], CFG, random.Random(1), -1) <= 0, "out of time: no sleep"


def test_after_failures_back_off_for_the_worst_step():
    rng_a, rng_b = random.Random(7), random.Random(7)
    assert next_delay([1, 3, 2], CFG, rng_a, 100) == backoff_delay(3, CFG, rng_b)
    assert 4 <= next_delay([3], CFG, random.Random(2), 100) <= 8
    assert next_delay([3], CFG, random.Random(2), 1.5) == 1.5


def test_iteration_cap_bounds_a_run_whose_sleep_does_not_advance_time():
    assert iteration_cap(CFG) == 60 // 1 + 3 + 10
    slow = CFG.model_copy(update={"backoff_min_secs": 4.0, "verify_interval_secs": 7.0})
    assert iteration_cap(slow) == 15 + 3 + 10


# -- the lease -------------------------------------------------------------------------------------


def test_lease_held_waited_for_or_lost():
    assert lease_verdict(None, held_before=False) is LeaseVerdict.HELD
    assert lease_verdict(None, held_before=True) is LeaseVerdict.HELD
    assert lease_verdict("ks-2", held_before=False) is LeaseVerdict.WAITING
    assert lease_verdict("ks-2", held_before=True) is LeaseVerdict.LOST


# -- clips -----------------------------------------------------------------------------------------


def test_a_clip_counts_as_taken_only_when_the_venue_took_it():
    live = Order.from_intent(intent(), now_ms=1, client_order_id="k1")
    assert clip_refusal(live) is None
    assert clip_refusal(live.transition(OrderState.FILLED, now_ms=2, filled_size=D(1))) is None
    assert clip_refusal(live.transition(OrderState.CANCELED, now_ms=2)) == "order k1 canceled without a fill"
    partial = live.transition(OrderState.PARTIALLY_FILLED, now_ms=2, filled_size=D("0.4"))
    assert clip_refusal(partial.transition(OrderState.CANCELED, now_ms=3)) is None, "a partial fill reduced it"
    rejected = live.transition(OrderState.REJECTED, now_ms=2, reject_reason="51008")
    assert clip_refusal(rejected) == "order k1 rejected: 51008"


def test_a_global_kill_winds_down_every_strategy_not_killed_and_every_holder():
    states = {"B": "RUNNING", "A": "PAUSED", "K": "KILLED", "W": "WINDING_DOWN", "K2": "KILLED"}
    positions = [Position(strategy_id="K2", venue="okx", inst_id=INST, qty=D(1)),
                 Position(strategy_id="_unattributed", venue="okx", inst_id=INST, qty=D(-1)),
                 Position(strategy_id="Z", venue="okx", inst_id=INST, qty=D(0))]
    assert global_kill_targets(states, positions) == ["A", "B", "K2", "W", "_unattributed"]


# -- plans -----------------------------------------------------------------------------------------


def test_plan_progress_lists_orders_waited_for_and_positions_left():
    plan = WindDownPlan(
        waiting=(AwaitOrders(strategy_id="A", venue="okx", inst_id=INST, client_order_ids=("k1", "k2")),),
        remaining=(Position(strategy_id="A", venue="okx", inst_id=INST, qty=D("2.5")),
                   Position(strategy_id="B", venue="okx", inst_id=INST, qty=D(-1))))
    assert plan_progress(plan) == (("k1", "k2"), (f"A okx {INST} +2.5", f"B okx {INST} -1"))


def test_a_plan_with_only_offset_positions_is_stuck():
    blocked = OffsetPosition(strategy_id="A", venue="okx", inst_id=INST, qty=D(1), venue_net=D(-2))
    stuck = stuck_reason(WindDownPlan(blocked=(blocked,)))
    assert stuck is not None and f"A okx {INST} +1 (venue net -2)" in stuck and "allow_offsetting_orders" in stuck
    waiting = AwaitOrders(strategy_id="A", venue="okx", inst_id=INST, client_order_ids=("k1",))
    assert stuck_reason(WindDownPlan(blocked=(blocked,), waiting=(waiting,))) is None
    cancel = CancelOrders(venue="okx", strategy_id=None, why="sweep")
    assert stuck_reason(WindDownPlan(blocked=(blocked,), actions=(cancel,))) is None


def test_actions_run_in_their_phase():
    assert action_phase(CancelOrders(venue="okx", strategy_id=None, why="sweep")) is KillPhase.CANCEL
    assert action_phase(SubmitClip(intent=intent(), position_qty=D(1))) is KillPhase.FLATTEN


def test_a_timeout_says_the_phase_and_everything_outstanding():
    bare = progress(phase=KillPhase.CANCEL)
    assert timeout_reason(bare, 60) == "timed out after 60s in phase cancel"
    full = progress(phase=KillPhase.FLATTEN, remaining=("A okx X +1", "B okx X -1"), waiting_on=("k1", "k2"),
                    last_error="cancel okx: 503")
    assert timeout_reason(full, 1.5) == ("timed out after 1.5s in phase flatten; not flat: A okx X +1; B okx X -1"
                                         "; orders not settled: k1, k2; last error: cancel okx: 503")


def test_done_note_says_what_stays_behind():
    assert done_note(None) == "the kill flag stays set until an operator clears it"
    assert done_note("A") == "strategy A KILLED"
