"""OkxRestClient against the running simulator: calls, pagination and error translation."""

from __future__ import annotations

from decimal import Decimal

import pytest

import tradetree.adapters.okx.rest as rest_module
from tests.adapters.sim_helpers import credentials, venue_config
from tradetree.adapters.okx import OkxRestClient
from tradetree.core.errors import (
    InsufficientFunds,
    OrderNotFound,
    OrderRejected,
    VenueAuthError,
    VenueRateLimited,
    VenueUnavailable,
)
from tradetree.core.types import FillLayer, InstrumentKind, Order, OrderState, OrderType, Side, new_client_order_id
from tradetree.sim.config import DEFAULT_SECRET


def make_order(inst_id: str = "BTC-USDT-SWAP", *, side: Side = Side.BUY, type: OrderType = OrderType.MARKET,
               size: str = "2", price: str | None = None) -> Order:
    return Order(client_order_id=new_client_order_id(), strategy_id="s1", venue="okx", inst_id=inst_id, side=side,
                 type=type, size=Decimal(size), price=Decimal(price) if price else None, created_ms=1, updated_ms=1)


@pytest.fixture
async def rest(sim):
    client = OkxRestClient(venue_config(sim), credentials(), rest_url=sim.rest_url)
    await client.load_instruments()
    yield client
    await client.close()


async def test_load_instruments(rest):
    instruments = {i.inst_id: i for i in await rest.load_instruments()}
    assert set(instruments) == {"BTC-USDT", "ETH-USDT", "BTC-USDT-SWAP", "ETH-USDT-SWAP"}
    swap = instruments["BTC-USDT-SWAP"]
    assert swap.kind is InstrumentKind.SWAP
    assert swap.contract_value == Decimal("0.01")
    assert swap.lot_size == Decimal("0.01")
    assert instruments["BTC-USDT"].kind is InstrumentKind.SPOT
    assert rest.last_ok_ms is not None and rest.consecutive_failures == 0


async def test_market_order_fills_and_is_found_by_client_id(rest, sim):
    order = make_order()
    venue_order_id = await rest.create_order(order)
    assert venue_order_id
    report = await rest.fetch_order(order)
    assert report.venue_order_id == venue_order_id
    assert report.client_order_id == order.client_order_id
    assert report.state is OrderState.FILLED
    assert report.filled_size == Decimal(2)
    fills = [f for f in await rest.fetch_fills("BTC-USDT-SWAP") if f.client_order_id == order.client_order_id]
    assert fills and all(f.layer is FillLayer.POLL for f in fills)
    assert sum(f.size for f in fills) == Decimal(2)
    truth = sim.account_truth()
    assert {t["trade_id"] for t in truth["trades"] if t["cl_ord_id"] == order.client_order_id} == {
        f.trade_id for f in fills}
    assert await rest.fetch_positions() == {"BTC-USDT-SWAP": Decimal(truth["positions"]["BTC-USDT-SWAP"])}


async def test_spot_market_buy_is_sized_in_base(rest):
    before = await rest.fetch_balances()
    order = make_order("BTC-USDT", size="0.5")
    await rest.create_order(order)
    after = await rest.fetch_balances()
    assert after["BTC"] == before["BTC"] + Decimal("0.5")
    assert after["USDT"] < before["USDT"]


async def test_limit_order_rests_then_cancels(rest):
    order = make_order("BTC-USDT", type=OrderType.LIMIT, size="0.01", price="30000")
    await rest.create_order(order)
    opened = await rest.fetch_open_orders()
    assert [r.client_order_id for r in opened] == [order.client_order_id]
    assert await rest.fetch_open_orders(["ETH-USDT"]) == []
    await rest.cancel_order(order)
    report = await rest.fetch_order(order)
    assert report.state is OrderState.CANCELED
    assert await rest.fetch_open_orders() == []
    with pytest.raises(OrderNotFound):
        await rest.cancel_order(order)


async def test_unknown_order_is_not_found(rest):
    with pytest.raises(OrderNotFound):
        await rest.fetch_order(make_order())


