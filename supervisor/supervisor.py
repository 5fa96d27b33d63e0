"""The supervisor: OTP-style one_for_one supervision of Ray actors.

``Supervisor`` is plain async logic over an ``ActorBackend`` (Ray, or a fake
in tests), an optional heartbeat source (the Redis store) and an optional
alert callback. ``SupervisorActor`` is the thin Ray actor that hosts one;
``launch_supervisor`` creates and starts a root one.

Guarantees:

- Children start in order (create, ``start()``, then ``check_health()`` until
  healthy or ``startup_timeout_secs``); a failed start stops the ones already
  started, in reverse, and raises ``StartFailed`` naming the child and the
  failing probe. ``stop()`` stops children in reverse order.
- The monitor keeps at most one health check in flight per child, jitters
  the period, counts consecutive failures, treats an actor Ray reports dead as
  failed at once and a stale heartbeat as hung (killed, then restarted). It
  never waits on one child: probes, restarts and releases run as tasks.
- A restarted child is not put back to work until its probes pass; a
  ``start_paused`` child is paused after ``start()`` and ``resume()``d only
  when its own probes and every ``release_after`` child are green (running,
  last probe healthy).
- Restarts follow the restart type, after an exponential backoff; one restart
  over the intensity escalates: children are stopped (unless the spec says
  otherwise) and ``on_escalate(reason)`` is called once. An escalated
  supervisor restarts nothing until it is started again, so it cannot
  crash-loop.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from tradetree.core import (
    Clock,
    ComponentState,
    HealthReport,
    ProbeResult,
    RestartRefused,
    SupervisorError,
    WallClock,
    supervisor_heartbeat_key,
)
from tradetree.supervisor.placement import NodeView, NoNodeFits, choose_node
from tradetree.supervisor.ray_backend import ActorBackend, ActorDied, BackendError
from tradetree.supervisor.restart_policy import (
    Backoff,
    ChildLifecycle,
    ChildState,
    ExitReason,
    ProbeFailureCounter,
    RestartIntensity,
    heartbeat_is_stale,
    jittered_secs,
    should_restart,
)
from tradetree.supervisor.spec import (
    SUPERVISOR_ACTOR_CLASS,
    ChildSpec,
    SupervisorSpec,
    as_child_spec,
    subtree_ids,
    validate_tree,
)

__all__ = [
    "Supervisor",
    "SupervisorActor",
    "launch_supervisor",
    "SupervisorError",
    "SupervisorStateError",
    "StartFailed",
    "RestartRefused",
    "UnknownChild",
    "HeartbeatSource",
    "AlertFn",
    "EscalateFn",
    "ReleaseLookup",
    "SUPERVISOR_PROBE",
]

log = logging.getLogger(__name__)

AlertFn = Callable[[str, str, str, str], Any]  # (severity, key, title, text), sync or async
EscalateFn = Callable[[str], Any]  # (reason), sync or async
ReleaseLookup = Callable[[str], Awaitable[bool]]  # child id -> is it green?
SleepFn = Callable[[float], Awaitable[None]]

# The probe of a supervisor's own HealthReport that says it runs (not escalated or stopped).
SUPERVISOR_PROBE = "supervisor"
_HOOK_TIMEOUT_SECS = 30.0
ABANDONED_START_UNDO_SECS = 30.0  # pausing strategies and canceling orders on every venue
_ALERT_TIMEOUT_SECS = 5.0
# A node whose raylet stopped answering after a child there died is avoided this long (Ray declares
# it dead sooner, or it answers again and its children's probes say so).
NODE_SUSPECT_SECS = 120.0


class HeartbeatSource(Protocol):
    """Where heartbeats live (``core.store.RedisStore`` has this method)."""

    async def heartbeats(self) -> dict[str, int]:
        """Component name -> last heartbeat, ms since the epoch."""
        ...


class SupervisorStateError(SupervisorError):
    """An operation was called in a supervisor state that does not allow it."""


class StartFailed(SupervisorError):
    """A child did not start (or its probes did not pass in time); started siblings were stopped."""


class UnknownChild(SupervisorError):
    """No child of this supervisor has that id."""


class _BringUpFailed(Exception):
    def __init__(self, reason: ExitReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(eq=False)
class _Child:
    """Runtime record of one child. Owned by the Supervisor's event loop."""

    spec: ChildSpec
    is_supervisor: bool
    subtree: frozenset[str]
    backoff: Backoff
    failures: ProbeFailureCounter
    lifecycle: ChildLifecycle = field(default_factory=ChildLifecycle)
    handle: Any = None
    generation: int = 0  # bumped per incarnation and on exit: stale probe results are dropped
    restarts: int = 0
    last_report: HealthReport | None = None
    last_probe_error: str = ""
    last_exit: str = ""
    up_since_ms: int = 0
    running_since: float | None = None
    next_probe_at: float = 0.0
    next_release_at: float = 0.0
    probe_task: asyncio.Task[None] | None = None
    op_task: asyncio.Task[None] | None = None
    op_kind: str = ""
    node_id: str | None = None  # where the current (or last) incarnation runs, when known

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def state(self) -> ChildState:
        return self.lifecycle.state

    @property
    def green(self) -> bool:
        """At work and its last probe passed: what release_after and check_health require."""
        return (
            self.state is ChildState.RUNNING
            and self.last_report is not None
            and self.last_report.healthy
        )

    def failing_text(self) -> str:
        if self.last_report is None:
            return self.last_probe_error or "no probe answered"
        failing = self.last_report.failing()
        if not failing:
            return "all probes pass"
        return "; ".join(f"probe {p.name!r} failing: {p.detail}" if p.detail else f"probe {p.name!r} failing" for p in failing)


