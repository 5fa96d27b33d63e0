"""Supervision specs: plain, frozen data describing a supervision tree.

A ``SupervisorSpec`` is the OTP ``init`` result: flags (strategy, intensity,
period) and an ordered tuple of children. A child is either a ``ChildSpec``
(one Ray actor) or a nested ``SupervisorSpec`` (run as a ``SupervisorActor``).
Building a spec has no side effects; validation happens in small checkers that
raise named errors (subclasses of ``core.errors.ConfigError``, so pydantic lets
them through unchanged):

    SpecError(ConfigError)
    ├── BadIntensity          intensity < 0 or period_secs <= 0
    ├── BadBackoff            min_secs > max_secs
    ├── BadCombination        release_after given without start_paused
    ├── DuplicateChildId      two children (anywhere in a tree) share an id
    ├── UnknownReleaseTarget  release_after names an id the tree does not have
    └── CircularRelease       start_paused children wait for each other (or themselves)

Ids double as Ray actor names, so they must be unique across the whole tree.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tradetree.core import BackoffPolicy, ConfigError
from tradetree.supervisor.placement import Placement

__all__ = [
    "RestartType",
    "RestartStrategy",
    "BackoffSpec",
    "ChildSpec",
    "SupervisorSpec",
    "SpecError",
    "BadIntensity",
    "BadBackoff",
    "BadCombination",
    "DuplicateChildId",
    "UnknownReleaseTarget",
    "CircularRelease",
    "SUPERVISOR_ACTOR_CLASS",
    "check_intensity",
    "check_backoff",
    "check_unique_ids",
    "check_release_targets",
    "validate_tree",
    "iter_tree",
    "subtree_ids",
    "as_child_spec",
]

_FROZEN = ConfigDict(frozen=True, extra="forbid")
_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-\[\]]{0,99}$"

# The actor class a parent supervisor launches for a nested SupervisorSpec.
SUPERVISOR_ACTOR_CLASS = "tradetree.supervisor.supervisor:SupervisorActor"


class SpecError(ConfigError):
    """A supervision spec breaks a rule. The message names the spec and the rule."""


class BadIntensity(SpecError):
    """Restart intensity must be >= 0 restarts within a period > 0 seconds."""


class BadBackoff(SpecError):
    """Backoff min_secs must not exceed max_secs."""


class BadCombination(SpecError):
    """Two fields that do not make sense together (e.g. release_after without start_paused)."""


class DuplicateChildId(SpecError):
    """Two children share an id; ids are Ray actor names and must be unique."""


class UnknownReleaseTarget(SpecError):
    """A release_after id names no child of the tree."""


class CircularRelease(SpecError):
    """start_paused children wait for each other's release: none would ever resume."""


def check_backoff(spec: BackoffSpec) -> None:
    """Raises BadBackoff if ``min_secs > max_secs``."""
    if spec.min_secs > spec.max_secs:
        raise BadBackoff(f"backoff min_secs ({spec.min_secs}) exceeds max_secs ({spec.max_secs})")



class RestartType(str, enum.Enum):
    """When a child that exited is started again."""

    PERMANENT = "permanent"  # always restarted
    TRANSIENT = "transient"  # restarted only after an abnormal exit (died, unhealthy, hung)
    TEMPORARY = "temporary"  # never restarted


class RestartStrategy(str, enum.Enum):
    """Which children restart when one fails. Only one_for_one exists today."""

    ONE_FOR_ONE = "one_for_one"


class BackoffSpec(BaseModel):
    """Exponential backoff before a restart: ``min_secs * 2**attempt`` capped at
    ``max_secs``, scaled by a random factor in ``[1 - jitter, 1 + jitter]`` (and
    never above ``max_secs``). The attempt counter resets once the child has run
    for ``reset_after_secs`` without failing.
    """

    model_config = _FROZEN

    min_secs: float = Field(default=0.5, ge=0)
    max_secs: float = Field(default=30.0, ge=0)
    jitter: float = Field(default=0.2, ge=0, le=1)
    reset_after_secs: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> BackoffSpec:
        check_backoff(self)
        return self

    def policy(self) -> BackoffPolicy:
        """The restart delays as the shared ``core.backoff`` policy (proportional jitter)."""
        return BackoffPolicy(base_secs=self.min_secs, cap_secs=self.max_secs, jitter="proportional",
                             fraction=self.jitter)


