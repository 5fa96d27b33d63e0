"""Fan-out of the gateway's market data and order events to subscribers, without ever blocking.

A subscriber is a named Ray actor (``RayActorTarget``) or, in plain tests and
the backtester, a local object (``LocalTarget``), with the methods
``on_ticker(ticker)``, ``on_order_update(order)`` and ``on_fill(fill)``.

Delivery is fire-and-forget: the caller (the gateway's WS loop) never waits
for a subscriber. A slow subscriber has at most ``max_in_flight`` deliveries
outstanding (a Ray delivery until the remote call really finishes, however
long we wait for it); beyond that, tickers to it are dropped (and counted)
because the next ticker supersedes them. Order updates and fills are never dropped for
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
from tradetree.supervisor import ActorClient, translate_ray_error

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

    def _track(self, awaitable: Any, method: str) -> asyncio.Task[Any]:
        self.in_flight += 1
        task = asyncio.ensure_future(awaitable)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(t, method))
        return task

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


# Long on purpose: past it a delivery counts as failed and the actor is looked up again. A strategy's
# on_ticker may itself wait on an order submission (ORDER_CALL_TIMEOUT_SECS, 35 s), and that is not a failure.
DELIVERY_TIMEOUT_SECS = 120.0


class RayActorTarget(_TargetBase):
    """A named Ray actor, looked up lazily (``ActorClient.handle``) and again after any failed delivery.

    A delivery is submitted on the actor's handle at once, and its in-flight
    slot is the remote call itself: it is released only when that call really
    finishes (answered, raised, or the actor died), never when we stop
    waiting. A delivery still unanswered after ``call_timeout_secs`` counts as
    failed (the actor is looked up again) but keeps its slot: Ray still has
    the call queued in the actor, so a subscriber that stopped answering
    holds ``max_in_flight`` slots and its tickers are dropped, instead of an
    unbounded backlog piling up in its queue.
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
        self._client = client or ActorClient(namespace)
        self._call_timeout_secs = call_timeout_secs
        self._timers: dict[asyncio.Task[Any], asyncio.TimerHandle] = {}
        self._late: set[asyncio.Task[Any]] = set()  # timed out (counted failed), still holding their slots
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
        # Submitted here, synchronously: deliveries reach the actor in the order they were made.
        try:
            ref = getattr(self._client.handle(self.name), method).remote(payload)
        except Exception as exc:  # no such method, or Ray refused the submission
            self.failures += 1
            self._on_failure(exc)
            log.warning("subscriber %s: %s not sent: %s", self.name, method, translate_ray_error(exc, method))
            return
        task = self._track(ref, method)
        self._timers[task] = asyncio.get_running_loop().call_later(
            self._call_timeout_secs, self._timed_out, task, method)

    def _timed_out(self, task: asyncio.Task[Any], method: str) -> None:
        self._timers.pop(task, None)
        if task.done():
            return
        self._late.add(task)
        self.failures += 1
        self._on_failure(TimeoutError())
        log.warning("subscriber %s: %s did not answer within %gs (its slot stays taken until it does)",
                    self.name, method, self._call_timeout_secs)

    def _done(self, task: asyncio.Task[Any], method: str) -> None:
        timer = self._timers.pop(task, None)
        if timer is not None:
            timer.cancel()
        if task in self._late:  # counted as failed when it timed out: only its slot is left to free
            self._late.discard(task)
            self._tasks.discard(task)
            self.in_flight -= 1
            return
        super()._done(task, method)

    def _on_failure(self, exc: BaseException) -> None:
        # The actor may have died and been re-created under the same name.
        self._resolved = False
        self._client.forget(self.name)

    async def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        await super().close()


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