class Supervisor:
    """One_for_one supervision of the children of ``spec``.

    Args:
        spec: the supervisor's spec; nested SupervisorSpecs run as SupervisorActors.
        backend: the actor runtime (``RayBackend`` or a test fake).
        store: heartbeat source; children with a ``heartbeat_key`` are checked against it.
        alert: ``(severity, key, title, text)``, called for exits, restarts and
            escalation; it is never awaited on the monitor's path.
        on_escalate: ``(reason)``, called once when restart intensity is exceeded.
        on_start_abandoned: ``(reason)``, awaited (bounded) when ``start()`` fails, before the
            children already started are stopped: what they did (orders resting at a venue)
            is undone while the children that can undo it still run.
        release_upstream: answers ``release_after`` ids outside this subtree
            (the parent supervisor); without it every id must be in the tree.
        nested_kwargs: extra constructor kwargs for nested supervisor actors.
        clock, sleep, seed: time and randomness, injectable for tests.
        run_monitor: False leaves the monitor loop off; call ``tick()`` yourself.

    Raises:
        SpecError subclasses: the tree is invalid (see ``supervisor.spec``).
    """

    def __init__(
        self,
        spec: SupervisorSpec,
        backend: ActorBackend,
        *,
        store: HeartbeatSource | None = None,
        alert: AlertFn | None = None,
        on_escalate: EscalateFn | None = None,
        on_start_abandoned: EscalateFn | None = None,
        release_upstream: ReleaseLookup | None = None,
        nested_kwargs: dict[str, Any] | None = None,
        clock: Clock | None = None,
        sleep: SleepFn | None = None,
        seed: int | None = None,
        run_monitor: bool = True,
        store_timeout_secs: float = 2.0,
        ancestor_nodes: tuple[str, ...] = (),
    ) -> None:
        validate_tree(spec, allow_external_release=release_upstream is not None)
        self._spec = spec
        self._backend = backend
        self._store = store
        self._alert_fn = alert
        self._on_escalate = on_escalate
        self._on_start_abandoned = on_start_abandoned
        self._release_upstream = release_upstream
        self._nested_kwargs = dict(nested_kwargs or {})
        self._clock: Clock = clock or WallClock()
        self._sleep: SleepFn = sleep or asyncio.sleep
        self._rng = random.Random(seed)
        self._run_monitor = run_monitor
        self._store_timeout_secs = store_timeout_secs
        self._intensity = RestartIntensity(spec.intensity, spec.period_secs, self._clock)
        self._children: list[_Child] = []
        for node in spec.children:
            child_spec = as_child_spec(node) if isinstance(node, SupervisorSpec) else node
            self._children.append(
                _Child(
                    spec=child_spec,
                    is_supervisor=isinstance(node, SupervisorSpec),
                    subtree=subtree_ids(node),
                    backoff=Backoff(child_spec.backoff, random.Random(self._rng.getrandbits(64))),
                    failures=ProbeFailureCounter(child_spec.probe_failures_to_restart),
                )
            )
        self._by_id = {c.id: c for c in self._children}
        periods = [c.spec.probe_period_secs for c in self._children] or [1.0]
        self._tick_secs = min(max(min(periods) / 2, 0.01), 1.0)
        self._heartbeat_period_secs = min(periods)
        self._state = ComponentState.NEW
        self._tasks: set[asyncio.Task[Any]] = set()
        self._monitor_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._next_heartbeat_at = 0.0
        self._heartbeat_error: str | None = None
        # When heartbeats became readable again after an outage: none could be written meanwhile,
        # so their age counts from here (else every child would look hung the moment Redis returns).
        self._heartbeats_readable_since_ms = 0
        self._escalation_reason = ""
        self._beat_task: asyncio.Task[None] | None = None
        self._beat_error: str | None = None
        self._suspect_nodes: dict[str, float] = {}  # node id -> monotonic time the suspicion ends
        self._ancestor_nodes = tuple(ancestor_nodes)
        self._lost_nodes_alerted: set[str] = set()

    # ------------------------------------------------------------------ public

    @property
    def spec(self) -> SupervisorSpec:
        return self._spec

    @property
    def state(self) -> ComponentState:
        return self._state

    def child_state(self, child_id: str) -> ChildState:
        """Raises UnknownChild."""
        return self._child(child_id).state

    def child_handle(self, child_id: str) -> Any:
        """The current actor handle of a child (None while it is down). Raises UnknownChild."""
        return self._child(child_id).handle

    async def start(self) -> None:
        """Start every child in order, each through the probe gate, then monitor them.

        A leftover live actor holding a child's name (from an earlier run) is
        killed first: ``start()`` always starts fresh children; use ``adopt()``
        to keep them.

        Raises:
            SupervisorStateError: the supervisor is starting, running or stopping.
            StartFailed: a child could not be created or started, or its probes
                were not green within its ``startup_timeout_secs``. Children
                already started were stopped in reverse order.
        """
        self._begin_start("start()")
        started: list[_Child] = []
        for child in self._children:
            await self._take_down(child, graceful=True)  # only after an escalation that kept children
            child.lifecycle.to(ChildState.STOPPED)
            leftover = await self._backend.get_existing(child.id)
            if leftover is not None:
                log.warning("supervisor %s: killing leftover actor %r before a fresh start", self._spec.id, child.id)
                await self._backend.kill(leftover)
            try:
                await self._bring_up(child, adopt=False)
            except _BringUpFailed as failure:
                await self._take_down(child, graceful=False)
                child.lifecycle.to(ChildState.STOPPED)
                undone = await self._undo_abandoned_start(f"child {child.id!r} did not start: {failure.detail}")
                for done in reversed(started):
                    await self._take_down(done, graceful=True)
                    done.lifecycle.to(ChildState.STOPPED)
                self._state = ComponentState.STOPPED
                raise StartFailed(
                    f"supervisor {self._spec.id}: child {child.id!r} did not start "
                    f"({failure.reason.value}): {failure.detail}; "
                    f"stopped {len(started)} child(ren) already started{undone}"
                ) from None
            started.append(child)
            self._check_still_starting()
        self._finish_start()

    async def _undo_abandoned_start(self, reason: str) -> str:
        """Run ``on_start_abandoned`` within ABANDONED_START_UNDO_SECS; what to add to StartFailed's message."""
        if self._on_start_abandoned is None:
            return ""
        try:
            result = self._on_start_abandoned(reason)
            if inspect.isawaitable(result):
                result = await asyncio.wait_for(result, timeout=ABANDONED_START_UNDO_SECS)
        except Exception as exc:  # the unwind goes on: a venue not up has nothing of ours to cancel
            log.exception("supervisor %s: on_start_abandoned failed", self._spec.id)
            return f" (undoing what had started failed first: {exc.__class__.__name__}: {exc})"
        return f"; before that: {result}" if isinstance(result, str) and result else ""

    async def adopt(self) -> dict[str, str]:
        """Start after the supervisor's own restart, keeping children that still run.

        Each child found alive by name is adopted after one probe (a
        ``start_paused`` child is paused again and goes through the release
        gate); a missing child is created; a dead or unanswering one is killed
        and restarted by policy. Nothing is unwound on failure.

        Returns:
            child id -> "adopted" | "created" | "restarting".

        Raises:
            SupervisorStateError: the supervisor is starting, running or stopping.
        """
        self._begin_start("adopt()")
        outcome: dict[str, str] = {}
        pending: list[tuple[_Child, ExitReason, str]] = []
        for child in self._children:
            self._check_still_starting()
            if child.handle is not None and child.state.is_up:
                existing = child.handle  # kept through an escalation: adopt it again
            else:
                await self._take_down(child, graceful=False)
                child.lifecycle.to(ChildState.STOPPED)
                existing = await self._backend.get_existing(child.id)
            if existing is None:
                try:
                    await self._bring_up(child, adopt=True)
                    outcome[child.id] = "created"
                except _BringUpFailed as failed:
                    self._mark_down(child, failed.reason, failed.detail)
                    pending.append((child, failed.reason, failed.detail))
                    outcome[child.id] = "restarting"
                continue
            failure = await self._adopt_one(child, existing)
            if failure is None:
                outcome[child.id] = "adopted"
            else:
                self._mark_down(child, failure.reason, failure.detail)
                pending.append((child, failure.reason, failure.detail))
                outcome[child.id] = "restarting"
        self._finish_start()
        for child, reason, detail in pending:
            self._start_op(child, "restart", self._restart(child, reason, detail))
        return outcome

    async def stop(self) -> None:
        """Stop monitoring and stop every child in reverse order (``stop()``, then kill). Idempotent."""
        if self._state in (ComponentState.NEW, ComponentState.STOPPED):
            self._state = ComponentState.STOPPED
            return
        self._state = ComponentState.STOPPING
        await self._cancel_tasks()
        for child in reversed(self._children):
            await self._take_down(child, graceful=True)
            child.lifecycle.to(ChildState.STOPPED)
        self._state = ComponentState.STOPPED
        log.info("supervisor %s: stopped", self._spec.id)

    async def restart_child(self, child_id: str) -> None:
        """Restart one child now (no backoff) through the probe gate.

        Raises:
            UnknownChild: no such child.
            SupervisorStateError: the supervisor is not running.
            RestartRefused: the fresh incarnation's probes did not pass within
                its startup timeout; the message names the failing probes. The
                child is then taken down and restarted by policy.
        """
        child = self._child(child_id)
        if self._state is not ComponentState.RUNNING:
            raise SupervisorStateError(
                f"restart_child() needs a running supervisor; {self._spec.id} is {self._state.value}"
            )
        await self._cancel_child_tasks(child)
        task = self._start_op(child, "manual", self._manual_restart(child))
        await task

    async def check_health(self) -> HealthReport:
        """Healthy when the supervisor runs and every child is RUNNING with passing probes."""
        detail = self._state.value
        if self._escalation_reason:
            detail += f": {self._escalation_reason}"
        probes = [ProbeResult(name=SUPERVISOR_PROBE, ok=self._state is ComponentState.RUNNING, detail=detail)]
        if self._store is not None:
            probes.append(
                ProbeResult(name="heartbeats", ok=self._heartbeat_error is None, detail=self._heartbeat_error or "")
            )
        for child in self._children:
            text = child.state.value if child.green else f"{child.state.value}: {child.failing_text()}"
            probes.append(ProbeResult(name=f"child:{child.id}", ok=child.green, detail=text))
        return HealthReport(component=self._spec.id, ts_ms=self._clock.now_ms(), probes=tuple(probes))

    async def child_healthy(self, child_id: str) -> bool:
        """Is ``child_id`` green? Answers for this subtree, asks nested supervisors
        below and ``release_upstream`` above. Unknown or unreachable means False."""
        child = self._by_id.get(child_id)
        if child is not None:
            return child.green
        for nested in self._children:
            if nested.is_supervisor and child_id in nested.subtree:
                if nested.handle is None or not nested.state.is_up:
                    return False
                try:
                    answer = await self._backend.call(
                        nested.handle, "child_healthy", child_id, timeout_secs=nested.spec.probe_timeout_secs
                    )
                except BackendError:
                    return False
                return answer is True
        if self._release_upstream is not None:
            try:
                return (await self._release_upstream(child_id)) is True
            except Exception as exc:  # an unreachable parent means "not green": fail closed
                log.warning("supervisor %s: release lookup of %r failed: %s", self._spec.id, child_id, exc)
        return False

    def status(self) -> dict[str, Any]:
        """A JSON-friendly snapshot: the supervisor and, per child, state, restarts and probes."""
        children: dict[str, Any] = {}
        for child in self._children:
            report = child.last_report
            children[child.id] = {
                "state": child.state.value,
                "supervisor": child.is_supervisor,
                "restarts": child.restarts,
                "consecutive_failures": child.failures.consecutive,
                "last_probe": report.model_dump(mode="json") if report is not None else None,
                "last_probe_error": child.last_probe_error,
                "failing_probes": [p.model_dump(mode="json") for p in report.failing()] if report else [],
                "last_exit": child.last_exit,
                "release_after": list(child.spec.release_after),
                # what a manual restart may take: a graceful stop, then a start through the probe gate
                "shutdown_timeout_secs": child.spec.shutdown_timeout_secs,
                "startup_timeout_secs": child.spec.startup_timeout_secs,
                "node_id": child.node_id,
            }
        return {
            "id": self._spec.id,
            "state": self._state.value,
            "strategy": self._spec.strategy.value,
            "restarts_in_window": self._intensity.count(),
            "intensity": self._spec.intensity,
            "period_secs": self._spec.period_secs,
            "escalation_reason": self._escalation_reason,
            "heartbeat_error": self._heartbeat_error,
            "beat_error": self._beat_error,
            "suspect_nodes": sorted(self._suspect_nodes),
            "node_id": self._own_node(),
            "children": children,
        }

    def tick(self) -> None:
        """One monitor pass: launch due probes, release checks and the heartbeat check.

        Never waits: all work runs in tasks, at most one probe per child.
        """
        if self._state not in (ComponentState.RUNNING, ComponentState.ESCALATED):
            return
        now = self._clock.monotonic()
        for child in self._children:
            if not child.state.is_up:
                continue
            if child.op_task is None and child.probe_task is None and now >= child.next_probe_at:
                child.next_probe_at = now + jittered_secs(child.spec.probe_period_secs, self._rng)
                child.probe_task = self._spawn(self._probe(child, child.generation), f"probe:{child.id}")
            if (
                self._state is ComponentState.RUNNING
                and child.state is ChildState.PAUSED
                and child.op_task is None
                and now >= child.next_release_at
            ):
                child.next_release_at = now + child.spec.probe_period_secs
                self._start_op(child, "release", self._release(child, child.generation))
        if (
            self._store is not None
            and self._heartbeat_task is None
            and now >= self._next_heartbeat_at
            and any(c.spec.heartbeat_key for c in self._children)
        ):
            self._next_heartbeat_at = now + self._heartbeat_period_secs
            self._heartbeat_task = self._spawn(self._check_heartbeats(), "heartbeats")

    async def settle(self) -> None:
        """Wait until no probe, restart, release, heartbeat or alert task is in flight."""
        while True:
            pending = [t for t in self._tasks if t is not self._monitor_task and not t.done()]
            if not pending:
                return
            await asyncio.wait(pending)

    # ------------------------------------------------------------ start / stop

    def _begin_start(self, what: str) -> None:
        if self._state not in (ComponentState.NEW, ComponentState.STOPPED, ComponentState.ESCALATED):
            raise SupervisorStateError(
                f"{what} needs a new, stopped or escalated supervisor; {self._spec.id} is {self._state.value}"
            )
        self._state = ComponentState.STARTING
        self._intensity.reset()
        self._escalation_reason = ""
        if self._beat_task is None and callable(getattr(self._store, "beat", None)):
            # From the start, not only once running: children released during start must see a root.
            self._beat_task = self._spawn(self._beat_loop(), "beat")

    def _check_still_starting(self) -> None:
        if self._state is not ComponentState.STARTING:
            raise SupervisorStateError(
                f"supervisor {self._spec.id} was {self._state.value} while starting; start abandoned"
            )

    def _finish_start(self) -> None:
        self._state = ComponentState.RUNNING
        log.info("supervisor %s: running %d child(ren)", self._spec.id, len(self._children))
        if self._run_monitor and self._monitor_task is None:
            self._monitor_task = self._spawn(self._monitor_loop(), "monitor")

    async def _beat_loop(self) -> None:
        """Refresh this supervisor's heartbeat (``supervisor:<id>``) while it supervises.

        Children read the root's: while it is stale the tree is unsupervised and they fail closed.
        """
        key = supervisor_heartbeat_key(self._spec.id)
        beat = self._store.beat  # type: ignore[union-attr]
        try:
            while self._state in (ComponentState.STARTING, ComponentState.RUNNING, ComponentState.ESCALATED):
                try:
                    await asyncio.wait_for(beat(key, self._clock.now_ms()), timeout=self._store_timeout_secs)
                    if self._beat_error is not None:
                        log.info("supervisor %s: heartbeat written again", self._spec.id)
                    self._beat_error = None
                except Exception as exc:  # Redis down: children hold, nothing to restart here
                    if self._beat_error is None:
                        log.warning("supervisor %s: cannot write its heartbeat: %s", self._spec.id,
                                    type(exc).__name__)
                    self._beat_error = f"{type(exc).__name__}: {exc}"
                await self._sleep(jittered_secs(self._heartbeat_period_secs, self._rng))
        finally:
            if self._beat_task is asyncio.current_task():
                self._beat_task = None

    async def _monitor_loop(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:  # a bug in one pass must not end supervision
                log.exception("supervisor %s: monitor pass failed", self._spec.id)
            await self._sleep(jittered_secs(self._tick_secs, self._rng))

    async def _bring_up(self, child: _Child, *, adopt: bool) -> None:
        """Create, start and gate one incarnation. Leaves the child RUNNING or PAUSED.

        Raises:
            _BringUpFailed: creation, start() or pause() failed, or probes were
                not green in time. ``child.handle`` may hold the failed actor.
        """
        spec = child.spec
        child.generation += 1
        child.lifecycle.to(ChildState.STARTING)
        child.last_report = None
        child.last_probe_error = ""
        child.failures.reset()
        child.running_since = None
        deadline = self._clock.monotonic() + spec.startup_timeout_secs
        kwargs = dict(spec.kwargs)
        if child.is_supervisor:
            kwargs.update(self._nested_kwargs)
            above = tuple(n for n in (*self._ancestor_nodes, self._own_node()) if n)
            if above:
                kwargs["ancestor_nodes"] = above
        try:
            node_id = await self._choose_node(child)
        except NoNodeFits as exc:
            raise _BringUpFailed(ExitReason.START_FAILED, f"placement: {exc}") from None
        options: dict[str, Any] = {}
        if node_id is not None:
            options["node_id"] = node_id
        if spec.placement.resources:
            options["resources"] = dict(spec.placement.resources)
        try:
            child.handle = self._backend.create(child.id, spec.actor_class, spec.args, kwargs, num_cpus=spec.num_cpus,
                                                **options)
        except BackendError as exc:
            raise _BringUpFailed(ExitReason.START_FAILED, f"create failed: {exc}") from None
        child.node_id = node_id
        child.up_since_ms = self._clock.now_ms()
        start_kwargs = {"adopt": adopt} if child.is_supervisor else {}
        try:
            await self._backend.call(
                child.handle, "start", timeout_secs=self._remaining(deadline), **start_kwargs
            )
            if spec.start_paused:
                await self._backend.call(
                    child.handle, "pause", self._pause_reason(), timeout_secs=self._remaining(deadline)
                )
        except ActorDied as exc:
            raise _BringUpFailed(ExitReason.DIED, f"died while starting: {exc}") from None
        except BackendError as exc:
            raise _BringUpFailed(ExitReason.START_FAILED, str(exc)) from None
        child.node_id = await self._node_of(child.handle) or node_id
        child.lifecycle.to(ChildState.PROBING)
        await self._probe_gate(child, deadline)
        if spec.start_paused:
            child.lifecycle.to(ChildState.PAUSED)
            child.next_probe_at = self._clock.monotonic() + spec.probe_period_secs
            await self._try_release(child)
        else:
            self._mark_running(child)

    async def _probe_gate(self, child: _Child, deadline: float) -> None:
        """Probe until healthy; raises _BringUpFailed at death or after the deadline."""
        spec = child.spec
        while True:
            try:
                report = await self._backend.call(child.handle, "check_health", timeout_secs=spec.probe_timeout_secs)
            except ActorDied as exc:
                raise _BringUpFailed(ExitReason.DIED, f"died while probed: {exc}") from None
            except BackendError as exc:
                report = None
                child.last_probe_error = f"check_health(): {exc}"
            # A nested supervisor passes once it runs: its start() already gated its own children.
            if self._record_report(child, report):
                return
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                raise _BringUpFailed(
                    ExitReason.START_FAILED,
                    f"probes not green within {spec.startup_timeout_secs:g}s: {child.failing_text()}",
                )
            await self._sleep(min(spec.probe_period_secs, remaining))

    async def _adopt_one(self, child: _Child, handle: Any) -> _BringUpFailed | None:
        """Take over a live actor; returns the failure if it must be restarted instead."""
        child.generation += 1
        child.handle = handle
        child.node_id = await self._node_of(handle)
        child.up_since_ms = self._clock.now_ms()  # grace for its next heartbeat
        child.failures.reset()
        child.lifecycle.to(ChildState.STOPPED)
        child.lifecycle.to(ChildState.STARTING)
        child.lifecycle.to(ChildState.PROBING)
        try:
            report = await self._backend.call(handle, "check_health", timeout_secs=child.spec.probe_timeout_secs)
            if child.spec.start_paused:
                # Like the pause after a start: a bring-up step that writes Redis, bounded like a start.
                await self._backend.call(handle, "pause", self._pause_reason(), timeout_secs=child.spec.startup_timeout_secs)
        except ActorDied as exc:
            return _BringUpFailed(ExitReason.DIED, f"adopted actor is dead: {exc}")
        except BackendError as exc:
            return _BringUpFailed(ExitReason.HUNG, f"adopted actor does not answer: {exc}")
        self._record_report(child, report)
        child.failures.record(child.last_report is not None and child.last_report.live)
        if child.spec.start_paused:
            child.lifecycle.to(ChildState.PAUSED)
        else:
            self._mark_running(child)
        child.next_probe_at = self._clock.monotonic() + child.spec.probe_period_secs
        log.info("supervisor %s: adopted %s (%s)", self._spec.id, child.id, child.state.value)
        return None

    async def _take_down(self, child: _Child, *, graceful: bool) -> None:
        """End the current incarnation: ``stop()`` if graceful (bounded), then kill.

        The handle is cleared only after the kill, so a cancelled take-down
        leaves it for the next one.
        """
        handle = child.handle
        if handle is None:
            return
        child.generation += 1
        if graceful:
            try:
                await self._backend.call(handle, "stop", timeout_secs=child.spec.shutdown_timeout_secs)
            except BackendError as exc:
                log.info("supervisor %s: %s stop(): %s", self._spec.id, child.id, exc)
        await self._backend.kill(handle)
        if child.handle is handle:
            child.handle = None

    # -------------------------------------------------------------- monitoring

    async def _probe(self, child: _Child, generation: int) -> None:
        try:
            try:
                report = await self._backend.call(
                    child.handle, "check_health", timeout_secs=child.spec.probe_timeout_secs
                )
            except ActorDied as exc:
                if generation == child.generation:
                    reason = ExitReason.NORMAL if exc.intended else ExitReason.DIED
                    self._on_exit(child, reason, str(exc))
                return
            except BackendError as exc:
                report = None
                error = f"check_health(): {exc}"
            else:
                error = ""
            if generation != child.generation or not child.state.is_up:
                return
            if report is None:
                child.last_probe_error = error
            counted_ok = self._record_report(child, report)
            if child.failures.record(counted_ok):
                self._on_exit(
                    child,
                    ExitReason.UNHEALTHY,
                    f"{child.failures.consecutive} consecutive failing probes: {child.failing_text()}",
                )
        finally:
            if child.probe_task is asyncio.current_task():
                child.probe_task = None

    def _record_report(self, child: _Child, report: Any) -> bool:
        """Store a probe answer; returns whether it counts as a pass for restart decisions.

        A nested supervisor is restarted only when it stops running (its
        ``supervisor`` probe fails) or does not answer, never because one of
        its own children is down: that child is its supervisor's business.
        """
        if report is not None and not isinstance(report, HealthReport):
            child.last_probe_error = f"check_health() returned {type(report).__name__}, not HealthReport"
            report = None
        child.last_report = report
        if report is None:
            return False
        child.last_probe_error = ""
        if child.is_supervisor:
            return all(p.ok for p in report.probes if p.name == SUPERVISOR_PROBE)
        held = [p.name for p in report.probes if not p.ok and p.name in child.spec.hold_while_failing]
        if held:
            return True  # a shared dependency is down (see ChildSpec.hold_while_failing): no restart
        # Readiness probes (liveness=False) gate releases, not restarts: see ProbeResult.
        return report.live

    async def _check_heartbeats(self) -> None:
        assert self._store is not None
        try:
            try:
                beats = await asyncio.wait_for(self._store.heartbeats(), timeout=self._store_timeout_secs)
            except Exception as exc:  # unknown liveness: report it, restart nothing on a guess
                if self._heartbeat_error is None:
                    log.warning("supervisor %s: heartbeats unreadable: %s", self._spec.id, type(exc).__name__)
                self._heartbeat_error = f"heartbeats unreadable: {type(exc).__name__}: {exc}"
                return
            now_ms = self._clock.now_ms()
            if self._heartbeat_error is not None:
                log.info("supervisor %s: heartbeats readable again", self._spec.id)
                self._heartbeats_readable_since_ms = now_ms
            self._heartbeat_error = None
            for child in self._children:
                key = child.spec.heartbeat_key
                if not key or not child.state.is_up or (child.op_task is not None and child.op_kind != "release"):
                    continue
                raw = beats.get(key)
                last = int(raw) if raw is not None else None
                since = max(child.up_since_ms, self._heartbeats_readable_since_ms)
                if heartbeat_is_stale(last, now_ms, child.spec.heartbeat_stale_secs, since):
                    age = (now_ms - max(last or 0, since)) / 1000
                    self._on_exit(
                        child,
                        ExitReason.HUNG,
                        f"heartbeat {key!r} is {age:.1f}s old (stale after {child.spec.heartbeat_stale_secs:g}s)",
                    )
        finally:
            if self._heartbeat_task is asyncio.current_task():
                self._heartbeat_task = None

    def _on_exit(self, child: _Child, reason: ExitReason, detail: str) -> None:
        """An up child failed: mark it down and (when running) start its restart."""
        if not child.state.is_up:
            return
        if child.op_task is not None:
            if child.op_kind != "release":
                return  # a restart already owns this child
            child.op_task.cancel()
            child.op_task = None
        if child.running_since is not None:
            child.backoff.note_uptime(self._clock.monotonic() - child.running_since)
        self._mark_down(child, reason, detail)
        log.warning("supervisor %s: child %s %s: %s", self._spec.id, child.id, reason.value, detail)
        self._alert("warning", f"{self._spec.id}:{child.id}:exit", f"{child.id} {reason.value}", detail)
        if self._state is ComponentState.RUNNING:
            self._start_op(child, "restart", self._restart(child, reason, detail))

    def _mark_down(self, child: _Child, reason: ExitReason, detail: str) -> None:
        child.generation += 1
        child.running_since = None
        down = ChildState.DEAD if reason in (ExitReason.DIED, ExitReason.NORMAL) else ChildState.UNHEALTHY
        child.lifecycle.to(down)
        child.last_exit = f"{reason.value}: {detail}"

    def _mark_running(self, child: _Child) -> None:
        child.lifecycle.to(ChildState.RUNNING)
        child.running_since = self._clock.monotonic()
        child.next_probe_at = child.running_since + child.spec.probe_period_secs

    # ---------------------------------------------------------------- restarts

    async def _restart(self, child: _Child, reason: ExitReason, detail: str) -> None:
        """Apply the restart policy until the child is back, stopped for good, or we escalate."""
        group = await self._node_loss_group(child, reason)
        await self._take_down(child, graceful=reason is ExitReason.UNHEALTHY and group is None)
        while True:
            if not should_restart(child.spec.restart, reason):
                child.lifecycle.to(ChildState.STOPPED)
                log.info("supervisor %s: %s (%s) not restarted after %s", self._spec.id, child.id,
                         child.spec.restart.value, reason.value)
                return
            if not self._intensity.record(group):
                what = (f"more than {self._spec.intensity} restart(s) within {self._spec.period_secs:g}s; "
                        f"last: {child.id} {reason.value}: {detail}")
                if self._spec.escalate:
                    await self._escalate(what)
                    return
                # Never escalates (children that do not trade): say so, and slow the crash loop down.
                log.error("supervisor %s: %s; restarting at the longest backoff, not escalating", self._spec.id, what)
                self._alert("critical", f"{self._spec.id}:{child.id}:crash-loop", f"{child.id} crash-looping", what)
                await self._sleep(child.spec.backoff.max_secs)
                if self._state is not ComponentState.RUNNING:
                    return
            group = None
            child.lifecycle.to(ChildState.BACKOFF)
            child.restarts += 1
            delay = child.backoff.next_delay_secs()
            log.info("supervisor %s: restarting %s in %.2fs (attempt %d)", self._spec.id, child.id, delay,
                     child.backoff.attempt)
            await self._sleep(delay)
            if self._state is not ComponentState.RUNNING:
                return
            try:
                await self._bring_up(child, adopt=True)
            except _BringUpFailed as failure:
                await self._take_down(child, graceful=False)
                self._mark_down(child, failure.reason, failure.detail)
                log.warning("supervisor %s: restart of %s failed: %s", self._spec.id, child.id, failure.detail)
                reason, detail = failure.reason, failure.detail
                continue
            self._alert("info", f"{self._spec.id}:{child.id}:restarted", f"{child.id} restarted",
                        f"{child.id} is {child.state.value} after restart {child.restarts}")
            return

    async def _manual_restart(self, child: _Child) -> None:
        await self._take_down(child, graceful=True)
        child.lifecycle.to(ChildState.STOPPED)
        child.restarts += 1
        try:
            await self._bring_up(child, adopt=True)
        except _BringUpFailed as failure:
            await self._take_down(child, graceful=False)
            self._mark_down(child, failure.reason, failure.detail)
            # Supervision goes on: the policy restarts it (with backoff) once its probes pass.
            child.op_task = None
            self._start_op(child, "restart", self._restart(child, failure.reason, failure.detail))
            raise RestartRefused(
                f"supervisor {self._spec.id}: {child.id} was not put back to work: {failure.detail}",
                reasons=[failure.detail],
            ) from None

    async def _release(self, child: _Child, generation: int) -> None:
        try:
            await self._try_release(child, generation)
        except _BringUpFailed as failure:
            if child.op_task is asyncio.current_task():
                child.op_task = None
            self._on_exit(child, ExitReason.DIED if failure.reason is ExitReason.DIED else ExitReason.UNHEALTHY,
                          failure.detail)

    async def _try_release(self, child: _Child, generation: int | None = None) -> bool:
        """Resume a PAUSED child if it and all its release_after children are green.

        Raises:
            _BringUpFailed: resume() failed.
        """
        generation = child.generation if generation is None else generation
        if child.last_report is None or not child.last_report.healthy:
            return False
        for target in child.spec.release_after:
            if not await self.child_healthy(target):
                return False
        if generation != child.generation or child.state is not ChildState.PAUSED:
            return False
        try:
            # A bring-up step that writes Redis, not a probe: bounded like a start. With the probe's
            # 2 s, a strategy host slowed by a busy machine failed its resume and, with it, the tree.
            await self._backend.call(child.handle, "resume", timeout_secs=child.spec.startup_timeout_secs)
        except ActorDied as exc:
            raise _BringUpFailed(ExitReason.DIED, f"died on resume(): {exc}") from None
        except BackendError as exc:
            raise _BringUpFailed(ExitReason.UNHEALTHY, f"resume() failed: {exc}") from None
        if generation != child.generation or child.state is not ChildState.PAUSED:
            return False
        self._mark_running(child)
        log.info("supervisor %s: released %s", self._spec.id, child.id)
        return True

    async def _escalate(self, reason: str) -> None:
        if self._state is ComponentState.ESCALATED:
            return
        self._state = ComponentState.ESCALATED
        self._escalation_reason = reason
        log.error("supervisor %s: escalating: %s", self._spec.id, reason)
        current = asyncio.current_task()
        if self._spec.stop_children_on_escalate:
            await self._cancel_tasks(keep=current)
            for child in reversed(self._children):
                await self._take_down(child, graceful=True)
                child.lifecycle.to(ChildState.ESCALATED)
        else:
            ops = [c.op_task for c in self._children if c.op_task is not None and c.op_task is not current]
            for task in ops:
                task.cancel()
            await asyncio.gather(*ops, return_exceptions=True)
            for child in self._children:
                if not child.state.is_up:
                    # a half-started incarnation is not left behind unsupervised
                    await self._take_down(child, graceful=False)
                    child.lifecycle.to(ChildState.ESCALATED)
        self._alert("critical", f"{self._spec.id}:escalated", f"supervisor {self._spec.id} escalated", reason)
        if self._on_escalate is not None:
            try:
                result = self._on_escalate(reason)
                if inspect.isawaitable(result):
                    await asyncio.wait_for(_awaited(result), timeout=_HOOK_TIMEOUT_SECS)
            except Exception:  # the hook failing must not crash the supervisor into a loop
                log.exception("supervisor %s: on_escalate hook failed", self._spec.id)

    # ---------------------------------------------------------------- placement

    async def _nodes(self) -> list[NodeView]:
        nodes = getattr(self._backend, "nodes", None)
        return list(await nodes()) if nodes is not None else []

    async def _node_of(self, handle: Any) -> str | None:
        node_of = getattr(self._backend, "node_of", None)
        if node_of is None or handle is None:
            return None
        try:
            return await node_of(handle)
        except Exception as exc:  # placement data is advisory: never fail a start on it
            log.debug("supervisor %s: node_of: %s", self._spec.id, exc)
            return None

    def _suspects(self) -> set[str]:
        now = self._clock.monotonic()
        self._suspect_nodes = {n: until for n, until in self._suspect_nodes.items() if until > now}
        return set(self._suspect_nodes)

    def _own_node(self) -> str | None:
        current = getattr(self._backend, "current_node", None)
        return current() if current is not None else None

    async def _choose_node(self, child: _Child) -> str | None:
        """Pin the child to a node chosen by ``placement.choose_node`` (None: Ray places it)."""
        nodes = await self._nodes()
        if not nodes:
            return None
        occupied = {c.id: c.node_id for c in self._children if c is not child and c.handle is not None}
        return choose_node(child.spec.placement, nodes, occupied=occupied, suspect=self._suspects(),
                           own_node=self._own_node(), ancestor_nodes=self._ancestor_nodes)

    async def _node_loss_group(self, child: _Child, reason: ExitReason) -> str | None:
        """``node:<id>`` when the child failed because its node is gone (unreachable or dead to Ray).

        Every child lost with that node then counts once toward the intensity, and no restart is
        placed there while it is suspected.
        """
        node = child.node_id
        reachable = getattr(self._backend, "node_reachable", None)
        if node is None or reachable is None or not reason.abnormal:
            return None
        if node not in self._suspects():
            alive = {n.node_id: n.alive for n in await self._nodes()}
            try:
                answers = alive.get(node, False) and await reachable(node)
            except Exception as exc:  # no verdict: treat as an ordinary failure
                log.debug("supervisor %s: node check: %s", self._spec.id, exc)
                return None
            if answers:
                return None
            self._suspect_nodes[node] = self._clock.monotonic() + NODE_SUSPECT_SECS
        if node not in self._lost_nodes_alerted:
            self._lost_nodes_alerted.add(node)
            on_node = sorted(c.id for c in self._children if c.node_id == node)
            log.error("supervisor %s: node %s lost; children there (%s) restart on other nodes, counted as one failure",
                      self._spec.id, node[:12], ", ".join(on_node))
            self._alert("critical", f"{self._spec.id}:node:{node}", f"node {node[:12]} lost",
                        f"{self._spec.id}: node {node[:12]} stopped answering; {', '.join(on_node)} restart on "
                        "the surviving nodes (one failure toward the restart intensity)")
        return f"node:{node}"

    # ------------------------------------------------------------------ helpers

    def _child(self, child_id: str) -> _Child:
        try:
            return self._by_id[child_id]
        except KeyError:
            raise UnknownChild(f"supervisor {self._spec.id} has no child {child_id!r}") from None

    def _pause_reason(self) -> str:
        return f"supervisor {self._spec.id}: held paused until its probes and release_after children are green"

    def _remaining(self, deadline: float) -> float:
        return max(deadline - self._clock.monotonic(), 0.001)

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self._spec.id}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if not isinstance(exc, SupervisorError):
                log.error("supervisor %s: task %s failed", self._spec.id, task.get_name(), exc_info=exc)

    def _start_op(self, child: _Child, kind: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        async def run() -> None:
            try:
                await coro
            finally:
                if child.op_task is asyncio.current_task():
                    child.op_task = None
                    child.op_kind = ""

        child.op_kind = kind
        child.op_task = self._spawn(run(), f"{kind}:{child.id}")
        return child.op_task

    async def _cancel_child_tasks(self, child: _Child) -> None:
        tasks = [t for t in (child.probe_task, child.op_task) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        child.probe_task = None
        child.op_task = None
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _cancel_tasks(self, keep: asyncio.Task[Any] | None = None) -> None:
        tasks = [t for t in self._tasks if t is not keep and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._monitor_task = None
        self._heartbeat_task = None
        if keep is not self._beat_task:
            self._beat_task = None
        for child in self._children:
            child.probe_task = None
            if child.op_task is not keep:
                child.op_task = None

    def _alert(self, severity: str, key: str, title: str, text: str) -> None:
        if self._alert_fn is None:
            return
        try:
            result = self._alert_fn(severity, key, title, text)
        except Exception as exc:  # alerting must never break supervision
            log.warning("supervisor %s: alert failed: %s", self._spec.id, exc)
            return
        if inspect.isawaitable(result):
            self._spawn(asyncio.wait_for(_awaited(result), timeout=_ALERT_TIMEOUT_SECS), "alert")


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


class _LazyHeartbeats:
    """A heartbeat source built on first use (the store connects inside the actor)."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._source: Any = None

    async def heartbeats(self) -> dict[str, int]:
        return await (await self._connected()).heartbeats()

    async def _connected(self) -> Any:
        if self._source is None:
            source = self._factory()
            self._source = await source if inspect.isawaitable(source) else source
        return self._source

    async def beat(self, key: str, ts_ms: int) -> None:
        """Write this supervisor's heartbeat (the store's ``heartbeat(component, ts_ms)``)."""
        await (await self._connected()).heartbeat(key, ts_ms)

    async def close(self) -> None:
        source, self._source = self._source, None
        close = getattr(source, "close", None)
        if close is not None:
            result = close()
            if inspect.isawaitable(result):
                await result


class SupervisorActor:
    """Thin Ray actor hosting one ``Supervisor``; it also follows the children contract.

    Create it detached and named after ``spec.id`` (``launch_supervisor`` does,
    and parents do for nested specs). Args:

        spec: the supervisor's spec.
        parent: the parent supervisor's actor name (None for the root). A nested
            supervisor asks its parent about release_after ids outside its subtree,
            and on escalation kills itself so the parent sees it die (OTP exit).
        alerter: actor name of the Alerter (``alert(severity, key, title, text)``
            is sent fire-and-forget), or None.
        store_factory: picklable zero-argument callable returning (or resolving to)
            an object with ``async heartbeats()``, e.g.
            ``functools.partial(RedisStore.connect, url, namespace)``.
        on_escalate: ``(reason)``, sync or async, run inside this actor when it
            escalates (the root: SAFE MODE).
        on_start_abandoned: ``(reason)``, run inside this actor when its ``start()``
            fails, before it stops the children already started (the root: pause the
            strategies, cancel our orders). Not handed to nested supervisors.
        namespace: Ray namespace of the children (None: this actor's).
        seed: seeds backoff and probe jitter.
    """

    def __init__(
        self,
        spec: SupervisorSpec,
        *,
        parent: str | None = None,
        alerter: str | None = None,
        store_factory: Callable[[], Any] | None = None,
        on_escalate: EscalateFn | None = None,
        on_start_abandoned: EscalateFn | None = None,
        namespace: str | None = None,
        seed: int | None = None,
        ancestor_nodes: tuple[str, ...] = (),
    ) -> None:
        from tradetree.supervisor.ray_backend import RayBackend

        self._backend = RayBackend(namespace)
        self._parent = parent
        self._alerter = alerter
        self._hook = on_escalate
        self._heartbeats = _LazyHeartbeats(store_factory) if store_factory is not None else None
        nested = {
            "parent": spec.id,
            "alerter": alerter,
            "store_factory": store_factory,
            "namespace": namespace,
            "seed": seed,
        }
        self._impl = Supervisor(
            spec,
            self._backend,
            store=self._heartbeats,
            alert=self._alert if alerter else None,
            on_escalate=self._escalated,
            on_start_abandoned=on_start_abandoned,
            release_upstream=self._ask_parent if parent else None,
            nested_kwargs=nested,
            seed=seed,
            ancestor_nodes=ancestor_nodes,
        )
        self._readopt_task: asyncio.Task[None] | None = None
        if parent is None and _reconstructed_by_ray():
            # Ray re-created the root (its node died; only the root has max_restarts=-1). Nobody
            # else will call start(): take the live children back (re-creating the missing ones)
            # at once, before the orphans' fail-closed gates have to hold for long.
            self._readopt_task = asyncio.get_running_loop().create_task(self._readopt())

    async def start(self, adopt: bool = False) -> None:
        """Start the children (``adopt=True``: keep the ones still alive). Raises StartFailed."""
        if adopt:
            await self._impl.adopt()
        else:
            await self._impl.start()

    async def adopt(self) -> dict[str, str]:
        return await self._impl.adopt()

    async def _readopt(self) -> None:
        log.error("supervisor %s: re-created by Ray; adopting the children still alive", self._impl.spec.id)
        try:
            outcome = await self._impl.adopt()
        except Exception:
            log.exception("supervisor %s: re-adoption failed", self._impl.spec.id)
            return
        text = ", ".join(f"{cid} {what}" for cid, what in outcome.items())
        log.warning("supervisor %s: re-adopted: %s", self._impl.spec.id, text)
        if self._alerter:
            await self._alert("critical", f"{self._impl.spec.id}:recreated", f"{self._impl.spec.id} re-created",
                              f"{self._impl.spec.id} died (node lost?) and was re-created by Ray: {text}")

    async def stop(self) -> None:
        if self._readopt_task is not None and not self._readopt_task.done():
            self._readopt_task.cancel()
        await self._impl.stop()
        if self._heartbeats is not None:
            await self._heartbeats.close()

    async def check_health(self) -> HealthReport:
        return await self._impl.check_health()

    async def status(self) -> dict[str, Any]:
        return self._impl.status()

    async def restart_child(self, child_id: str) -> None:
        await self._impl.restart_child(child_id)

    async def child_healthy(self, child_id: str) -> bool:
        return await self._impl.child_healthy(child_id)

    async def _alert(self, severity: str, key: str, title: str, text: str) -> None:
        assert self._alerter is not None
        handle = await self._backend.get_existing(self._alerter)
        if handle is None:
            # The fallback path: the alerter's own death is an alert too, and it cannot carry it.
            log.error("ALERT (alerter %r down, logged only) [%s] %s: %s — %s", self._alerter, severity, key, title,
                      text)
            return
        self._backend.tell(handle, "alert", severity, key, title, text)

    async def _ask_parent(self, child_id: str) -> bool:
        assert self._parent is not None
        handle = await self._backend.get_existing(self._parent)
        if handle is None:
            return False
        return (await self._backend.call(handle, "child_healthy", child_id, timeout_secs=5.0)) is True

    async def _escalated(self, reason: str) -> None:
        try:
            if self._hook is not None:
                result = self._hook(reason)
                if inspect.isawaitable(result):
                    await result
        finally:
            if self._parent is not None:
                # OTP: an escalating supervisor exits; its parent sees it die and applies its own policy.
                log.error("supervisor %s: exiting so that %s handles the escalation", self._impl.spec.id, self._parent)
                self._backend.kill_current_actor()


def _reconstructed_by_ray() -> bool:
    try:
        import ray

        return bool(ray.get_runtime_context().was_current_actor_reconstructed)
    except Exception:  # not inside a Ray actor (tests host it in-process)
        return False


async def launch_supervisor(
    spec: SupervisorSpec,
    *,
    backend: ActorBackend | None = None,
    adopt: bool = False,
    start_timeout_secs: float | None = None,
    **actor_kwargs: Any,
) -> Any:
    """Create a root ``SupervisorActor`` named ``spec.id`` and start it.

    With ``adopt=True`` a live supervisor of that name is reused and asked to
    ``adopt()``; otherwise a name clash raises ``ActorNameTaken``.
    ``actor_kwargs`` go to ``SupervisorActor`` (alerter, store_factory,
    on_escalate, namespace, seed). Returns the actor handle.

    Raises:
        ActorNameTaken: a live actor has the name and ``adopt`` is False.
        StartFailed (from the actor): a child did not start; children were unwound.
        BackendError: the actor could not be created or did not answer in time.
    """
    from tradetree.supervisor.ray_backend import RayBackend

    backend = backend or RayBackend(actor_kwargs.get("namespace"))
    timeout = start_timeout_secs or spec.startup_timeout_secs
    if adopt:
        existing = await backend.get_existing(spec.id)
        if existing is not None:
            status = await backend.call(existing, "status", timeout_secs=timeout)
            if status["state"] not in ("running", "starting"):
                await backend.call(existing, "adopt", timeout_secs=timeout)
            return existing
    # The root alone is re-created by Ray when it dies (its node lost): no supervisor above it can.
    options: dict[str, Any] = {"resources": dict(spec.placement.resources)} if spec.placement.resources else {}
    handle = backend.create(spec.id, SUPERVISOR_ACTOR_CLASS, (spec,), actor_kwargs, num_cpus=spec.num_cpus,
                            max_restarts=-1, **options)
    await backend.call(handle, "start", adopt=adopt, timeout_secs=timeout)
    return handle
