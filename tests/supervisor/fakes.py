"""A fake ActorBackend, fake children and a virtual-time sleeper for Supervisor tests.

The fake behaves like Ray where the supervisor can tell: a killed actor
answers every call (even one in flight) with ActorDied, a name is taken while
its actor lives, calls time out in real time (tests use tiny timeouts).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tradetree.core.clock import ManualClock
from tradetree.core.types import HealthReport, ProbeResult
from tradetree.supervisor.ray_backend import (
    ActorClassNotFound,
    ActorDied,
    ActorNameTaken,
    BackendError,
    CallFailed,
    CallTimeout,
)
from tradetree.supervisor.spec import SUPERVISOR_ACTOR_CLASS, SupervisorSpec
from tradetree.supervisor.supervisor import Supervisor

CHILD_CLASS = "tests.supervisor.fakes:FakeChild"


class VirtualSleep:
    """``sleep(d)`` advances the ManualClock by ``d`` and yields once: time only
    moves when something waits, so backoffs and timeouts are deterministic."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        self.clock.advance(max(seconds, 0.0))
        await asyncio.sleep(0)


@dataclass
class Behaviour:
    """How every incarnation of one named child behaves; tests flip these."""

    healthy: bool = True
    healthy_after_probes: int = 0  # each new incarnation fails this many probes first
    start_error: str | None = None
    start_hang: bool = False
    probe_hang: bool = False
    resume_error: str | None = None
    resume_secs: float = 0.0  # real seconds a resume takes (calls time out in real time)
    ready: bool = True  # the readiness probe (liveness=False): gates releases, never restarts
    store_down: bool = False  # Redis unreachable: a failing "store" probe (and fills_flowing with it)


@dataclass(eq=False)
class FakeHandle:
    name: str
    actor_id: int
    obj: Any
    alive: bool = True
    intended_exit: bool = False
    dead: asyncio.Event = field(default_factory=asyncio.Event)


class FakeChild:
    """Implements the children contract; records what was called, in order."""

    def __init__(self, name: str, backend: FakeBackend) -> None:
        self.name = name
        self.backend = backend
        self.behaviour = backend.behaviour(name)
        self.events: list[str] = []
        self.paused = False
        self.probes = 0

    async def start(self) -> None:
        self.events.append("start")
        if self.behaviour.start_hang:
            await asyncio.Event().wait()
        if self.behaviour.start_error:
            raise RuntimeError(self.behaviour.start_error)

    async def stop(self) -> None:
        self.events.append("stop")

    async def pause(self, reason: str) -> None:
        self.events.append("pause")
        self.paused = True

    async def resume(self) -> None:
        if self.behaviour.resume_secs:
            await asyncio.sleep(self.behaviour.resume_secs)
        if self.behaviour.resume_error:
            raise RuntimeError(self.behaviour.resume_error)
        self.events.append("resume")
        self.paused = False

    async def check_health(self) -> HealthReport:
        if self.behaviour.probe_hang:
            await asyncio.Event().wait()
        self.probes += 1
        ok = self.behaviour.healthy and self.probes > self.behaviour.healthy_after_probes
        ok = ok and not self.behaviour.store_down
        self.events.append(f"probe:{'ok' if ok else 'fail'}")
        store = (ProbeResult(name="store", ok=False, detail="Redis unreachable"),) if self.behaviour.store_down else ()
        return HealthReport(
            component=self.name,
            ts_ms=0,
            probes=(
                *store,
                ProbeResult(name="fills_flowing", ok=ok, detail="" if ok else "no fills for 30s"),
                ProbeResult(name="venue_ready", ok=self.behaviour.ready, liveness=False,
                            detail="" if self.behaviour.ready else "venue REST failing"),
            ),
        )


