"""Who may move a strategy between RUNNING and PAUSED: the host's rules as pure functions."""

from __future__ import annotations

import pytest

from tradetree.core.types import StrategyState
from tradetree.risk.strategy_states import (
    PausePlan,
    StartPlan,
    host_probes,
    kill_switch_owns,
    pause_plan,
    pause_source,
    start_plan,
    supervisor_may_release,
    unreadable_states,
)

S = StrategyState
SUP = {"source": "supervisor", "reason": "held"}
RISK = {"source": "risk", "reason": "breaker"}


def test_the_kill_switch_owns_winding_down_and_killed() -> None:
    assert kill_switch_owns(S.WINDING_DOWN) and kill_switch_owns(S.KILLED)
    assert not kill_switch_owns(S.RUNNING) and not kill_switch_owns(S.PAUSED) and not kill_switch_owns(None)


@pytest.mark.parametrize(("current", "hold", "start_paused", "plan"), [
    (S.KILLED, None, False, StartPlan.KEEP),
    (S.WINDING_DOWN, SUP, True, StartPlan.KEEP),
    (S.PAUSED, None, False, StartPlan.KEEP_UNEXPLAINED),
    (S.PAUSED, None, True, StartPlan.KEEP_UNEXPLAINED),
    (S.PAUSED, RISK, False, StartPlan.KEEP),
    (S.PAUSED, SUP, False, StartPlan.RUN),
    (S.PAUSED, SUP, True, StartPlan.HOLD),
    (S.RUNNING, None, True, StartPlan.HOLD),
    (S.RUNNING, RISK, False, StartPlan.RUN),  # a stale record of a running strategy does not pause it
    (None, None, False, StartPlan.RUN),
    (None, None, True, StartPlan.HOLD),
])
def test_start_plan(current, hold, start_paused, plan) -> None:
    assert start_plan(current, hold, start_paused=start_paused) is plan


def test_pause_source_defaults_from_the_reason() -> None:
    assert pause_source("supervisor hold: probes failing", None) == "supervisor"
    assert pause_source("supervisorish", None) == "other"
    assert pause_source("supervisor x", "operator") == "operator"


@pytest.mark.parametrize(("state", "source", "existing", "plan"), [
    (S.RUNNING, "risk", None, PausePlan(record=True, set_paused=True)),
    (S.PAUSED, "risk", SUP, PausePlan(record=True, set_paused=False)),
    (S.RUNNING, "supervisor", RISK, PausePlan(record=False, set_paused=True)),
    (S.PAUSED, "supervisor", SUP, PausePlan(record=True, set_paused=False)),
    (S.KILLED, "risk", None, PausePlan(record=False, set_paused=False)),
    (S.WINDING_DOWN, "operator", None, PausePlan(record=False, set_paused=False)),
])
def test_pause_plan_never_masks_another_source_and_never_touches_a_kill(state, source, existing, plan) -> None:
    assert pause_plan(state, source, existing) == plan


def test_supervisor_releases_only_its_own_hold() -> None:
    assert supervisor_may_release(None) and supervisor_may_release(SUP)
    assert not supervisor_may_release(RISK)


def test_host_probes() -> None:
    ok = host_probes(None, S.PAUSED, "")
    assert [(p.name, p.ok, p.detail) for p in ok] == [("store", True, ""), ("state", True, "PAUSED"),
                                                      ("decisions", True, "")]
    down = host_probes("not started", None, "StoreUnavailable: x")
    assert [(p.name, p.ok, p.detail) for p in down] == [("store", False, "not started"),
                                                        ("decisions", False, "StoreUnavailable: x")]


def test_unreadable_states_are_the_texts_that_are_no_strategy_state() -> None:
    assert unreadable_states({"a": "RUNNING", "b": "paused", "c": "KILLED", "d": ""}) == {"b": "paused", "d": ""}
