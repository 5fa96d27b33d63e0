"""VenueGatewayActor on Ray: the thin shell starts, trades, fans out to a named actor, stops."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import pytest

from tests.adapters.sim_helpers import FAST_SIM, credentials, eventually, venue_config
from tradetree.actors.gateway import VenueGatewayActor
from tradetree.core.store import RedisStore
from tradetree.core.types import OrderIntent, OrderState, Side, StrategyState
from tradetree.sim.server import SimulatorThread


@pytest.fixture
def sim_thread():
    with SimulatorThread(FAST_SIM) as server:
        yield server


async def test_actor_wraps_the_gateway(ray_session, sim_thread, redis_url, namespace, real_redis):
    ray = ray_session

    @ray.remote(num_cpus=0)
    class TickerCounter:
        def __init__(self) -> None:
            self.tickers = 0
            self.orders: list = []

        def on_ticker(self, ticker) -> None:
            self.tickers += 1

        def on_order_update(self, order) -> None:
            self.orders.append(order.state.value)

        def on_fill(self, fill) -> None:
            pass

        def seen(self) -> tuple[int, list]:
            return self.tickers, self.orders

    suffix = uuid.uuid4().hex[:8]
    counter_name = f"strategy-{suffix}"
    counter = TickerCounter.options(name=counter_name).remote()
    gateway = VenueGatewayActor.options(name=f"gateway-okx-{suffix}").remote(
        venue_config(sim_thread), rest_url=sim_thread.rest_url, ws_url=sim_thread.ws_url,
        credentials=credentials(), redis_url=redis_url, namespace=namespace,
    )
    try:
        await gateway.start.remote()

        async def healthy() -> bool:
            return (await gateway.check_health.remote()).healthy

        await eventually(healthy, what="gateway healthy")
        assert "BTC-USDT-SWAP" in {i.inst_id for i in await gateway.instruments.remote()}

        await gateway.subscribe.remote(counter_name, ["BTC-USDT-SWAP"])

        async def tickers_arrived() -> bool:
            return (await counter.seen.remote())[0] > 0

        await eventually(tickers_arrived, what="tickers at the subscriber actor")

        await RedisStore(real_redis, namespace).set_strategy_state(counter_name, StrategyState.RUNNING)  # the gate's
        order = await gateway.submit_order.remote(
            OrderIntent(strategy_id=counter_name, venue="okx", inst_id="BTC-USDT-SWAP", side=Side.BUY,
                        size=Decimal(1)))
        assert order.state in (OrderState.LIVE, OrderState.FILLED)
        store = RedisStore(real_redis, namespace)

        async def filled() -> bool:
            return await store.applied_size(order.client_order_id) == Decimal(1)

        await eventually(filled, what="fill applied by the actor")

        async def order_events_arrived() -> bool:
            return "filled" in (await counter.seen.remote())[1]

        await eventually(order_events_arrived, what="order updates at the subscriber actor")
        assert (await gateway.stats.remote())["counters"]["ws_fills_applied"] >= 1
        await gateway.stop.remote()
        assert not (await gateway.check_health.remote()).healthy
    finally:
        ray.kill(gateway)
        ray.kill(counter)
        await asyncio.sleep(0)
