"""The supervisor package's public surface is what ``__all__`` claims, and the backend's
error translation holds without Ray running."""

from __future__ import annotations

import pytest

from tradetree import supervisor
from tradetree.core.errors import ActorClassNotFound, ActorDied, BackendError, TradetreeError
from tradetree.supervisor.actor_client import actor_died_error
from tradetree.supervisor.ray_backend import RayBackend, import_actor_class


def test_all_names_exist_and_are_unique():
    assert len(set(supervisor.__all__)) == len(supervisor.__all__)
    for name in supervisor.__all__:
        assert getattr(supervisor, name) is not None, name


def test_core_entry_points_are_exported():
    expected = {
        "SupervisorSpec", "ChildSpec", "BackoffSpec", "RestartType", "RestartStrategy",
        "Supervisor", "SupervisorActor", "launch_supervisor", "RayBackend",
        "StartFailed", "RestartRefused", "ChildState",
    }
    assert expected <= set(supervisor.__all__)


def test_errors_belong_to_the_project_tree():
    for name in ("BackendError", "SupervisorError", "SpecError", "InvalidLifecycleTransition"):
        assert issubclass(getattr(supervisor, name), TradetreeError), name


def test_import_actor_class_resolves_and_reports():
    assert import_actor_class("tradetree.supervisor.supervisor:SupervisorActor") is supervisor.SupervisorActor
    with pytest.raises(ActorClassNotFound, match="expected"):
        import_actor_class("no_colon")
    with pytest.raises(ActorClassNotFound, match="does not import"):
        import_actor_class("tradetree.supervisor.nope:X")
    with pytest.raises(ActorClassNotFound, match="does not import"):
        import_actor_class("tradetree.supervisor.supervisor:Nope")


def test_create_refuses_a_non_class():
    with pytest.raises(ActorClassNotFound, match="not a class"):
        RayBackend("ns").create("x", "tradetree.supervisor.supervisor:launch_supervisor", (), {}, num_cpus=0)


def test_intended_exit_is_told_apart_from_a_crash():
    from ray.exceptions import ActorDiedError

    exited = ActorDiedError()
    exited.error_msg = "The actor is dead because its worker process has died. Worker exit type: INTENDED_USER_EXIT"
    killed = ActorDiedError()
    killed.error_msg = "The actor died unexpectedly.\nThe actor is dead because it was killed by `ray.kill`."
    assert isinstance(actor_died_error(exited), ActorDied) and actor_died_error(exited).intended
    died = actor_died_error(killed)
    assert isinstance(died, BackendError) and not died.intended and "ray.kill" in str(died)
