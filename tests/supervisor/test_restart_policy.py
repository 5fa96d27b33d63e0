"""Pure restart policy: restart types, intensity window, backoff, probe counting, lifecycle."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tradetree.core.clock import ManualClock
from tradetree.supervisor.restart_policy import (
    Backoff,
    ChildLifecycle,
    ChildState,
    ExitReason,
    InvalidLifecycleTransition,
    ProbeFailureCounter,
    RestartIntensity,
    heartbeat_is_stale,
    jittered_secs,
    should_restart,
)
from tradetree.supervisor.spec import BackoffSpec, RestartType

# -- restart types ------------------------------------------------------------


@pytest.mark.parametrize("reason", list(ExitReason))
def test_permanent_always_restarts(reason):
    assert should_restart(RestartType.PERMANENT, reason)


@pytest.mark.parametrize("reason", list(ExitReason))
def test_temporary_never_restarts(reason):
    assert not should_restart(RestartType.TEMPORARY, reason)


@pytest.mark.parametrize(
    "reason,expected",
    [
        (ExitReason.NORMAL, False),
        (ExitReason.DIED, True),
        (ExitReason.UNHEALTHY, True),
        (ExitReason.HUNG, True),
        (ExitReason.START_FAILED, True),
    ],
)
def test_transient_restarts_only_after_abnormal_exit(reason, expected):
    assert should_restart(RestartType.TRANSIENT, reason) is expected


# -- intensity ----------------------------------------------------------------


def test_intensity_allows_n_restarts_then_escalates():
    clock = ManualClock()
    window = RestartIntensity(3, 10.0, clock)
    assert [window.record() for _ in range(3)] == [True, True, True]
    assert window.record() is False


def test_intensity_window_slides():
    clock = ManualClock()
    window = RestartIntensity(2, 10.0, clock)
    assert window.record()
    clock.advance(6)
    assert window.record()
    clock.advance(5)  # the first restart is now 11s old: out of the window
    assert window.record()
    assert window.count() == 2
    assert window.record() is False  # three within 10s (t=6, 11, 11)


def test_intensity_boundary_is_exclusive_of_old_stamps():
    clock = ManualClock()
    window = RestartIntensity(1, 10.0, clock)
    assert window.record()
    clock.advance(10.0)  # exactly one period later: the old restart no longer counts
    assert window.record()


def test_intensity_zero_escalates_on_first_restart():
    window = RestartIntensity(0, 5.0, ManualClock())
    assert window.record() is False


def test_intensity_reset_and_count():
    clock = ManualClock()
    window = RestartIntensity(1, 5.0, clock)
    window.record()
    window.record()
    assert window.count() == 2
    window.reset()
    assert window.count() == 0 and window.record()


def test_intensity_rejects_bad_arguments():
    with pytest.raises(ValueError):
        RestartIntensity(-1, 5, ManualClock())
    with pytest.raises(ValueError):
        RestartIntensity(1, 0, ManualClock())


@given(
    intensity=st.integers(0, 5),
    period=st.floats(0.5, 30),
    gaps=st.lists(st.floats(0, 20), min_size=1, max_size=30),
)
def test_intensity_matches_a_brute_force_window(intensity, period, gaps):
    clock = ManualClock()
    window = RestartIntensity(intensity, period, clock)
    stamps: list[float] = []
    for gap in gaps:
        clock.advance(gap)
        now = clock.monotonic()
        stamps.append(now)
        in_window = [s for s in stamps if now - s < period]
        assert window.record() is (len(in_window) <= intensity)


# -- backoff ------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap_without_jitter():
    spec = BackoffSpec(min_secs=0.5, max_secs=4, jitter=0)
    assert [spec.policy().delay_at(a, 0.7) for a in range(6)] == [0.5, 1, 2, 4, 4, 4]


def test_backoff_jitter_bounds():
    spec = BackoffSpec(min_secs=1, max_secs=100, jitter=0.25)
    assert spec.policy().delay_at(2, 0.0) == pytest.approx(3.0)
    assert spec.policy().delay_at(2, 0.5) == pytest.approx(4.0)
    assert spec.policy().delay_at(2, 0.999999) == pytest.approx(5.0, rel=1e-5)


def test_backoff_never_exceeds_max():
    spec = BackoffSpec(min_secs=1, max_secs=8, jitter=1.0)
    assert spec.policy().delay_at(10, 0.999) <= 8


def test_backoff_huge_attempt_does_not_overflow():
    spec = BackoffSpec(min_secs=1, max_secs=30, jitter=0)
    assert spec.policy().delay_at(10_000, 0.5) == 30


def test_backoff_rejects_negative_attempt():
    with pytest.raises(ValueError):
        BackoffSpec().policy().delay_at(-1, 0.5)


@given(
    min_secs=st.floats(0, 10),
    extra=st.floats(0, 100),
    jitter=st.floats(0, 1),
    attempt=st.integers(0, 200),
    u=st.floats(0, 1, exclude_max=True),
)
def test_backoff_delay_always_within_bounds(min_secs, extra, jitter, attempt, u):
    spec = BackoffSpec(min_secs=min_secs, max_secs=min_secs + extra, jitter=jitter)
    base = min(spec.max_secs, spec.min_secs * 2.0 ** min(attempt, 64))
    delay = spec.policy().delay_at(attempt, u)
    assert 0 <= delay <= spec.max_secs
    assert delay >= base * (1 - jitter) - 1e-9


def test_backoff_sequence_is_deterministic_for_a_seed():
    spec = BackoffSpec(min_secs=0.1, max_secs=10, jitter=0.5)
    a = Backoff(spec, random.Random(7))
    b = Backoff(spec, random.Random(7))
    assert [a.next_delay_secs() for _ in range(8)] == [b.next_delay_secs() for _ in range(8)]
    assert a.attempt == 8


def test_backoff_resets_after_a_long_enough_run():
    spec = BackoffSpec(min_secs=1, max_secs=60, jitter=0, reset_after_secs=30)
    backoff = Backoff(spec, random.Random(0))
    assert [backoff.next_delay_secs() for _ in range(3)] == [1, 2, 4]
    backoff.note_uptime(29.9)
    assert backoff.next_delay_secs() == 8
    backoff.note_uptime(30)
    assert backoff.attempt == 0 and backoff.next_delay_secs() == 1


def test_jitter_stays_within_fraction():
    rng = random.Random(3)
    values = [jittered_secs(2.0, rng, 0.1) for _ in range(200)]
    assert all(1.8 <= v <= 2.2 for v in values)
    assert len(set(values)) > 1


# -- probes and heartbeats -------------------------------------------------------


def test_probe_counter_trips_at_threshold_and_resets_on_success():
    counter = ProbeFailureCounter(3)
    assert [counter.record(False), counter.record(False)] == [False, False]
    assert counter.record(True) is False and counter.consecutive == 0
    assert [counter.record(False) for _ in range(3)] == [False, False, True]
    assert counter.consecutive == 3


def test_probe_counter_threshold_one_trips_at_once():
    assert ProbeFailureCounter(1).record(False) is True


def test_probe_counter_rejects_zero_threshold():
    with pytest.raises(ValueError):
        ProbeFailureCounter(0)


@pytest.mark.parametrize(
    "last_ms,now_ms,since_ms,stale",
    [
        (10_000, 14_000, 0, False),  # 4s old, stale after 5s
        (10_000, 15_001, 0, True),  # just over 5s
        (None, 14_000, 10_000, False),  # no heartbeat yet: grace from creation
        (None, 15_001, 10_000, True),
        (1_000, 12_000, 10_000, False),  # a previous incarnation's heartbeat counts from creation
        (1_000, 15_500, 10_000, True),
    ],
)
def test_heartbeat_staleness(last_ms, now_ms, since_ms, stale):
    assert heartbeat_is_stale(last_ms, now_ms, 5.0, since_ms) is stale


# -- lifecycle -----------------------------------------------------------------


def _walk(*states: ChildState) -> ChildLifecycle:
    life = ChildLifecycle()
    for s in states:
        life.to(s)
    return life


def test_lifecycle_happy_path_and_restart_cycle():
    S = ChildState
    life = _walk(S.STARTING, S.PROBING, S.RUNNING, S.DEAD, S.BACKOFF, S.STARTING, S.PROBING, S.RUNNING)
    assert life.state is S.RUNNING
    life = _walk(S.STARTING, S.PROBING, S.PAUSED, S.RUNNING, S.UNHEALTHY, S.BACKOFF, S.STARTING)
    assert life.state is S.STARTING


@pytest.mark.parametrize(
    "path,bad",
    [
        ((), ChildState.RUNNING),  # stopped -> running skips the probe gate
        ((ChildState.STARTING,), ChildState.RUNNING),  # started but not probed
        ((ChildState.STARTING, ChildState.PROBING, ChildState.RUNNING), ChildState.PAUSED),
        ((ChildState.STARTING, ChildState.PROBING, ChildState.RUNNING), ChildState.BACKOFF),
        ((ChildState.STARTING, ChildState.DEAD, ChildState.BACKOFF), ChildState.RUNNING),
        ((ChildState.ESCALATED,), ChildState.RUNNING),
    ],
)
def test_lifecycle_refuses_shortcuts_past_the_gate(path, bad):
    life = _walk(*path)
    with pytest.raises(InvalidLifecycleTransition, match=f"-> {bad.value} is not allowed"):
        life.to(bad)


def test_lifecycle_reentering_a_state_is_a_no_op():
    life = _walk(ChildState.STARTING)
    assert life.to(ChildState.STARTING) is ChildState.STARTING


def test_every_state_can_reach_stopped_or_escalated():
    for state in ChildState:
        life = ChildLifecycle()
        life._state = state  # direct set: we test the table, not a path
        assert life.can(ChildState.ESCALATED)
        assert life.can(ChildState.STOPPED)


def test_only_probing_or_paused_lead_to_running():
    sources = set()
    for state in ChildState:
        life = ChildLifecycle()
        life._state = state
        if state is not ChildState.RUNNING and life.can(ChildState.RUNNING):
            sources.add(state)
    assert sources == {ChildState.PROBING, ChildState.PAUSED}
