"""Gateway fan-out: routing, never blocking, dropping only tickers, re-resolving dead actors."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
import ray

from tradetree.actors.gateway_fanout import FanOut, LocalTarget, RayActorTarget
from tradetree.core.clock import ManualClock
from tradetree.core.types import Fill, FillLayer, Order, OrderType, Side, Ticker


async def settle() -> None:
    """Let scheduled deliveries and their done-callbacks run (a few loop iterations, no sleeping)."""
    for _ in range(5):
        await asyncio.sleep(0)


def ticker(inst_id: str = "BTC-USDT") -> Ticker:
    return Ticker(venue="okx", inst_id=inst_id, ts_ms=1, last=Decimal(1))


def order(strategy_id: str = "s1") -> Order:
    return Order(client_order_id="c1", strategy_id=strategy_id, venue="okx", inst_id="BTC-USDT", side=Side.BUY,
                 type=OrderType.MARKET, size=Decimal(1), created_ms=1, updated_ms=1)


def fill() -> Fill:
    return Fill(venue="okx", inst_id="BTC-USDT", trade_id="t1", side=Side.BUY, price=Decimal(1), size=Decimal(1),
                ts_ms=1, layer=FillLayer.WS)


class Slow:
    """Async handlers that wait until released: a subscriber that cannot keep up."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.tickers, self.orders, self.fills = [], [], []

    async def on_ticker(self, t):
        await self.release.wait()
        self.tickers.append(t)

    async def on_order_update(self, o):
        await self.release.wait()
        self.orders.append(o)

    async def on_fill(self, f):
        await self.release.wait()
        self.fills.append(f)


async def test_routing_by_instrument_and_strategy():
    a, b = Slow(), Slow()
    a.release.set()
    b.release.set()
    fanout = FanOut()
    fanout.add(LocalTarget(a), ["BTC-USDT"], "s1")
    fanout.add(LocalTarget(b), ["ETH-USDT"], None)
    fanout.ticker(ticker("BTC-USDT"))
    fanout.ticker(ticker("ETH-USDT"))
    fanout.order_update(order("s1"))
    fanout.order_update(order("s2"))
    fanout.fill(fill(), "s1")
    await settle()
    assert [t.inst_id for t in a.tickers] == ["BTC-USDT"]
    assert [t.inst_id for t in b.tickers] == ["ETH-USDT"]
    assert [o.strategy_id for o in a.orders] == ["s1"] and b.orders == []
    assert len(a.fills) == 1 and b.fills == []
    assert fanout.inst_ids == {"BTC-USDT", "ETH-USDT"}
    await fanout.close()


async def test_slow_subscriber_never_blocks_and_only_tickers_are_dropped():
    slow = Slow()
    target = LocalTarget(slow, max_in_flight=3)
    fanout = FanOut()
    fanout.add(target, ["BTC-USDT"], "s1")
    for _ in range(10):
        fanout.ticker(ticker())  # returns at once although nothing is consumed
    for _ in range(4):
        fanout.order_update(order())
    assert target.dropped == 7
    assert target.in_flight == 3 + 4
    slow.release.set()
    await settle()
    assert len(slow.tickers) == 3 and len(slow.orders) == 4
    assert target.in_flight == 0 and target.delivered == 7
    await fanout.close()


async def test_failing_subscriber_is_counted():
    class Broken:
        def on_ticker(self, t):
            raise RuntimeError("sync failure")

        async def on_fill(self, f):
            raise RuntimeError("async failure")

    target = LocalTarget(Broken())
    target.deliver("on_ticker", ticker(), droppable=True)
    target.deliver("on_fill", fill(), droppable=False)
    target.deliver("on_order_update", order(), droppable=False)  # no such method: ignored
    await settle()
    assert target.failures == 2


async def test_close_cancels_outstanding_deliveries():
    slow = Slow()
    target = LocalTarget(slow)
    target.deliver("on_ticker", ticker(), droppable=True)
    await target.close()
    assert target.in_flight == 0 and slow.tickers == []


async def test_missing_ray_actor_is_resolved_again_at_most_once_per_period(monkeypatch):
    calls = []

    class Handle:
        class on_ticker:
            @staticmethod
            def remote(payload):
                async def done():
                    return None
                return done()

    def get_actor(name, namespace=None):
        calls.append(name)
        if len(calls) < 3:
            raise ValueError(f"no actor {name}")
        return Handle()

    monkeypatch.setattr(ray, "get_actor", get_actor)
    clock = ManualClock()
    target = RayActorTarget("strategy-x", clock=clock, resolve_retry_secs=1.0)
    target.deliver("on_ticker", ticker(), droppable=True)
    target.deliver("on_ticker", ticker(), droppable=True)  # within the retry period: no lookup
    assert calls == ["strategy-x"] and target.dropped == 2
    clock.advance(1.5)
    target.deliver("on_ticker", ticker(), droppable=True)
    clock.advance(1.5)
    target.deliver("on_ticker", ticker(), droppable=True)
    assert len(calls) == 3
    await settle()
    assert target.delivered == 1


async def test_failed_ray_delivery_forgets_the_handle(monkeypatch):
    lookups = []

    class DeadHandle:
        class on_ticker:
            @staticmethod
            def remote(payload):
                async def fail():
                    raise ray.exceptions.RayActorError()
                return fail()

    def get_actor(name, namespace=None):
        lookups.append(name)
        return DeadHandle()

    monkeypatch.setattr(ray, "get_actor", get_actor)
    target = RayActorTarget("strategy-y", clock=ManualClock(), resolve_retry_secs=0)
    target.deliver("on_ticker", ticker(), droppable=True)
    await settle()
    assert target.failures == 1
    target.deliver("on_ticker", ticker(), droppable=True)
    assert lookups == ["strategy-y", "strategy-y"]
    await target.close()


@pytest.mark.parametrize("method", ["on_order_update", "on_fill"])
async def test_order_events_are_not_dropped_for_backlog(method):
    slow = Slow()
    target = LocalTarget(slow, max_in_flight=1)
    payload = order() if method == "on_order_update" else fill()
    for _ in range(3):
        target.deliver(method, payload, droppable=False)
    assert target.dropped == 0 and target.in_flight == 3
    await target.close()


async def test_a_ray_subscriber_that_never_answers_keeps_its_slots_and_loses_tickers(monkeypatch):
    # Timing out does not take the call back out of the actor's queue: the slots stay taken until
    # the calls really finish, so the backlog stays bounded by max_in_flight.
    answer = asyncio.Event()
    submitted = []

    class Stuck:
        class on_ticker:
            @staticmethod
            def remote(payload):
                submitted.append(payload)

                async def never():
                    await answer.wait()
                return never()

    monkeypatch.setattr(ray, "get_actor", lambda name, namespace=None: Stuck())
    target = RayActorTarget("strategy-z", clock=ManualClock(), resolve_retry_secs=0, max_in_flight=2,
                            call_timeout_secs=0.01)
    for _ in range(2):
        target.deliver("on_ticker", ticker(), droppable=True)
    await asyncio.sleep(0.05)  # both deliveries time out
    assert target.failures == 2 and target.in_flight == 2
    for _ in range(5):
        target.deliver("on_ticker", ticker(), droppable=True)
    assert len(submitted) == 2 and target.dropped == 5  # nothing more piles up in the actor's queue
    answer.set()
    await settle()
    assert target.in_flight == 0 and target.failures == 2 and target.delivered == 0
    target.deliver("on_ticker", ticker(), droppable=True)  # answering again: delivered as before
    await settle()
    assert len(submitted) == 3 and target.delivered == 1
    await target.close()
