"""Every Ray call the supervisor makes, behind one small wrapper.

The supervisor's decision logic talks to an ``ActorBackend``; ``RayBackend``
is the real one, and tests use a fake with the same methods. Ray's exceptions
are translated into the ``BackendError`` family of ``core.errors`` by
``supervisor.actor_client``, the one translation table for Ray.

Children are created detached, named, with ``max_restarts=0`` (the supervisor
owns the restart policy; a dead detached actor frees its name).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from typing import Any, Protocol

from tradetree.core import (
    ActorClassNotFound,
    ActorDied,
    ActorNameTaken,
    BackendError,
    CallFailed,
    CallTimeout,
)
from tradetree.supervisor.actor_client import call_handle, tell_handle
from tradetree.supervisor.placement import NodeView

__all__ = [
    "ActorBackend",
    "RayBackend",
    "BackendError",
    "ActorClassNotFound",
    "ActorNameTaken",
    "ActorDied",
    "CallTimeout",
    "CallFailed",
    "import_actor_class",
]

log = logging.getLogger(__name__)

# A node's raylet that does not accept a TCP connection within this is unreachable.
_NODE_CHECK_SECS = 1.0


class ActorBackend(Protocol):
    """What the supervisor needs from an actor runtime. Handles are opaque."""

    def create(
        self, name: str, actor_class: str, args: tuple[Any, ...], kwargs: dict[str, Any], *, num_cpus: float,
        node_id: str | None = None, resources: dict[str, float] | None = None, max_restarts: int = 0,
    ) -> Any:
        """Create a named, detached actor; returns its handle.

        ``node_id`` pins it to that node (hard: a dead node fails the start, it never falls back to
        a node the supervisor avoided). ``max_restarts`` stays 0 for children (the supervisor owns
        their restarts); the root alone asks Ray to re-create it (-1), since nothing else can.

        Synchronous on purpose: a caller cancelled mid-way never loses a created handle.

        Raises:
            ActorClassNotFound: the class does not import.
            ActorNameTaken: a live actor has the name.
            BackendError: anything else went wrong creating it.
        """
        ...

    async def get_existing(self, name: str) -> Any | None:
        """The live actor with that name, or None."""
        ...

    async def call(self, handle: Any, method: str, *args: Any, timeout_secs: float, **kwargs: Any) -> Any:
        """Call ``method`` and wait at most ``timeout_secs`` for its result.

        Raises:
            ActorDied, CallTimeout, CallFailed: as their names say.
        """
        ...

    def tell(self, handle: Any, method: str, *args: Any, **kwargs: Any) -> None:
        """Fire and forget: submit the call, never wait, never raise."""
        ...

    async def kill(self, handle: Any) -> None:
        """Kill the actor (no restart) and wait briefly until Ray sees it dead. Never raises."""
        ...

    async def is_dead(self, handle: Any) -> bool:
        """True if Ray reports the actor dead."""
        ...

    def kill_current_actor(self) -> None:
        """Kill the actor this code runs in (a supervisor exiting after escalation)."""
        ...

    async def nodes(self) -> list[NodeView]:
        """The cluster's nodes as placement sees them (empty: unknown)."""
        ...

    async def node_of(self, handle: Any) -> str | None:
        """The node id the actor runs on, or None if unknown."""
        ...

    async def node_reachable(self, node_id: str) -> bool:
        """Does the node answer now? Checked by the supervisor itself: Ray keeps a node listed
        alive for seconds after it stopped answering."""
        ...

    def current_node(self) -> str | None:
        """The node this code runs on."""
        ...


def import_actor_class(path: str) -> Any:
    """Resolve ``"package.module:Attr"`` (Attr may be dotted).

    Raises:
        ActorClassNotFound: bad format, module or attribute missing.
    """
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ActorClassNotFound(f"actor class {path!r}: expected 'package.module:Attr'")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ActorClassNotFound(f"actor class {path!r} does not import: {exc}") from None
    return obj


