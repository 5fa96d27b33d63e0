"""Each operator verb refuses while a probe it depends on is red, audits the refusal and changes nothing.

The verbs over a fake tree (no Ray): ``_call`` records what would reach the actors, and
``_failing_probes`` says which probes are red. The live-tree behaviour is in test_control.py.
"""

from __future__ import annotations

import pytest

import tradetree.control as control
from tradetree.control import Control, ProbesFailing

RED = "VenueGateway[okx]: rest: 503 from /api/v5/public/time"


@pytest.fixture
def fake(monkeypatch):
    calls: list[tuple] = []
    answers = {
        "snapshot": {"strategies": {"A": "PAUSED"}, "venues": {"okx": {"venue_pause": None}}},
        "breakers": {},
        "stats": {"venue": "okx"},
    }
    status = {"RootSupervisor": {"parent": None}, "A": {"parent": "StrategySupervisor"},
              "VenueGateway[okx]": {"parent": "VenueSupervisor[okx]"},
              "FillReconciler[okx]": {"parent": "VenueSupervisor[okx]"}, "RiskMonitor": {"parent": "RootSupervisor"}}
    monkeypatch.setattr(control, "tree_status", lambda namespace, root_id: status)
    ctl = Control("ns")

    def call(name, method, *args, timeout_secs=30.0, **kwargs):
        calls.append((name, method, args))
        return answers.get(method, True)

    monkeypatch.setattr(ctl, "_call", call)
    monkeypatch.setattr(ctl, "_failing_probes", lambda names: [RED] if "VenueGateway[okx]" in names or
                        "RiskMonitor" in names else [])
    return ctl, calls, answers


def acted(calls: list[tuple]) -> list[str]:
    """The methods called on the actors other than reads and the audit."""
    return [m for _, m, _ in calls if m not in ("snapshot", "breakers", "stats", "record_operator_action")]


def audited(calls: list[tuple]) -> list[tuple]:
    return [args for _, m, args in calls if m == "record_operator_action"]


@pytest.mark.parametrize("verb, args, action", [
    ("clear_kill", ("why",), "clear-kill"),
    ("reset_breaker", ("strategy:A:rejections", "why"), "reset-breaker"),
    ("release_venue", ("okx", "why"), "release-venue"),
    ("resume", ("A", "why"), "resume"),
])
def test_a_red_probe_refuses_the_verb_names_it_and_audits_the_refusal(fake, verb, args, action):
    ctl, calls, _ = fake
    with pytest.raises(ProbesFailing) as refused:
        getattr(ctl, verb)(*args)
    assert RED in str(refused.value) and refused.value.reasons
    assert acted(calls) == [], "nothing was changed"
    [entry] = audited(calls)
    assert entry[0] == action and entry[3] == "why" and entry[4] == "refused" and RED in entry[5]


def test_resume_of_a_killed_strategy_is_refused_and_says_what_to_do(fake, monkeypatch):
    ctl, calls, answers = fake
    monkeypatch.setattr(ctl, "_failing_probes", lambda names: [])
    answers["snapshot"] = {"strategies": {"A": "KILLED"}, "venues": {"okx": {"venue_pause": None}}}
    answers["operator_resume"] = False
    with pytest.raises(control.ControlError, match="clear-kill"):
        ctl.resume("A", "why")
    assert audited(calls)[-1][4] == "refused"
