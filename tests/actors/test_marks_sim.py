"""Marks end to end on a real Redis: the gateway records the simulator's prices, a host values with them.

The host subscribes to nothing here: every price it uses comes from what the
gateway wrote to Redis, the way a host values another strategy's positions.
"""

from __future__ import annotations

from decimal import Decimal

from tests.actors.test_gateway_sim import SWAP, intent
from tests.adapters.sim_helpers import eventually
from tradetree.actors.strategy_host import StrategyHost
from tradetree.core.config import StrategyConfig
from tradetree.core.marks import MarkBook
from tradetree.core.types import OrderIntent, Side
from tradetree.risk import pre_trade
from tradetree.risk.config import RiskConfig

CFG = StrategyConfig.model_validate({"class": "MeanReversion", "version": "v1", "venue": "okx",
                                     "symbols": ["BTC-USDT"], "bar_interval_ms": 1000, "params": {"size": "1"}})


async def test_host_values_another_strategys_position_with_the_gateways_mark(gateway, store, redis_url, namespace):
    book = MarkBook(store.client, namespace)
    key = ("okx", SWAP)
    await eventually(lambda: _has_mark(book, key), what="the gateway recorded a mark")
    order = await gateway.submit_order(intent("2", strategy_id="S2"))
    await eventually(lambda: _position_is(store, "S2", Decimal(2)), what="S2's fills applied")

    risk = RiskConfig(max_global_notional=Decimal("1e12"), contract_values={"okx:BTC-USDT-SWAP": Decimal("0.01"),
                                                                            "okx:BTC-USDT": Decimal(1)})
    host = StrategyHost(CFG, redis_url=redis_url, namespace=namespace, sink=None, risk=risk)
    await host.start()
    try:
        mine = OrderIntent(strategy_id=host.id, venue="okx", inst_id="BTC-USDT", side=Side.BUY,
                           size=Decimal(1), price=Decimal(1))  # a limit order: its own price values it
        inputs, why = await host.pre_trade_inputs(mine, [], [])
        assert inputs.marks[key] > 0, (inputs.marks, why)  # BTC-USDT has no mark: valued at its limit price
        assert {(p.strategy_id, p.inst_id) for p in inputs.positions if p.qty} == {("S2", SWAP)}
        assert order.client_order_id in {o.client_order_id for o in inputs.in_flight}
        assert pre_trade.check(mine, inputs, risk) == []
        tight = risk.model_copy(update={"max_global_notional": Decimal(1)})
        after = 2 * Decimal("0.01") * inputs.marks[key] + 1
        assert pre_trade.check(mine, inputs, tight) == [
            f"global notional {pre_trade.fmt_decimal(after)} (with orders in flight) exceeds 1"]
    finally:
        await host.stop()


async def _has_mark(book, key) -> bool:
    return key in await book.read([key])


async def _position_is(store, sid, qty) -> bool:
    return (await store.position(sid, "okx", SWAP)).qty == qty