# The pydantic plugin's synthesized __init__(**kwargs) collides with the `kwargs` field.
class ChildSpec(BaseModel):  # type: ignore[no-redef]
    """One supervised Ray actor.

    The actor class (``"package.module:Attr"``; a ``@ray.remote`` class or a
    plain class) must implement the children contract: ``async start()``,
    ``async stop()``, ``async check_health() -> HealthReport`` and, when
    ``start_paused``, ``async pause(reason: str)`` and ``async resume()``.
    A ``start_paused`` child must take no risk until ``resume()``; the
    supervisor also calls ``pause()`` right after ``start()`` and resumes it only
    when its own probes and those of every ``release_after`` child are green.
    """

    model_config = _FROZEN

    id: str = Field(pattern=_ID_PATTERN)
    actor_class: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = Field(default_factory=dict)
    restart: RestartType = RestartType.PERMANENT
    backoff: BackoffSpec = BackoffSpec()
    probe_period_secs: float = Field(default=1.0, gt=0)
    probe_timeout_secs: float = Field(default=2.0, gt=0)
    probe_failures_to_restart: int = Field(default=3, ge=1)
    heartbeat_key: str | None = None
    heartbeat_stale_secs: float = Field(default=10.0, gt=0)
    # Probes of a dependency every child shares (Redis): while one of them fails, the child is held,
    # not restarted, whatever else fails with it. A restart cannot bring Redis back, and an outage
    # must not restart the whole tree and escalate to SAFE MODE; the actors' own loops retry.
    hold_while_failing: tuple[str, ...] = ("store",)
    startup_timeout_secs: float = Field(default=30.0, gt=0)
    shutdown_timeout_secs: float = Field(default=5.0, gt=0)
    start_paused: bool = False
    release_after: tuple[str, ...] = ()
    num_cpus: float = Field(default=0, ge=0)
    placement: Placement = Placement()

    @model_validator(mode="after")
    def _check(self) -> ChildSpec:
        if self.release_after and not self.start_paused:
            raise BadCombination(
                f"child {self.id}: release_after needs start_paused=True "
                "(only a paused child can be held until others are green)"
            )
        if self.id in self.release_after:
            raise CircularRelease(f"child {self.id}: release_after names the child itself")
        return self


class SupervisorSpec(BaseModel):
    """A supervisor: flags and an ordered tuple of children.

    ``intensity`` restarts within ``period_secs`` are tolerated; one more stops
    the children (when ``stop_children_on_escalate``) and escalates. The fields
    after ``children`` apply when this supervisor is itself the child of another
    one (how the parent restarts and probes it). Set
    ``stop_children_on_escalate=False`` on a root whose escalation hook needs the
    children alive (e.g. to pause strategies in SAFE MODE).
    """

    model_config = _FROZEN

    id: str = Field(pattern=_ID_PATTERN)
    strategy: RestartStrategy = RestartStrategy.ONE_FOR_ONE
    intensity: int = 3
    period_secs: float = 5.0
    children: tuple[ChildSpec | SupervisorSpec, ...] = ()
    stop_children_on_escalate: bool = True
    # False: past its intensity it alerts and keeps restarting at its children's longest backoff
    # instead of escalating. For children that never trade: their crash loop must not reach the
    # intensity that puts trading into SAFE MODE.
    escalate: bool = True
    # as a child of another supervisor:
    restart: RestartType = RestartType.PERMANENT
    backoff: BackoffSpec = BackoffSpec()
    probe_period_secs: float = Field(default=1.0, gt=0)
    probe_timeout_secs: float = Field(default=5.0, gt=0)
    probe_failures_to_restart: int = Field(default=3, ge=1)
    startup_timeout_secs: float = Field(default=120.0, gt=0)
    shutdown_timeout_secs: float = Field(default=60.0, gt=0)
    num_cpus: float = Field(default=0, ge=0)
    placement: Placement = Placement()

    @model_validator(mode="after")
    def _check(self) -> SupervisorSpec:
        check_intensity(self)
        check_unique_ids(self.children, where=f"supervisor {self.id}")
        return self


SupervisorSpec.model_rebuild()


def check_intensity(spec: SupervisorSpec) -> None:
    """Raises BadIntensity unless ``intensity >= 0`` and ``period_secs > 0``."""
    if spec.intensity < 0:
        raise BadIntensity(f"supervisor {spec.id}: intensity must be >= 0, got {spec.intensity}")
    if not spec.period_secs > 0:
        raise BadIntensity(f"supervisor {spec.id}: period_secs must be > 0, got {spec.period_secs}")


