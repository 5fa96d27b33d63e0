"""Fan-out of the gateway's market data and order events to subscribers, without ever blocking.

A subscriber is a named Ray actor (``RayActorTarget``) or, in plain tests and
the backtester, a local object (``LocalTarget``), with the methods
``on_ticker(ticker)``, ``on_order_update(order)`` and ``on_fill(fill)``.

Delivery is fire-and-forget: the caller (the gateway's WS loop) never waits
for a subscriber. A slow subscriber has at most ``max_in_flight`` deliveries
outstanding; beyond that, tickers to it are dropped (and counted) because the
next ticker supersedes them. Order updates and fills are never dropped for
backlog: they are rare, and the store in Redis stays the truth either way. A
dead or missing actor is re-resolved by name, at most once per
``resolve_retry_secs`` (a lookup by name is a short blocking GCS call, so
it is rate-limited rather than attempted on every ticker).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from tradetree.core import BackendError, Clock, Fill, Order, Ticker, WallClock
from tradetree.supervisor import ActorClient

__all__ = ["SubscriberTarget", "RayActorTarget", "LocalTarget", "FanOut"]

log = logging.getLogger(__name__)


class SubscriberTarget(Protocol):
    name: str
    in_flight: int
    dropped: int
    failures: int

    def deliver(self, method: str, payload: Any, *, droppable: bool) -> None:
        """Start delivering ``payload`` to ``method``; return at once, never raise."""
        ...

    async def close(self) -> None: ...


class _TargetBase:
    def __init__(self, name: str, max_in_flight: int) -> None:
        self.name = name
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.dropped = 0
        self.failures = 0
        self.delivered = 0
        self._tasks: set[asyncio.Task[Any]] = set()

    def _admit(self, droppable: bool) -> bool:
        if droppable and self.in_flight >= self.max_in_flight:
            self.dropped += 1
            return False
        return True

    def _track(self, awaitable: Any, method: str) -> None:
        self.in_flight += 1
        task = asyncio.ensure_future(awaitable)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(t, method))

    def _done(self, task: asyncio.Task[Any], method: str) -> None:
        self._tasks.discard(task)
        self.in_flight -= 1
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            self.delivered += 1
            return
        self.failures += 1
        self._on_failure(exc)
        log.warning("subscriber %s: %s failed: %s", self.name, method, exc)

    def _on_failure(self, exc: BaseException) -> None:
        pass

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


class LocalTarget(_TargetBase):
    """An in-process subscriber object; coroutine methods run as background tasks."""

    def __init__(self, obj: Any, *, max_in_flight: int = 100) -> None:
        super().__init__(f"local:{type(obj).__name__}@{id(obj):x}", max_in_flight)
        self.obj = obj

    def deliver(self, method: str, payload: Any, *, droppable: bool) -> None:
        handler = getattr(self.obj, method, None)
        if handler is None:
            return
        if not self._admit(droppable):
            return
        try:
            result = handler(payload)
        except Exception as exc:
            self.failures += 1
            log.warning("subscriber %s: %s failed: %s", self.name, method, exc)
            return
        if inspect.isawaitable(result):
            self._track(result, method)
        else:
            self.delivered += 1


# Long on purpose: it only frees the in-flight slots of a hung subscriber. A strategy's
# on_ticker may itself wait on an order submission (ORDER_CALL_TIMEOUT_SECS, 35 s), and that is not a failure.
DELIVERY_TIMEOUT_SECS = 120.0


class RayActorTarget(_TargetBase):
    """A named Ray actor, looked up lazily and again after any failed delivery.

    Deliveries go through ``ActorClient``, so each has a timeout
    (``call_timeout_secs``): a hung subscriber frees its in-flight slots
    instead of holding them forever.
    """

    def __init__(
        self,
        actor_name: str,
        *,
        namespace: str | None = None,
        clock: Clock | None = None,
        max_in_flight: int = 100,
        resolve_retry_secs: float = 1.0,
        client: ActorClient | None = None,
        call_timeout_secs: float = DELIVERY_TIMEOUT_SECS,
    ) -> None:
        super().__init__(actor_name, max_in_flight)
        self.namespace = namespace
        self._clock = clock or WallClock()
        self._resolve_retry_secs = resolve_retry_secs
        self._client = client or ActorClient(namespace, timeout_secs=call_timeout_secs)
        self._resolved = False
        self._next_resolve = 0.0

    def _resolve(self) -> bool:
        if self._resolved:
            return True
        now = self._clock.monotonic()
        if now < self._next_resolve:
            return False
        try:
            self._client.handle(self.name)
        except BackendError as exc:  # ActorNotFound when no such actor (yet / any more)
            self._next_resolve = now + self._resolve_retry_secs
            self.failures += 1
            log.warning("subscriber %s: cannot resolve actor: %s", self.name, exc)
            return False
        self._resolved = True
        return True

    def deliver(self, method: str, payload: Any, *, droppable: bool) -> None:
        if not self._admit(droppable):
            return
        if not self._resolve():
            self.dropped += 1
            return
        # The handle is cached, so the call is submitted when its task first runs, without
        # awaiting anything: tasks start in creation order, so deliveries keep their order.
        self._track(self._client.call(self.name, method, payload), method)

    def _on_failure(self, exc: BaseException) -> None:
        # The actor may have died and been re-created under the same name.
        self._resolved = False
        self._client.forget(self.name)


@dataclass
class _Subscription:
    target: Any
    inst_ids: set[str] = field(default_factory=set)
    strategy_id: str | None = None


class FanOut:
    """Who wants what: tickers by instrument, order events by strategy id."""

    def __init__(self) -> None:
        self._subs: dict[str, _Subscription] = {}

    def add(self, target: Any, inst_ids: list[str], strategy_id: str | None) -> None:
        """Register (or extend) ``target``'s subscription; a target is identified by its name."""
        sub = self._subs.get(target.name)
        if sub is None:
            sub = self._subs[target.name] = _Subscription(target=target)
        sub.inst_ids.update(inst_ids)
        if strategy_id is not None:
            sub.strategy_id = strategy_id

    @property
    def inst_ids(self) -> set[str]:
        return set().union(*(s.inst_ids for s in self._subs.values())) if self._subs else set()

    def ticker(self, ticker: Ticker) -> None:
        for sub in self._subs.values():
            if ticker.inst_id in sub.inst_ids:
                sub.target.deliver("on_ticker", ticker, droppable=True)

    def order_update(self, order: Order) -> None:
        self._to_strategy(order.strategy_id, "on_order_update", order)

    def fill(self, fill: Fill, strategy_id: str) -> None:
        self._to_strategy(strategy_id, "on_fill", fill)

    def _to_strategy(self, strategy_id: str, method: str, payload: Any) -> None:
        for sub in self._subs.values():
            if sub.strategy_id == strategy_id:
                sub.target.deliver(method, payload, droppable=False)

    def stats(self) -> dict[str, dict[str, int]]:
        return {
            name: {
                "in_flight": s.target.in_flight,
                "dropped": s.target.dropped,
                "failures": s.target.failures,
                "delivered": s.target.delivered,
            }
            for name, s in self._subs.items()
        }

    async def close(self) -> None:
        for sub in self._subs.values():
            await sub.target.close()
