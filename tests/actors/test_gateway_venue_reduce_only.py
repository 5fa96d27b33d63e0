"""The gateway's submit path on fakeredis: which reduce-only orders carry the venue's ``reduceOnly``.

A scripted REST client records the OKX request body each order became
(``build_order_request``, as the real client builds it); positions are made by
applying fills to the store, as the WS layer would.
"""

from __future__ import annotations

import asyncio
import itertools
from decimal import Decimal

import pytest

from tests.actors.offline_gateway import SWAP, offline_gateway
from tradetree.actors.gateway import VenueGateway
from tradetree.adapters.okx.rest import build_order_request
from tradetree.core.errors import StoreUnavailable
from tradetree.core.types import (
    Fill,
    FillLayer,
    Order,
    OrderIntent,
    OrderState,
    OrderType,
    Side,
    StrategyState,
)

_ids = itertools.count(1)


class ScriptedRest:
    """Accepts every order; keeps the request body each one was sent as."""

    def __init__(self) -> None:
        self.requests: list[dict] = []  # in the order the venue got them
        self.answer = asyncio.Event()  # cleared: the venue holds its answers back
        self.answer.set()

    async def create_order(self, order: Order) -> str:
        self.requests.append(build_order_request(order, SWAP.kind))
        await asyncio.sleep(0)  # let a concurrent submit interleave, as a real round trip would
        await self.answer.wait()
        return str(next(_ids))


@pytest.fixture
async def gateway(fake_redis, namespace):
    gw, _ = offline_gateway(fake_redis, namespace, rest=ScriptedRest())
    for strategy in ("A", "B", "C"):  # else the gateway's gate refuses their orders
        await gw._store.set_strategy_state(strategy, StrategyState.RUNNING)
    yield gw
    await gw._fanout.close()


async def hold(gw: VenueGateway, strategy: str, qty: str) -> None:
    """Give ``strategy`` a position of ``qty`` through an order filled and applied in full."""
    q = Decimal(qty)
    side = Side.BUY if q > 0 else Side.SELL
    n = next(_ids)
    order = Order(client_order_id=f"open{n}", strategy_id=strategy, venue="okx", inst_id=SWAP.inst_id, side=side,
                  type=OrderType.MARKET, size=abs(q), created_ms=1, updated_ms=1)
    assert await gw._store.record_order(order)
    await gw._store.update_order(order.transition(OrderState.FILLED, now_ms=2, filled_size=abs(q)))
    fill = Fill(venue="okx", inst_id=SWAP.inst_id, trade_id=f"t{n}", client_order_id=order.client_order_id,
                side=side, price=Decimal(60000), size=abs(q), ts_ms=2, layer=FillLayer.WS)
    assert (await gw._store.apply_fill(fill, SWAP)).applied


async def until(predicate) -> None:
    """Let the loop run until ``predicate()`` (bounded in steps, not in time)."""
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0)
    pytest.fail("never happened")


def close(strategy: str, side: Side, size: str) -> OrderIntent:
    return OrderIntent(strategy_id=strategy, venue="okx", inst_id=SWAP.inst_id, side=side, size=Decimal(size),
                       reduce_only=True, reason="test: close")


def sent_reduce_only(gw: VenueGateway, order: Order) -> bool:
    (request,) = [r for r in gw._rest.requests if r["clOrdId"] == order.client_order_id]
    return request.get("reduceOnly", False)


async def test_alone_on_the_instrument_the_close_carries_the_venue_flag(gateway):
    await hold(gateway, "A", "2")
    order = await gateway.submit_order(close("A", Side.SELL, "2"))
    assert order.state is OrderState.LIVE and order.reduce_only and order.venue_reduce_only is True
    assert sent_reduce_only(gateway, order) is True
    assert (await gateway._store.get_order(order.client_order_id)).venue_reduce_only is True
    assert gateway.counters["venue_reduce_only_sent"] == 1