class FakeSupervisorActor:
    """What SupervisorActor does, over the fake backend (for nested-supervisor tests)."""

    def __init__(
        self,
        spec: SupervisorSpec,
        backend: FakeBackend,
        *,
        parent: str | None = None,
        **_: Any,
    ) -> None:
        self.name = spec.id
        self.backend = backend
        self.parent = parent
        self.impl = Supervisor(
            spec,
            backend,
            release_upstream=self._ask_parent if parent else None,
            nested_kwargs={"parent": spec.id},
            on_escalate=self._escalated,
            clock=backend.clock,
            sleep=backend.sleep,
            seed=1,
            run_monitor=False,
        )
        backend.supervisors[spec.id] = self.impl

    async def start(self, adopt: bool = False) -> None:
        await (self.impl.adopt() if adopt else self.impl.start())

    async def stop(self) -> None:
        await self.impl.stop()

    async def check_health(self) -> HealthReport:
        return await self.impl.check_health()

    async def child_healthy(self, child_id: str) -> bool:
        return await self.impl.child_healthy(child_id)

    async def _ask_parent(self, child_id: str) -> bool:
        handle = await self.backend.get_existing(self.parent)
        return await self.backend.call(handle, "child_healthy", child_id, timeout_secs=1.0)

    async def _escalated(self, reason: str) -> None:
        self.backend.crash(self.name)


class FakeBackend:
    """An in-process ActorBackend. ``log`` records (op, name, detail) in order."""

    def __init__(self, clock: ManualClock, sleep: VirtualSleep) -> None:
        self.clock = clock
        self.sleep = sleep
        self.log: list[tuple[str, str, str]] = []
        self.handles: list[FakeHandle] = []
        self.behaviours: dict[str, Behaviour] = {}
        self.fail_create: set[str] = set()
        self.supervisors: dict[str, Supervisor] = {}
        self._ids = itertools.count(1)
        self.classes: dict[str, Callable[..., Any]] = {
            CHILD_CLASS: lambda name, *a, **kw: FakeChild(name, self),
            SUPERVISOR_ACTOR_CLASS: lambda name, spec, **kw: FakeSupervisorActor(spec, self, **kw),
        }

    # -- test helpers
    def behaviour(self, name: str) -> Behaviour:
        return self.behaviours.setdefault(name, Behaviour())

    def live(self, name: str) -> FakeHandle | None:
        for h in self.handles:
            if h.name == name and h.alive:
                return h
        return None

    def child(self, name: str) -> FakeChild:
        handle = self.live(name)
        assert handle is not None, f"no live actor {name}"
        return handle.obj

    def incarnations(self, name: str) -> list[FakeHandle]:
        return [h for h in self.handles if h.name == name]

    def crash(self, name: str, *, intended: bool = False) -> None:
        """The actor dies on its own (like ray.kill from outside, or exit_actor())."""
        handle = self.live(name)
        assert handle is not None
        handle.intended_exit = intended
        self._die(handle)
        self.log.append(("crash", name, ""))

    def ops(self, op: str | None = None, name: str | None = None) -> list[tuple[str, str, str]]:
        return [e for e in self.log if (op is None or e[0] == op) and (name is None or e[1] == name)]

    def _die(self, handle: FakeHandle) -> None:
        handle.alive = False
        handle.dead.set()

    def register(self, name: str, obj: Any) -> FakeHandle:
        """Make ``obj`` reachable as a live actor (e.g. a root Supervisor its children ask)."""
        handle = FakeHandle(name=name, actor_id=next(self._ids), obj=obj)
        self.handles.append(handle)
        return handle

    # -- ActorBackend
    def create(self, name: str, actor_class: str, args: tuple, kwargs: dict, *, num_cpus: float,
               **options: Any) -> FakeHandle:
        if actor_class not in self.classes:
            raise ActorClassNotFound(actor_class)
        if self.live(name) is not None:
            raise ActorNameTaken(name)
        if name in self.fail_create:
            raise BackendError(f"cannot create {name}")
        handle = FakeHandle(name=name, actor_id=next(self._ids), obj=self.classes[actor_class](name, *args, **kwargs))
        self.handles.append(handle)
        self.log.append(("create", name, str(handle.actor_id)))
        return handle

    async def get_existing(self, name: str) -> FakeHandle | None:
        return self.live(name)

    async def call(self, handle: FakeHandle, method: str, *args: Any, timeout_secs: float, **kwargs: Any) -> Any:
        self.log.append(("call", handle.name, method))
        if not handle.alive:
            raise ActorDied(f"{handle.name} is dead", intended=handle.intended_exit)
        work = asyncio.ensure_future(getattr(handle.obj, method)(*args, **kwargs))
        death = asyncio.ensure_future(handle.dead.wait())
        try:
            done, _ = await asyncio.wait({work, death}, timeout=timeout_secs, return_when=asyncio.FIRST_COMPLETED)
        finally:
            death.cancel()
        if work in done:
            exc = work.exception()
            if exc is not None:
                raise CallFailed(f"{method}() raised {type(exc).__name__}: {exc}")
            return work.result()
        work.cancel()
        if death in done or not handle.alive:
            raise ActorDied(f"{handle.name} died during {method}()", intended=handle.intended_exit)
        raise CallTimeout(f"{method}() did not answer within {timeout_secs}s")

    def tell(self, handle: FakeHandle, method: str, *args: Any, **kwargs: Any) -> None:
        self.log.append(("tell", handle.name, method))

    async def kill(self, handle: FakeHandle) -> None:
        self.log.append(("kill", handle.name, str(handle.actor_id)))
        self._die(handle)

    async def is_dead(self, handle: FakeHandle) -> bool:
        return not handle.alive

    def kill_current_actor(self) -> None:
        raise AssertionError("fake supervisors exit through crash()")


