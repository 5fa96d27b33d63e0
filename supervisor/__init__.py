"""OTP-style supervision of Ray actors.

Specs (``SupervisorSpec``, ``ChildSpec``) are plain data; ``Supervisor`` is the
plain async logic over an ``ActorBackend``; ``SupervisorActor`` hosts it in
Ray; ``launch_supervisor`` starts a root. ``ActorClient`` is the one way to call a
named actor (lookup, a timeout on every call, Ray errors translated). The restart rules themselves live in
``supervisor.restart_policy`` (pure, clock injected).
"""

# The folder sits at the repository root but installs as tradetree.supervisor; loading it
# under a second name would give every class and module-level state two copies.
if __name__ != "tradetree.supervisor":
    raise ImportError(f"import tradetree.supervisor, not {__name__}")

from tradetree.core import (
    ActorClassNotFound,
    ActorDied,
    ActorNameTaken,
    ActorNotFound,
    BackendError,
    CallFailed,
    CallTimeout,
    RestartRefused,
    SupervisorError,
)
from tradetree.supervisor.actor_client import ActorClient, translate_ray_error
from tradetree.supervisor.attach import attach_ray, prepare_ray_auth
from tradetree.supervisor.placement import NodeView, NoNodeFits, Placement, choose_node
from tradetree.supervisor.ray_backend import ActorBackend, RayBackend
from tradetree.supervisor.restart_policy import ChildState, ExitReason, InvalidLifecycleTransition
from tradetree.supervisor.spec import (
    BackoffSpec,
    BadBackoff,
    BadCombination,
    BadIntensity,
    ChildSpec,
    CircularRelease,
    DuplicateChildId,
    RestartStrategy,
    RestartType,
    SpecError,
    SupervisorSpec,
    UnknownReleaseTarget,
    as_child_spec,
    validate_tree,
)
from tradetree.supervisor.status import tree_status
from tradetree.supervisor.supervisor import (
    HeartbeatSource,
    StartFailed,
    Supervisor,
    SupervisorActor,
    SupervisorStateError,
    UnknownChild,
    launch_supervisor,
)

__all__ = [
    "Placement",
    "NodeView",
    "NoNodeFits",
    "choose_node",
    "attach_ray",
    "prepare_ray_auth",
    # specs
    "RestartType",
    "RestartStrategy",
    "BackoffSpec",
    "ChildSpec",
    "SupervisorSpec",
    "as_child_spec",
    "validate_tree",
    "SpecError",
    "BadIntensity",
    "BadBackoff",
    "BadCombination",
    "DuplicateChildId",
    "UnknownReleaseTarget",
    "CircularRelease",
    # runtime
    "Supervisor",
    "SupervisorActor",
    "launch_supervisor",
    "HeartbeatSource",
    "ChildState",
    "ExitReason",
    "SupervisorError",
    "SupervisorStateError",
    "StartFailed",
    "RestartRefused",
    "UnknownChild",
    "InvalidLifecycleTransition",
    # backend
    "ActorBackend",
    "RayBackend",
    "BackendError",
    "ActorClassNotFound",
    "ActorNameTaken",
    "ActorDied",
    "CallTimeout",
    "CallFailed",
    "ActorNotFound",
    # calling named actors
    "ActorClient",
    "translate_ray_error",
    "tree_status",
]
