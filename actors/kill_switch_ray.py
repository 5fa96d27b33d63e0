"""The kill switch's Ray port to the gateways, found by name (strategy actors are paused
through ``actors.risk_monitor.RayStrategyPauser``).

Every call goes through the shared ``supervisor.actor_client.ActorClient``
(lookup by name, a timeout on every call, Ray errors translated), so the
executor (``actors.kill_switch``) stays testable without Ray. The ports keep
the executor's contract: what an actor raised comes back as it is; a missing,
dead, hung or unreachable actor (the client's ``BackendError``) comes back as
``VenueUnavailable``, which the kill switch retries.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from tradetree.core import ActorNotFound, BackendError, Order, OrderDenied, OrderIntent, VenueUnavailable, gateway_id
from tradetree.supervisor import ActorClient

__all__ = ["RayVenuePort", "PORT_CALL_TIMEOUT_SECS"]

# The executor bounds each step by its own call_timeout_secs (15 s by default); the client's
# timeout is only the backstop that keeps a call through a port from ever waiting forever,
# so it must not be the shorter of the two.
PORT_CALL_TIMEOUT_SECS = 300.0


async def _call(client: ActorClient, name: str, method: str, *args: Any, venue: str = "") -> Any:
    try:
        return await client.call(name, method, *args)
    except ActorNotFound as exc:  # not started yet, or being restarted by its supervisor
        raise VenueUnavailable(f"actor {name} not found: {exc}", venue=venue) from None
    except BackendError as exc:  # died, hung, or the call could not be delivered
        raise VenueUnavailable(f"{name}.{method}: {type(exc).__name__}: {exc}", venue=venue) from None


class RayVenuePort:
    """``VenuePort`` over the ``VenueGateway[<venue>]`` Ray actors.

    ``gateways`` maps venue -> actor name, or lists venues whose actors follow
    ``gateway_id``. ``client`` defaults to an ``ActorClient`` of
    ``ray_namespace`` with ``timeout_secs``. Errors the gateway raises come
    back as they are; a missing, dead, hung or unreachable actor raises
    ``VenueUnavailable``.
    """

    def __init__(self, gateways: Mapping[str, str] | Iterable[str], *, ray_namespace: str | None = None,
                 timeout_secs: float = PORT_CALL_TIMEOUT_SECS, client: ActorClient | None = None) -> None:
        if isinstance(gateways, Mapping):
            self._names = dict(gateways)
        else:
            self._names = {v: gateway_id(v) for v in gateways}
        self._client = client or ActorClient(ray_namespace, timeout_secs=timeout_secs)

    def venues(self) -> Sequence[str]:
        return tuple(sorted(self._names))

    def _name(self, venue: str) -> str:
        return self._names.get(venue) or gateway_id(venue)

    async def cancel_all(self, venue: str, strategy_id: str | None = None) -> int:
        return await _call(self._client, self._name(venue), "cancel_all", strategy_id, venue=venue)

    async def submit_order(self, intent: OrderIntent) -> Order | OrderDenied:
        # Account-level: the clips are sized against the account's net, so the venue gets reduceOnly as planned.
        return await _call(self._client, self._name(intent.venue), "submit_account_order", intent,
                           venue=intent.venue)

    async def venue_positions(self, venue: str) -> dict[str, Decimal]:
        # The gateway asks the venue (REST), not Redis: the global kill's last check is against the venue.
        raw = await _call(self._client, self._name(venue), "venue_positions", venue=venue)
        return {str(inst): Decimal(str(qty)) for inst, qty in dict(raw).items()}