class FakeHeartbeats:
    """A HeartbeatSource whose answers the test sets (a callable gives live values)."""

    def __init__(self) -> None:
        self.beats: dict[str, int | Callable[[], int]] = {}
        self.error: Exception | None = None

    async def heartbeats(self) -> dict[str, int]:
        if self.error is not None:
            raise self.error
        return {k: (v() if callable(v) else v) for k, v in self.beats.items()}


class FakeClusterBackend(FakeBackend):
    """A FakeBackend whose actors live on named nodes, as on a Ray cluster.

    ``lose_node`` kills every actor on a node and makes it unreachable while
    Ray still lists it alive: what a real node loss looks like for the first
    seconds (until Ray's health checks run out).
    """

    def __init__(self, clock: ManualClock, sleep: VirtualSleep, nodes: list[str], *, own_node: str | None = None) -> None:
        super().__init__(clock, sleep)
        from tradetree.supervisor.placement import NodeView

        self.node_views = {n: NodeView(node_id=n, resources={"CPU": 1.0}) for n in nodes}
        self.unreachable: set[str] = set()
        self.own_node = own_node
        self.node_by_actor: dict[int, str] = {}
        self.placements: list[tuple[str, str | None]] = []

    def create(self, name: str, actor_class: str, args: tuple, kwargs: dict, *, num_cpus: float,
               **options: Any) -> FakeHandle:
        node = options.get("node_id")
        self.placements.append((name, node))
        if node is not None and node in self.unreachable:
            raise BackendError(f"node {node} is gone")
        handle = super().create(name, actor_class, args, kwargs, num_cpus=num_cpus)
        self.node_by_actor[handle.actor_id] = node or next(iter(self.node_views))
        return handle

    def lose_node(self, node: str) -> list[str]:
        self.unreachable.add(node)
        lost = [h for h in self.handles if h.alive and self.node_by_actor.get(h.actor_id) == node]
        for h in lost:
            self._die(h)
        return [h.name for h in lost]

    async def nodes(self) -> list:
        return list(self.node_views.values())

    async def node_of(self, handle: FakeHandle) -> str | None:
        return self.node_by_actor.get(handle.actor_id)

    async def node_reachable(self, node_id: str) -> bool:
        return node_id not in self.unreachable

    def current_node(self) -> str | None:
        return self.own_node
