"""The kill switch on the real ``RedisStore`` (fakeredis and the real server).

``StoreVenue`` does what the gateway does to the store: it records an order
before sending it, stores the venue's answers, and applies fills through the
store's idempotent Lua path (or leaves them to a later "poll" delivery).
"""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal

import pytest

from tradetree.actors.kill_switch import KillSwitch
from tradetree.core.clock import ManualClock
from tradetree.core.store import RedisStore
from tradetree.core.types import (
    Fill,
    FillLayer,
    Instrument,
    InstrumentKind,
    Order,
    OrderIntent,
    OrderState,
    OrderType,
    Side,
)
from tradetree.risk.kill_switch import KillState, KillSwitchConfig, StepOutcome

D = Decimal


def swap(inst_id: str) -> Instrument:
    base = inst_id.split("-")[0]
    return Instrument(venue="okx", inst_id=inst_id, kind=InstrumentKind.SWAP, base=base, quote="USDT",
                      settle="USDT", contract_value=D("0.01"), tick_size=D("0.1"), lot_size=D(1), min_size=D(1))


INSTRUMENTS = {i: swap(i) for i in ("BTC-USDT-SWAP", "ETH-USDT-SWAP")}


class StoreVenue:
    def __init__(self, store: RedisStore, clock: ManualClock) -> None:
        self.store = store
        self.clock = clock
        self.apply_fills = True
        self.held_fills: list[Fill] = []
        self.submitted: list[Order] = []
        self._n = 0

    def venues(self):
        return ("okx",)

    def _next(self) -> int:
        self._n += 1
        self.clock.advance(0.001)
        return self._n

    async def cancel_all(self, venue: str, strategy_id: str | None = None) -> int:
        n = 0
        for o in await self.store.open_orders(venue=venue, strategy_id=strategy_id):
            if not o.state.is_terminal:
                await self.store.update_order(o.transition(OrderState.CANCELED, now_ms=self.clock.now_ms() + 1))
                n += 1
        return n

    async def fill(self, order: Order, *, layer: FillLayer = FillLayer.WS, apply: bool = True) -> Order:
        n = self._next()
        filled = order.transition(OrderState.FILLED, now_ms=self.clock.now_ms(), filled_size=order.size,
                                  avg_fill_price=D(100), venue_order_id=f"v{n}")
        await self.store.update_order(filled)
        fill = Fill(venue=order.venue, inst_id=order.inst_id, trade_id=f"t{n}", client_order_id=order.client_order_id,
                    venue_order_id=f"v{n}", side=order.side, price=D(100), size=order.size, ts_ms=self.clock.now_ms(),
                    layer=layer)
        if apply:
            await self.store.apply_fill(fill, INSTRUMENTS[order.inst_id])
        else:
            self.held_fills.append(fill)
        return filled

    async def venue_positions(self, venue: str) -> dict[str, Decimal]:
        # The venue's truth: what Redis books plus the fills held back from it.
        net: dict[str, Decimal] = {}
        for p in await self.store.positions():
            net[p.inst_id] = net.get(p.inst_id, D(0)) + p.qty
        for f in self.held_fills:
            net[f.inst_id] = net.get(f.inst_id, D(0)) + f.side.sign * f.size
        return {i: q for i, q in net.items() if q != 0}

    async def submit_order(self, intent: OrderIntent) -> Order:
        order = Order.from_intent(intent, now_ms=self.clock.now_ms(), client_order_id=f"kill{self._next()}")
        assert await self.store.record_order(order)  # written before it is sent
        self.submitted.append(order)
        return await self.fill(order, apply=self.apply_fills)

    async def deliver_held_fills(self) -> None:
        """The REST poller finds the fills the WS never delivered."""
        for f in self.held_fills:
            await self.store.apply_fill(f.model_copy(update={"layer": FillLayer.POLL}), INSTRUMENTS[f.inst_id])
        self.held_fills = []


@pytest.fixture(params=["fake", "real"])
def client(request):
    return request.getfixturevalue("fake_redis" if request.param == "fake" else "real_redis")


async def open_position(venue: StoreVenue, strategy: str, inst_id: str, side: Side, size: str) -> None:
    intent = OrderIntent(strategy_id=strategy, venue="okx", inst_id=inst_id, side=side, size=D(size))
    order = Order.from_intent(intent, now_ms=venue.clock.now_ms(), client_order_id=f"open{venue._next()}")
    await venue.store.record_order(order)
    await venue.fill(order)