class RayBackend:
    """``ActorBackend`` over Ray. ``namespace=None`` means the caller's namespace."""

    def __init__(self, namespace: str | None = None, *, kill_wait_secs: float = 5.0) -> None:
        self._namespace = namespace
        self._kill_wait_secs = kill_wait_secs

    def _ns(self) -> str:
        import ray

        return self._namespace or ray.get_runtime_context().namespace

    def create(
        self, name: str, actor_class: str, args: tuple[Any, ...], kwargs: dict[str, Any], *, num_cpus: float,
        node_id: str | None = None, resources: dict[str, float] | None = None, max_restarts: int = 0,
    ) -> Any:
        import ray
        from ray.actor import ActorClass
        from ray.exceptions import ActorAlreadyExistsError

        cls = import_actor_class(actor_class)
        if not isinstance(cls, ActorClass):
            if not isinstance(cls, type):
                raise ActorClassNotFound(f"actor class {actor_class!r} is not a class")
            cls = ray.remote(cls)
        options: dict[str, Any] = {}
        if node_id is not None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id, soft=False)
        if resources:
            options["resources"] = dict(resources)
        try:
            return cls.options(
                name=name,
                namespace=self._ns(),
                lifetime="detached",
                max_restarts=max_restarts,
                num_cpus=num_cpus,
                **options,
            ).remote(*args, **kwargs)
        except ActorAlreadyExistsError:
            raise ActorNameTaken(f"actor name {name!r} is taken in namespace {self._ns()!r}") from None
        except Exception as exc:  # Ray raises assorted types for bad options or GCS trouble
            raise BackendError(f"cannot create actor {name!r}: {type(exc).__name__}: {exc}") from None

    async def get_existing(self, name: str) -> Any | None:
        import ray

        try:
            handle = await asyncio.to_thread(ray.get_actor, name, self._ns())
        except ValueError:
            return None
        if await self.is_dead(handle):
            return None
        return handle

    async def call(self, handle: Any, method: str, *args: Any, timeout_secs: float, **kwargs: Any) -> Any:
        # Unlike ActorClient, a project error the child raised is a CallFailed here too: the
        # supervisor judges the child, not the child's domain errors.
        return await call_handle(handle, method, args, kwargs, what=f"{method}()", timeout_secs=timeout_secs,
                                 pass_method_errors=False)

    def tell(self, handle: Any, method: str, *args: Any, **kwargs: Any) -> None:
        tell_handle(handle, method, args, kwargs, what=f"{method}()")

    async def kill(self, handle: Any) -> None:
        import ray

        try:
            ray.kill(handle, no_restart=True)
        except Exception as exc:  # already gone, or GCS trouble: the dead-wait below decides
            log.debug("ray.kill: %s", exc)
        deadline = time.monotonic() + self._kill_wait_secs
        while time.monotonic() < deadline:
            if await self.is_dead(handle):
                return
            await asyncio.sleep(0.02)
        log.warning("actor %s not reported dead %.1fs after ray.kill", _actor_id(handle), self._kill_wait_secs)

    async def is_dead(self, handle: Any) -> bool:
        state = await asyncio.to_thread(_gcs_actor_state, handle)
        if state is not None:
            return state == "DEAD"
        # GCS table unavailable: fall back to Ray's readiness call.
        try:
            await self.call(handle, "__ray_ready__", timeout_secs=1.0)
        except ActorDied:
            return True
        except BackendError:
            return False
        return False

    def kill_current_actor(self) -> None:
        import ray

        ray.kill(ray.get_runtime_context().current_actor, no_restart=True)

    async def nodes(self) -> list[NodeView]:
        import ray

        try:
            raw = await asyncio.to_thread(ray.nodes)
        except Exception as exc:  # GCS trouble: unknown, so placement falls back to Ray's own
            log.warning("ray.nodes(): %s", exc)
            return []
        self._node_addresses = {n["NodeID"]: (n.get("NodeManagerAddress", ""), int(n.get("NodeManagerPort") or 0))
                                for n in raw}
        return [NodeView(node_id=n["NodeID"], alive=bool(n.get("Alive")), labels=dict(n.get("Labels") or {}),
                         resources={k: float(v) for k, v in (n.get("Resources") or {}).items()})
                for n in raw]

    async def node_of(self, handle: Any) -> str | None:
        info = await asyncio.to_thread(_gcs_actor_info, handle)
        node = ((info or {}).get("Address") or {}).get("NodeID")
        return str(node) if node else None

    async def node_reachable(self, node_id: str) -> bool:
        addresses = getattr(self, "_node_addresses", {})
        if node_id not in addresses:
            await self.nodes()
            addresses = getattr(self, "_node_addresses", {})
        if node_id not in addresses:
            return False
        host, port = addresses[node_id]
        if not host or not port:
            return True  # nothing to check against: no verdict
        try:
            _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=_NODE_CHECK_SECS)
        except (TimeoutError, OSError):
            return False
        writer.close()
        return True

    def current_node(self) -> str | None:
        import ray

        try:
            return str(ray.get_runtime_context().get_node_id())
        except Exception:  # outside a Ray worker
            return None


def _gcs_actor_info(handle: Any) -> dict[str, Any] | None:
    try:
        from ray._private import state as ray_state

        info = ray_state.actors(actor_id=handle._actor_id.hex())
    except Exception:  # private API: any failure means "unknown", never a verdict
        return None
    return info or None


def _gcs_actor_state(handle: Any) -> str | None:
    """The actor's state in the GCS actor table ("ALIVE", "DEAD", ...), or None if unknown."""
    info = _gcs_actor_info(handle)
    return info.get("State") if info else None


def _actor_id(handle: Any) -> str:
    try:
        return handle._actor_id.hex()
    except AttributeError:
        return "?"
