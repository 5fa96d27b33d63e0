"""Supervision specs: defaults, named validation errors, tree checks."""

from __future__ import annotations

import pickle

import pytest
from pydantic import ValidationError

from tradetree.core.errors import ConfigError
from tradetree.supervisor.spec import (
    SUPERVISOR_ACTOR_CLASS,
    BackoffSpec,
    BadBackoff,
    BadCombination,
    BadIntensity,
    ChildSpec,
    CircularRelease,
    DuplicateChildId,
    RestartStrategy,
    RestartType,
    SupervisorSpec,
    UnknownReleaseTarget,
    as_child_spec,
    iter_tree,
    subtree_ids,
    validate_tree,
)

CLS = "tests.supervisor.fakes:FakeChild"


def child(cid: str, **kw) -> ChildSpec:
    return ChildSpec(id=cid, actor_class=CLS, **kw)


def test_child_defaults_are_safe():
    spec = child("gateway.okx")
    assert spec.restart is RestartType.PERMANENT
    assert spec.num_cpus == 0
    assert spec.start_paused is False and spec.release_after == ()
    assert spec.probe_failures_to_restart >= 1


def test_specs_are_frozen_and_reject_unknown_fields():
    spec = child("a")
    with pytest.raises(ValidationError):
        spec.id = "b"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        ChildSpec(id="a", actor_class=CLS, restarts=3)  # type: ignore[call-arg]


@pytest.mark.parametrize("bad", ["nocolon", "mod:", ":Attr", "a b:C", "mod:1x"])
def test_actor_class_must_be_an_import_path(bad):
    with pytest.raises(ValidationError):
        ChildSpec(id="a", actor_class=bad)


@pytest.mark.parametrize("bad_id", ["", " x", "a/b", "-lead"])
def test_ids_are_actor_name_safe(bad_id):
    with pytest.raises(ValidationError):
        child(bad_id)


@pytest.mark.parametrize("intensity,period", [(-1, 5.0), (3, 0.0), (3, -1.0)])
def test_bad_intensity_is_a_named_error(intensity, period):
    with pytest.raises(BadIntensity, match="supervisor root"):
        SupervisorSpec(id="root", intensity=intensity, period_secs=period)


def test_zero_intensity_is_allowed():
    assert SupervisorSpec(id="root", intensity=0).intensity == 0


def test_bad_backoff_is_a_named_error():
    with pytest.raises(BadBackoff):
        BackoffSpec(min_secs=10, max_secs=1)


def test_duplicate_direct_children_rejected():
    with pytest.raises(DuplicateChildId, match="'a'"):
        SupervisorSpec(id="root", children=(child("a"), child("a")))


def test_duplicate_ids_across_the_tree_rejected():
    nested = SupervisorSpec(id="venue", children=(child("a"),))
    root = SupervisorSpec(id="root", children=(child("a"), nested))
    with pytest.raises(DuplicateChildId):
        validate_tree(root)
    clash_with_root = SupervisorSpec(id="root", children=(child("root"),))
    with pytest.raises(DuplicateChildId):
        validate_tree(clash_with_root)


def test_release_after_needs_start_paused():
    with pytest.raises(BadCombination):
        child("strat", release_after=("gw",))


def test_release_after_self_is_circular():
    with pytest.raises(CircularRelease):
        child("strat", start_paused=True, release_after=("strat",))


def test_unknown_release_target_rejected_unless_external_allowed():
    root = SupervisorSpec(id="root", children=(child("s", start_paused=True, release_after=("gw",)),))
    with pytest.raises(UnknownReleaseTarget, match="gw"):
        validate_tree(root)
    validate_tree(root, allow_external_release=True)


def test_release_cycle_rejected():
    root = SupervisorSpec(
        id="root",
        children=(
            child("a", start_paused=True, release_after=("b",)),
            child("b", start_paused=True, release_after=("a",)),
        ),
    )
    with pytest.raises(CircularRelease, match="a -> b -> a|b -> a -> b"):
        validate_tree(root)


def test_release_after_an_ancestor_supervisor_is_circular():
    venue = SupervisorSpec(id="venue", children=(child("s", start_paused=True, release_after=("venue",)),))
    with pytest.raises(CircularRelease, match="its own supervisor 'venue'"):
        validate_tree(SupervisorSpec(id="root", children=(venue,)))
    with pytest.raises(CircularRelease, match="'root'"):
        validate_tree(SupervisorSpec(id="root", children=(child("s", start_paused=True, release_after=("root",)),)))


def test_release_across_nested_supervisors_is_valid():
    venue = SupervisorSpec(id="venue.okx", children=(child("gw.okx"), child("rec.okx")))
    strategies = SupervisorSpec(
        id="strategies",
        children=(child("mr_v10", start_paused=True, release_after=("gw.okx", "rec.okx")),),
    )
    root = SupervisorSpec(id="root", children=(venue, strategies))
    validate_tree(root)
    assert subtree_ids(venue) == {"venue.okx", "gw.okx", "rec.okx"}
    assert [s.id for s in iter_tree(root)] == ["root", "venue.okx", "gw.okx", "rec.okx", "strategies", "mr_v10"]


def test_spec_errors_are_config_errors():
    assert issubclass(BadIntensity, ConfigError)
    assert issubclass(UnknownReleaseTarget, ConfigError)


def test_children_parse_from_plain_data():
    root = SupervisorSpec.model_validate(
        {
            "id": "root",
            "children": [
                {"id": "a", "actor_class": CLS, "restart": "transient"},
                {"id": "venue", "children": [{"id": "b", "actor_class": CLS}]},
            ],
        }
    )
    assert isinstance(root.children[0], ChildSpec) and root.children[0].restart is RestartType.TRANSIENT
    assert isinstance(root.children[1], SupervisorSpec)
    assert root.strategy is RestartStrategy.ONE_FOR_ONE


def test_as_child_spec_carries_the_restart_settings():
    nested = SupervisorSpec(id="venue", restart=RestartType.TRANSIENT, probe_timeout_secs=7, children=(child("a"),))
    as_child = as_child_spec(nested)
    assert as_child.actor_class == SUPERVISOR_ACTOR_CLASS
    assert as_child.args == (nested,)
    assert as_child.restart is RestartType.TRANSIENT
    assert as_child.probe_timeout_secs == 7


def test_specs_pickle_for_ray():
    nested = SupervisorSpec(id="venue", children=(child("a", kwargs={"x": 1}),))
    root = SupervisorSpec(id="root", children=(nested,))
    assert pickle.loads(pickle.dumps(root)) == root