async def test_pagination_collects_every_page(rest, monkeypatch):
    monkeypatch.setattr(rest_module, "PAGE_LIMIT", 2)
    limits = [make_order("ETH-USDT", type=OrderType.LIMIT, size="0.01", price="1000") for _ in range(5)]
    for order in limits:
        await rest.create_order(order)
    assert {r.client_order_id for r in await rest.fetch_open_orders()} == {o.client_order_id for o in limits}
    market = [make_order(size="1") for _ in range(5)]
    for order in market:
        await rest.create_order(order)
    fills = await rest.fetch_fills("BTC-USDT-SWAP")
    assert {f.client_order_id for f in fills} == {o.client_order_id for o in market}
    assert len({f.trade_id for f in fills}) == len(fills)
    assert [f.ts_ms for f in fills] == sorted(f.ts_ms for f in fills)
    cutoff = fills[-1].ts_ms
    assert all(f.ts_ms >= cutoff for f in await rest.fetch_fills("BTC-USDT-SWAP", since_ms=cutoff))


async def test_dead_man_switch_arms_and_disarms(rest):
    assert await rest.cancel_all_after(60) > 0
    assert await rest.cancel_all_after(0) == 0
    for bad in (5, 121, -1):
        with pytest.raises(ValueError):
            await rest.cancel_all_after(bad)


async def test_wrong_secret_is_an_auth_error_without_the_secret(sim):
    bad_secret = "definitely-wrong-secret"
    client = OkxRestClient(venue_config(sim), credentials(secret=bad_secret), rest_url=sim.rest_url)
    try:
        with pytest.raises(VenueAuthError) as info:
            await client.fetch_balances()
        assert bad_secret not in str(info.value)
        assert DEFAULT_SECRET not in str(info.value)
        with pytest.raises(VenueAuthError):
            await client.load_instruments()  # ccxt's private asset/currencies call
        assert client.consecutive_failures == 2
    finally:
        await client.close()


async def test_injected_5xx_is_unavailable_and_429_is_rate_limited(rest, sim):
    sim.faults.set_rest_errors(1.0, "5xx")
    with pytest.raises(VenueUnavailable) as info:
        await rest.fetch_balances()
    assert not isinstance(info.value, VenueRateLimited)
    sim.faults.set_rest_errors(1.0, "429")
    with pytest.raises(VenueRateLimited):
        await rest.fetch_time()
    sim.faults.clear_all()
    assert await rest.fetch_time() > 0
    assert rest.consecutive_failures == 0


async def test_timeout_is_unavailable(sim):
    client = OkxRestClient(venue_config(sim, http_timeout_secs=0.3), credentials(), rest_url=sim.rest_url)
    try:
        sim.faults.update(rest_error_rate=1.0, rest_error_kind="timeout", rest_timeout_secs=1.0)
        with pytest.raises(VenueUnavailable):
            await client.fetch_time()
    finally:
        sim.faults.clear_all()
        await client.close()


async def test_rejections(rest, sim):
    sim.faults.set_reject_orders()
    with pytest.raises(InsufficientFunds) as info:
        await rest.create_order(make_order())
    assert info.value.code == "51008"
    sim.faults.clear_all()
    with pytest.raises(OrderRejected):
        await rest.create_order(make_order(size="0.005"))  # below the lot size
    with pytest.raises(OrderRejected):
        await rest.create_order(make_order(type=OrderType.LIMIT))  # no price: refused before sending


async def test_clients_share_nothing(sim):
    first = OkxRestClient(venue_config(sim), credentials(), rest_url=sim.rest_url)
    second = OkxRestClient(venue_config(sim), credentials(), rest_url=sim.rest_url)
    await first.fetch_time()
    await first.close()
    await first.close()  # idempotent
    assert await second.fetch_time() > 0
    await second.close()


async def test_sandbox_mode_keeps_our_url(sim):
    client = OkxRestClient(venue_config(sim, sandbox=True), credentials(), rest_url=sim.rest_url)
    try:
        assert client._exchange.urls["api"] == {"rest": sim.rest_url}
        assert client._exchange.headers.get("x-simulated-trading") == "1"
        assert {i.inst_id for i in await client.load_instruments()} >= {"BTC-USDT-SWAP"}
        assert await client.create_order(make_order(size="1"))
    finally:
        await client.close()