def make(store, client, namespace, venue, clock) -> KillSwitch:
    async def sleep(secs: float) -> None:
        clock.advance(secs)
        await asyncio.sleep(0)

    cfg = KillSwitchConfig(max_clip_size=D(2), step_max_attempts=4, backoff_min_secs=1, backoff_max_secs=8,
                           max_duration_secs=60, verify_interval_secs=1, call_timeout_secs=5, lease_secs=30)
    return KillSwitch(store, store, venue, cfg, clock=clock, sleep=sleep, rng=random.Random(3))


async def test_global_kill_flattens_the_store_positions(client, namespace):
    clock = ManualClock()
    store = RedisStore(client, namespace, clock=clock)
    venue = StoreVenue(store, clock)
    await store.set_strategy_state("A", "RUNNING")
    await store.set_strategy_state("B", "PAUSED")
    await open_position(venue, "A", "BTC-USDT-SWAP", Side.BUY, "5")
    await open_position(venue, "B", "ETH-USDT-SWAP", Side.SELL, "1")
    resting = Order(client_order_id="rest1", strategy_id="A", venue="okx", inst_id="BTC-USDT-SWAP", side=Side.SELL,
                    type=OrderType.LIMIT, size=D(1), price=D(120), state=OrderState.PENDING_NEW,
                    created_ms=clock.now_ms(), updated_ms=clock.now_ms())
    await store.record_order(resting)
    await store.update_order(resting.transition(OrderState.LIVE, now_ms=clock.now_ms() + 1, venue_order_id="vr"))

    result = await make(store, client, namespace, venue, clock).kill("drift on okx")

    assert result.state is KillState.DONE
    assert {(p.strategy_id, p.inst_id): p.qty for p in await store.positions()} == {
        ("A", "BTC-USDT-SWAP"): 0, ("B", "ETH-USDT-SWAP"): 0}
    assert [(o.strategy_id, o.side, o.size, o.reduce_only) for o in venue.submitted] == [
        ("A", Side.SELL, D(2), True), ("B", Side.BUY, D(1), True), ("A", Side.SELL, D(2), True),
        ("A", Side.SELL, D(1), True)]
    assert (await store.get_order("rest1")).state is OrderState.CANCELED
    assert await store.kill_flag() == "drift on okx"
    assert await store.strategy_states() == {"A": "KILLED", "B": "KILLED"}


async def test_fills_that_arrive_only_by_polling_are_waited_for_not_closed_twice(client, namespace):
    clock = ManualClock()
    store = RedisStore(client, namespace, clock=clock)
    venue = StoreVenue(store, clock)
    await store.set_strategy_state("A", "RUNNING")
    await open_position(venue, "A", "BTC-USDT-SWAP", Side.BUY, "2")
    venue.apply_fills = False  # the WS reports the order filled but delivers no fill
    ks = make(store, client, namespace, venue, clock)

    stalled = await ks.kill("fill gap", strategy_id="A")

    assert stalled.state is KillState.STALLED and "orders not settled" in stalled.stalled_reason
    assert len(venue.submitted) == 1 and (await store.positions("A"))[0].qty == 2
    assert (await store.strategy_states())["A"] == "WINDING_DOWN"

    await venue.deliver_held_fills()
    [done] = await ks.resume_pending()
    assert done.state is KillState.DONE and len(venue.submitted) == 1
    assert (await store.positions("A"))[0].qty == 0
    assert (await store.strategy_states())["A"] == "KILLED"
    assert await store.kill_flag() is None, "a one-strategy kill does not set the global flag"


async def test_an_unreadable_strategy_state_does_not_keep_the_others_from_winding_down(client, namespace):
    clock = ManualClock()
    store = RedisStore(client, namespace, clock=clock)
    venue = StoreVenue(store, clock)
    await store.set_strategy_state("A", "RUNNING")
    await store.client.hset(store.keys.strategy_states, "B", "paused")  # garbled: not a StrategyState
    await open_position(venue, "A", "BTC-USDT-SWAP", Side.BUY, "1")
    ks = make(store, client, namespace, venue, clock)

    result = await ks.kill("drift on okx")

    assert result.state is KillState.DONE and result.strategies == ("A", "B")
    assert (await store.positions("A"))[0].qty == 0
    assert await store.strategy_states() == {"A": "KILLED", "B": "KILLED"}, "the garbled entry is overwritten"
    [note] = [s for s in await ks.steps() if s.step == "flag" and s.outcome is StepOutcome.INFO]
    assert "unreadable" in note.detail and "B 'paused'" in note.detail
