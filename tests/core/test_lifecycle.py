"""One lifecycle enum, with one spelling of "not started"."""

from __future__ import annotations

import pytest

from tradetree.core.errors import TradetreeError
from tradetree.core.lifecycle import (
    ALLOWED_TRANSITIONS,
    ComponentState,
    InvalidComponentTransition,
    check_transition,
)


def test_values_are_what_stats_and_status_show():
    assert [s.value for s in ComponentState] == ["new", "starting", "running", "stopping", "stopped", "escalated"]


def test_every_state_has_a_row():
    assert set(ALLOWED_TRANSITIONS) == set(ComponentState)


def test_allowed_transition_returns_the_target():
    assert check_transition("gw", ComponentState.NEW, ComponentState.STARTING) is ComponentState.STARTING
    assert check_transition("sup", ComponentState.ESCALATED, ComponentState.STARTING) is ComponentState.STARTING


def test_forbidden_transition_names_the_component_and_what_is_allowed():
    with pytest.raises(InvalidComponentTransition, match=r"gw: cannot go from stopping to running \(allowed: stopped\)"):
        check_transition("gw", ComponentState.STOPPING, ComponentState.RUNNING)
    assert issubclass(InvalidComponentTransition, TradetreeError)