def check_unique_ids(children: tuple[ChildSpec | SupervisorSpec, ...], *, where: str) -> None:
    """Raises DuplicateChildId if two of ``children`` share an id."""
    seen: set[str] = set()
    for child in children:
        if child.id in seen:
            raise DuplicateChildId(f"{where}: child id {child.id!r} is used twice")
        seen.add(child.id)


def iter_tree(spec: SupervisorSpec) -> Iterator[ChildSpec | SupervisorSpec]:
    """Every spec in the tree, depth first, the root included."""
    yield spec
    for child in spec.children:
        if isinstance(child, SupervisorSpec):
            yield from iter_tree(child)
        else:
            yield child


def subtree_ids(spec: ChildSpec | SupervisorSpec) -> frozenset[str]:
    """Ids of ``spec`` and everything under it."""
    if isinstance(spec, ChildSpec):
        return frozenset({spec.id})
    return frozenset(s.id for s in iter_tree(spec))


def _with_ancestors(
    spec: SupervisorSpec, ancestors: tuple[str, ...]
) -> Iterator[tuple[ChildSpec | SupervisorSpec, tuple[str, ...]]]:
    inside = ancestors + (spec.id,)
    for child in spec.children:
        yield child, inside
        if isinstance(child, SupervisorSpec):
            yield from _with_ancestors(child, inside)


def check_release_targets(spec: SupervisorSpec, *, allow_external: bool = False) -> None:
    """Check every ``release_after`` of the tree.

    Raises:
        UnknownReleaseTarget: an id is not in the tree (unless ``allow_external``:
            a nested supervisor lets its parent resolve ids outside its subtree).
        CircularRelease: start_paused children wait for one another in a cycle.
    """
    known = subtree_ids(spec)
    waits: dict[str, tuple[str, ...]] = {}
    for node, ancestors in _with_ancestors(spec, ()):
        if isinstance(node, ChildSpec) and node.release_after:
            waits[node.id] = node.release_after
            for target in node.release_after:
                if target not in known and not allow_external:
                    raise UnknownReleaseTarget(
                        f"child {node.id}: release_after names {target!r}, "
                        f"which is not in supervisor {spec.id}'s tree"
                    )
                if target in ancestors:
                    # a supervisor is green only when all its children run: it would wait for itself
                    raise CircularRelease(f"child {node.id}: release_after names its own supervisor {target!r}")
    # A cycle only matters among children that are themselves held paused.
    visiting: set[str] = set()
    done: set[str] = set()

    def visit(node_id: str, path: tuple[str, ...]) -> None:
        if node_id in done:
            return
        if node_id in visiting:
            cycle = " -> ".join(path[path.index(node_id):] + (node_id,))
            raise CircularRelease(f"release_after cycle: {cycle}")
        visiting.add(node_id)
        for target in waits.get(node_id, ()):
            visit(target, path + (node_id,))
        visiting.discard(node_id)
        done.add(node_id)

    for node_id in waits:
        visit(node_id, ())


def validate_tree(spec: SupervisorSpec, *, allow_external_release: bool = False) -> None:
    """Whole-tree checks a single SupervisorSpec cannot do on its own.

    Raises:
        DuplicateChildId: an id appears twice anywhere in the tree (root included).
        UnknownReleaseTarget, CircularRelease: see ``check_release_targets``.
    """
    seen: set[str] = set()
    for node in iter_tree(spec):
        if node.id in seen:
            raise DuplicateChildId(f"supervisor {spec.id}: id {node.id!r} appears twice in the tree")
        seen.add(node.id)
    check_release_targets(spec, allow_external=allow_external_release)


def as_child_spec(spec: SupervisorSpec) -> ChildSpec:
    """The ChildSpec a parent uses to run a nested supervisor as a ``SupervisorActor``.

    Runtime wiring (parent name, alerter, store factory) is added by the parent
    when it creates the actor; it is not part of the spec.
    """
    return ChildSpec(
        id=spec.id,
        actor_class=SUPERVISOR_ACTOR_CLASS,
        args=(spec,),
        restart=spec.restart,
        backoff=spec.backoff,
        probe_period_secs=spec.probe_period_secs,
        probe_timeout_secs=spec.probe_timeout_secs,
        probe_failures_to_restart=spec.probe_failures_to_restart,
        startup_timeout_secs=spec.startup_timeout_secs,
        shutdown_timeout_secs=spec.shutdown_timeout_secs,
        num_cpus=spec.num_cpus,
        placement=spec.placement,
    )