async def test_a_close_against_the_accounts_net_goes_without_the_flag(gateway):
    await hold(gateway, "A", "-1")
    await hold(gateway, "B", "3")  # the account is long 2: a buy cannot be reduce-only at the venue
    order = await gateway.submit_order(close("A", Side.BUY, "1"))
    assert order.state is OrderState.LIVE
    assert sent_reduce_only(gateway, order) is False
    stored = await gateway._store.get_order(order.client_order_id)
    assert stored.reduce_only is True and stored.venue_reduce_only is False  # the strategy's meaning stays
    assert gateway.counters["venue_reduce_only_withheld"] == 1


async def test_plain_orders_never_carry_it_and_say_so(gateway):
    order = await gateway.submit_order(OrderIntent(strategy_id="A", venue="okx", inst_id=SWAP.inst_id,
                                                   side=Side.BUY, size=Decimal(1)))
    assert order.venue_reduce_only is False and sent_reduce_only(gateway, order) is False


async def test_account_level_orders_keep_the_flag_they_come_with(gateway):
    await hold(gateway, "A", "-1")
    await hold(gateway, "B", "3")
    await gateway._store.set_strategy_state("A", StrategyState.WINDING_DOWN)  # the kill switch's: its clips pass
    order = await gateway.submit_account_order(close("A", Side.BUY, "1"))
    assert order.venue_reduce_only is True and sent_reduce_only(gateway, order) is True
    plain = await gateway.submit_account_order(close("A", Side.BUY, "1").model_copy(update={"reduce_only": False}))
    assert plain.venue_reduce_only is False and sent_reduce_only(gateway, plain) is False
    assert gateway.counters["venue_reduce_only_withheld"] == 0


async def test_unreadable_positions_fail_closed_to_the_venue_flag(gateway, monkeypatch):
    await hold(gateway, "A", "-1")
    await hold(gateway, "B", "3")

    async def down(*args, **kwargs):
        raise StoreUnavailable("redis: connection refused")

    monkeypatch.setattr(gateway._store, "positions", down)
    order = await gateway.submit_order(close("A", Side.BUY, "1"))
    assert order.venue_reduce_only is True and sent_reduce_only(gateway, order) is True
    assert gateway.counters["venue_reduce_only_unknown"] == 1


async def test_two_closes_at_once_see_each_other(gateway):
    # Account long 2 (A 2, B 1, C -1): A's close of 2 and B's close of 1 do not both fit under it.
    await hold(gateway, "A", "2")
    await hold(gateway, "B", "1")
    await hold(gateway, "C", "-1")
    a, b = await asyncio.gather(gateway.submit_order(close("A", Side.SELL, "2")),
                                gateway.submit_order(close("B", Side.SELL, "1")))
    assert sorted([sent_reduce_only(gateway, a), sent_reduce_only(gateway, b)]) == [False, True]


async def test_no_order_overtakes_a_close_sent_with_the_flag(gateway):
    # A's close was decided on the account being long 1; B's sell must not reach the venue first.
    await hold(gateway, "A", "1")
    gateway._rest.answer.clear()
    a = asyncio.create_task(gateway.submit_order(close("A", Side.SELL, "1")))
    await until(lambda: gateway._rest.requests)
    b = asyncio.create_task(gateway.submit_order(OrderIntent(strategy_id="B", venue="okx", inst_id=SWAP.inst_id,
                                                             side=Side.SELL, size=Decimal(1))))
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(gateway._rest.requests) == 1 and not b.done()
    gateway._rest.answer.set()
    a_order, b_order = await a, await b
    assert [r["clOrdId"] for r in gateway._rest.requests] == [a_order.client_order_id, b_order.client_order_id]
    assert a_order.venue_reduce_only is True and b_order.venue_reduce_only is False


async def test_orders_without_the_flag_do_not_wait_for_each_other(gateway):
    gateway._rest.answer.clear()
    plain = [asyncio.create_task(gateway.submit_order(OrderIntent(strategy_id=s, venue="okx", inst_id=SWAP.inst_id,
                                                                  side=Side.BUY, size=Decimal(1))))
             for s in ("A", "B")]
    await until(lambda: len(gateway._rest.requests) == 2)  # both at the venue before either is answered
    gateway._rest.answer.set()
    assert all(o.state is OrderState.LIVE for o in await asyncio.gather(*plain))
