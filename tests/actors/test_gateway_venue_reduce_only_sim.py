"""Reduce-only closes of strategies sharing an instrument, against the simulator and a real Redis.

The simulator's account is in net position mode like OKX's: its ``reduceOnly``
works on the account's net position. Two strategies on opposite sides of one
instrument must both be able to close; a strategy alone must still send the
venue's flag, so that a close our state got wrong is refused by the venue.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.adapters.sim_helpers import credentials, eventually, venue_config
from tradetree.actors.gateway import VenueGateway
from tradetree.core.store import RedisStore
from tradetree.core.types import Fill, FillLayer, Order, OrderIntent, OrderState, OrderType, Side, StrategyState

pytestmark = pytest.mark.integration

SWAP = "BTC-USDT-SWAP"


def intent(strategy: str, side: Side, size: str, *, reduce_only: bool = False) -> OrderIntent:
    return OrderIntent(strategy_id=strategy, venue="okx", inst_id=SWAP, side=side, type=OrderType.MARKET,
                       size=Decimal(size), reduce_only=reduce_only, reason="test")


@pytest.fixture
async def store(real_redis, namespace):
    store = RedisStore(real_redis, namespace)
    for strategy in ("A", "B"):  # else the gateway's gate refuses their orders
        await store.set_strategy_state(strategy, StrategyState.RUNNING)
    return store


@pytest.fixture
async def gateway(sim, redis_url, namespace, real_redis, store):
    gw = VenueGateway(venue_config(sim), rest_url=sim.rest_url, ws_url=sim.ws_url, credentials=credentials(),
                      redis_url=redis_url, namespace=namespace, heartbeat_interval_secs=0.05,
                      dead_man_switch_secs=0)
    await gw.start()
    yield gw
    await gw.stop()


async def filled_and_applied(gw: VenueGateway, store: RedisStore, order: Order) -> None:
    assert order.state is not OrderState.REJECTED, order.reject_reason

    async def done() -> bool:
        now = await store.get_order(order.client_order_id)
        return (now is not None and now.state is OrderState.FILLED
                and await store.applied_size(order.client_order_id) == now.filled_size == order.size)

    await eventually(done, what=f"{order.client_order_id} filled and applied")


async def net(store: RedisStore) -> Decimal:
    return sum((p.qty for p in await store.positions() if p.inst_id == SWAP), Decimal(0))


async def test_strategies_on_opposite_sides_both_close(gateway, store, sim):
    await filled_and_applied(gateway, store, await gateway.submit_order(intent("A", Side.BUY, "2")))
    await filled_and_applied(gateway, store, await gateway.submit_order(intent("B", Side.SELL, "1")))
    assert Decimal(sim.account_truth()["positions"][SWAP]) == await net(store) == 1

    # What the venue does with the flag: the account is long 1, so B's buy is not reducing it.
    # (Sent as a kill switch clip would be, the only orders that may carry it whatever the net.)
    await store.set_strategy_state("B", StrategyState.WINDING_DOWN)
    refused = await gateway.submit_account_order(intent("B", Side.BUY, "1", reduce_only=True))
    assert refused.state is OrderState.REJECTED and "51205" in refused.reject_reason
    await store.set_strategy_state("B", StrategyState.RUNNING)

    b_close = await gateway.submit_order(intent("B", Side.BUY, "1", reduce_only=True))
    assert b_close.reduce_only and b_close.venue_reduce_only is False
    await filled_and_applied(gateway, store, b_close)

    a_close = await gateway.submit_order(intent("A", Side.SELL, "2", reduce_only=True))
    assert a_close.venue_reduce_only is True  # alone on the account's net now: the venue guards it
    await filled_and_applied(gateway, store, a_close)

    assert {p.strategy_id: p.qty for p in await store.positions()} == {"A": 0, "B": 0}
    assert Decimal(sim.account_truth()["positions"].get(SWAP, "0")) == 0
    assert gateway.counters["venue_reduce_only_withheld"] == 1
    assert gateway.counters["venue_reduce_only_sent"] == 1


async def test_alone_the_venue_refuses_a_close_our_state_got_wrong(gateway, store, sim):
    opened = await gateway.submit_order(intent("A", Side.BUY, "1"))
    await filled_and_applied(gateway, store, opened)
    close = await gateway.submit_order(intent("A", Side.SELL, "1", reduce_only=True))
    assert close.venue_reduce_only is True
    await filled_and_applied(gateway, store, close)

    # Our state goes wrong: Redis gets a buy of A the venue never made (the account is flat there).
    ghost = Order.from_intent(intent("A", Side.BUY, "1"), now_ms=1, client_order_id="ghost1")
    assert await store.record_order(ghost)
    await store.update_order(ghost.transition(OrderState.FILLED, now_ms=2, filled_size=Decimal(1)))
    (swap,) = [i for i in await gateway.instruments() if i.inst_id == SWAP]
    await store.apply_fill(Fill(venue="okx", inst_id=SWAP, trade_id="ghost-t1", client_order_id="ghost1",
                                side=Side.BUY, price=Decimal(60000), size=Decimal(1), ts_ms=2,
                                layer=FillLayer.POLL), swap)
    assert (await store.position("A", "okx", SWAP)).qty == 1

    # The close of that phantom position still carries the flag, and the venue refuses it rather
    # than open a short.
    second = await gateway.submit_order(intent("A", Side.SELL, "1", reduce_only=True))
    assert second.venue_reduce_only is True
    assert second.state is OrderState.REJECTED and "51205" in second.reject_reason
    assert Decimal(sim.account_truth()["positions"].get(SWAP, "0")) == 0
    # Not retried without the flag: our books say long 1 where the venue is flat, so they are what is wrong.
    assert gateway.counters["venue_reduce_only_retried"] == 0
    assert gateway.counters["venue_reduce_only_refusals_kept"] == 1
