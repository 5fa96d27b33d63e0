"""The kill switch's Ray ports: the gateways and the strategy actors, found by name.

Every Ray call of the executor goes through ``_RayActors``, one small class,
so the executor (``actors.kill_switch``) stays testable without Ray and the
calls can move to a shared named-actor client without touching it. Errors come
back as ``core.errors``: what an actor raised, as it is; a missing, dead or
unreachable actor as ``VenueUnavailable`` (retried by the kill switch).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tradetree.core.errors import TradetreeError, VenueUnavailable
from tradetree.core.names import gateway_id
from tradetree.core.types import Order, OrderDenied, OrderIntent

__all__ = ["RayStrategyPort", "RayVenuePort"]


class _RayActors:
    """Named-actor handles, re-resolved after an actor dies or is restarted."""

    def __init__(self, ray_namespace: str | None) -> None:
        self._ray_namespace = ray_namespace
        self._handles: dict[str, Any] = {}

    async def call(self, name: str, method: str, *args: Any, venue: str = "") -> Any:
        import ray  # imported on first call: the module stays importable where Ray is not

        try:
            handle = self._handles.get(name)
            if handle is None:
                handle = self._handles[name] = ray.get_actor(name, namespace=self._ray_namespace)
            return await getattr(handle, method).remote(*args)
        except ValueError as exc:  # no actor by that name (yet): being restarted
            self._handles.pop(name, None)
            raise VenueUnavailable(f"actor {name} not found: {exc}", venue=venue) from None
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, TradetreeError):
                raise cause from None
            raise VenueUnavailable(f"{name}.{method} failed: {cause or exc}", venue=venue) from None
        except ray.exceptions.RayError as exc:  # the actor died, or Ray could not reach it
            self._handles.pop(name, None)
            raise VenueUnavailable(f"{name}.{method}: {type(exc).__name__}: {exc}", venue=venue) from None


class RayVenuePort:
    """``VenuePort`` over the ``VenueGateway[<venue>]`` Ray actors.

    ``gateways`` maps venue -> actor name, or lists venues whose actors follow
    ``gateway_id``. Errors the gateway raises come back as they are;
    a missing, dead or unreachable actor raises ``VenueUnavailable``.
    """

    def __init__(self, gateways: Mapping[str, str] | Iterable[str], *, ray_namespace: str | None = None) -> None:
        if isinstance(gateways, Mapping):
            self._names = dict(gateways)
        else:
            self._names = {v: gateway_id(v) for v in gateways}
        self._actors = _RayActors(ray_namespace)

    def venues(self) -> Sequence[str]:
        return tuple(sorted(self._names))

    def _name(self, venue: str) -> str:
        return self._names.get(venue) or gateway_id(venue)

    async def cancel_all(self, venue: str, strategy_id: str | None = None) -> int:
        return await self._actors.call(self._name(venue), "cancel_all", strategy_id, venue=venue)

    async def submit_order(self, intent: OrderIntent) -> Order | OrderDenied:
        # Account-level: the clips are sized against the account's net, so the venue gets reduceOnly as planned.
        return await self._actors.call(self._name(intent.venue), "submit_account_order", intent, venue=intent.venue)


class RayStrategyPort:
    """``StrategyControlPort`` over the strategy actors (named by strategy id)."""

    def __init__(self, *, ray_namespace: str | None = None) -> None:
        self._actors = _RayActors(ray_namespace)

    async def pause(self, strategy_id: str, reason: str) -> bool:
        """Raises ``VenueUnavailable`` when the actor is missing, dead or unreachable."""
        await self._actors.call(strategy_id, "pause", reason)
        return True


