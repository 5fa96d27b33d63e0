"""VenueGateway (plain, no Ray) against the simulator and a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
from decimal import Decimal
from urllib.parse import urlsplit

import pytest

from tests.adapters.sim_helpers import credentials, eventually, venue_config
from tradetree.actors.gateway import VenueGateway
from tradetree.core.errors import StoreUnavailable, VenueAuthError
from tradetree.core.lifecycle import ComponentState
from tradetree.core.store import RedisStore
from tradetree.core.types import FillLayer, OrderIntent, OrderState, OrderType, Side, StrategyState

SWAP = "BTC-USDT-SWAP"
# Strategies whose orders these tests send straight to the gateway: RUNNING, or its gate refuses them.
TRADING = ("s1", "s2", "S2")


def intent(size: str = "2", *, inst_id: str = SWAP, side: Side = Side.BUY, type: OrderType = OrderType.MARKET,
           price: str | None = None, strategy_id: str = "s1") -> OrderIntent:
    return OrderIntent(strategy_id=strategy_id, venue="okx", inst_id=inst_id, side=side, type=type,
                       size=Decimal(size), price=Decimal(price) if price else None)


def make_gateway(sim, redis_url, namespace, **changes) -> VenueGateway:
    creds = changes.pop("credentials", credentials())
    venue = changes.pop("venue", venue_config(sim))
    return VenueGateway(venue, rest_url=sim.rest_url, ws_url=sim.ws_url, credentials=creds,
                        redis_url=redis_url, namespace=namespace, **changes)


@pytest.fixture
async def store(redis_url, namespace, real_redis):
    store = RedisStore(real_redis, namespace)
    for strategy in TRADING:
        await store.set_strategy_state(strategy, StrategyState.RUNNING)
    yield store


@pytest.fixture
async def gateway(sim, redis_url, namespace, real_redis, store):
    gw = make_gateway(sim, redis_url, namespace, heartbeat_interval_secs=0.05)
    await gw.start()
    yield gw
    await gw.stop()


async def test_start_is_healthy_and_heartbeats(gateway, store):
    assert gateway.state is ComponentState.RUNNING
    assert {i.inst_id for i in await gateway.instruments()} >= {SWAP, "BTC-USDT"}
    await eventually(lambda: _healthy(gateway), what="healthy")
    await eventually(lambda: _has_heartbeat(store), what="heartbeat")


async def _healthy(gateway) -> bool:
    report = await gateway.check_health()
    return report.healthy and {p.name for p in report.probes} == {
        "store", "rest", "ws_public", "ws_private", "market_data_fresh"}


async def _has_heartbeat(store) -> bool:
    return "gateway:okx" in await store.heartbeats()


async def test_market_order_recorded_first_and_its_fills_land_once_via_ws(gateway, store, sim):
    rest = gateway._rest
    original = rest.create_order
    seen_in_redis_before_send = []

    async def create_order_checking_redis(order):
        seen_in_redis_before_send.append(await store.get_order(order.client_order_id))
        return await original(order)

    rest.create_order = create_order_checking_redis
    order = await gateway.submit_order(intent("3"))
    assert seen_in_redis_before_send[0] is not None
    assert seen_in_redis_before_send[0].state is OrderState.PENDING_NEW
    assert order.state in (OrderState.LIVE, OrderState.PARTIALLY_FILLED, OrderState.FILLED)
    assert order.venue_order_id

    coid = order.client_order_id
    await eventually(lambda: _applied_is(store, coid, Decimal(3)), what="ws fills applied")
    await eventually(lambda: _state_is(store, coid, OrderState.FILLED), what="order filled")
    venue_trades = [t for t in sim.account_truth()["trades"] if t["cl_ord_id"] == coid]
    audit = [e for e in await store.audit_entries() if e.fill.client_order_id == coid]
    assert sorted(e.fill.trade_id for e in audit) == sorted(t["trade_id"] for t in venue_trades)
    assert all(e.fill.layer is FillLayer.WS for e in audit)
    counts = await store.fill_layer_counts()
    assert counts["ws"]["applied"] == len(venue_trades)
    position = await store.position("s1", "okx", SWAP)
    assert position.qty == Decimal(sim.account_truth()["positions"][SWAP])
    # the WS path leaves the order tracked for the poller
    assert coid in {o.client_order_id for o in await store.open_orders(venue="okx")}


async def _applied_is(store, coid, size) -> bool:
    return await store.applied_size(coid) == size


async def _state_is(store, coid, state) -> bool:
    order = await store.get_order(coid)
    return order is not None and order.state is state


async def test_dropped_fill_records_leave_status_filled_and_no_ws_fill(gateway, store, sim):
    sim.faults.set_drop_fill_records()
    order = await gateway.submit_order(intent("2"))
    await eventually(lambda: _state_is(store, order.client_order_id, OrderState.FILLED), what="filled status")
    stored = await store.get_order(order.client_order_id)
    assert stored.filled_size == Decimal(2)
    assert await store.applied_size(order.client_order_id) == 0
    assert (await store.fill_layer_counts()).get("ws", {}).get("applied", 0) == 0
    assert (await store.position("s1", "okx", SWAP)).qty == 0
    assert order.client_order_id in {o.client_order_id for o in await store.open_orders(venue="okx")}


async def test_rejected_order_ends_rejected(gateway, store, sim):
    sim.faults.set_reject_orders()
    order = await gateway.submit_order(intent())
    assert order.state is OrderState.REJECTED
    assert "51008" in order.reject_reason
    assert (await store.get_order(order.client_order_id)).state is OrderState.REJECTED


async def test_order_for_unlisted_instrument_is_rejected_without_sending(gateway, store, sim):
    order = await gateway.submit_order(intent(inst_id="DOGE-USDT-SWAP"))
    assert order.state is OrderState.REJECTED
    assert sim.engine.order_history() == []


async def test_an_order_whose_turn_comes_after_its_deadline_is_rejected_unsent(gateway, store, sim):
    # Its caller's deadline passes while it waits for the send lock (held, as by a slow reduce-only
    # send): by then the caller may have timed out and gone on without it, so it must never be sent.
    await gateway._send_lock.acquire()
    late = asyncio.create_task(gateway.submit_order(intent("1"), not_after_ms=gateway._clock.now_ms() + 50))
    await asyncio.sleep(0.2)
    gateway._send_lock.release()
    order = await late
    assert order.state is OrderState.REJECTED and order.reject_reason == "expired before send"
    assert (await store.get_order(order.client_order_id)).state is OrderState.REJECTED
    assert sim.engine.order_history() == []
    in_time = await gateway.submit_order(intent("1"), not_after_ms=gateway._clock.now_ms() + 10_000)
    assert in_time.state is not OrderState.REJECTED
    assert sim.engine.get_order(cl_ord_id=in_time.client_order_id) is not None


async def test_unknown_outcome_is_resolved_by_client_order_id(sim, redis_url, namespace, real_redis, store):
    gw = make_gateway(sim, redis_url, namespace, venue=venue_config(sim, http_timeout_secs=0.5))
    await gw.start()
    try:
        # The venue places the order, but the client times out waiting for the answer.
        sim.faults.update(rest_error_rate=1.0, rest_error_kind="timeout", rest_timeout_secs=1.0,
                          rest_timeout_after_processing=True, rest_error_paths=("/api/v5/trade/batch-orders",))
        order = await gw.submit_order(intent("1"))
        assert order.state is OrderState.FILLED
        assert order.venue_order_id
        assert sim.engine.get_order(cl_ord_id=order.client_order_id) is not None
    finally:
        sim.faults.clear_all()
        await gw.stop()


async def test_unresolvable_outcome_stays_pending_new(gateway, store, sim):
    sim.faults.update(rest_error_rate=1.0, rest_error_kind="5xx", rest_error_paths=("/api/v5/trade/",))
    order = await gateway.submit_order(intent("1"))
    assert order.state is OrderState.PENDING_NEW
    stored = await store.get_order(order.client_order_id)
    assert stored.state is OrderState.PENDING_NEW
    assert order.client_order_id in {o.client_order_id for o in await store.open_orders(venue="okx")}


async def test_redis_down_at_submit_sends_nothing(sim, redis_url, namespace, real_redis):
    proxy = await TcpProxy.start(redis_url)
    gw = make_gateway(sim, proxy.url, namespace, dead_man_switch_secs=0)
    await gw.start()
    try:
        await eventually(lambda: _healthy(gw), what="healthy before Redis goes away")
        await proxy.close()
        with pytest.raises(StoreUnavailable):
            await gw.submit_order(intent())
        assert sim.engine.order_history() == []
        assert sim.account_truth()["trades"] == []
        report = await gw.check_health()
        assert [p.name for p in report.failing()] == ["store"]
    finally:
        await gw.stop()


async def test_wrong_api_key_fails_start(sim, redis_url, namespace, real_redis):
    gw = make_gateway(sim, redis_url, namespace, credentials=credentials(api_key="not-our-key"))
    with pytest.raises(VenueAuthError):
        await gw.start()
    assert gw.state is ComponentState.STOPPED
    await gw.stop()  # idempotent after a failed start


async def test_redis_unreachable_fails_start(sim, namespace):
    gw = make_gateway(sim, "redis://127.0.0.1:9/0", namespace)
    with pytest.raises(StoreUnavailable):
        await gw.start()


async def test_cancel_order_and_cancel_all(gateway, store, sim):
    resting = [await gateway.submit_order(intent("0.01", inst_id="BTC-USDT", type=OrderType.LIMIT, price="30000"))
               for _ in range(3)]
    other = await gateway.submit_order(
        intent("0.01", inst_id="BTC-USDT", type=OrderType.LIMIT, price="30000", strategy_id="s2"))
    assert all(o.state is OrderState.LIVE for o in resting + [other])
    canceled = await gateway.cancel_order(resting[0].client_order_id)
    assert canceled.state is OrderState.CANCELED
    assert (await gateway.cancel_order(resting[0].client_order_id)).state is OrderState.CANCELED
    assert await gateway.cancel_all("s1") == 2
    await eventually(lambda: _state_is(store, resting[2].client_order_id, OrderState.CANCELED), what="ws cancel")
    assert (await store.get_order(other.client_order_id)).state is OrderState.LIVE
    assert await gateway.cancel_all() == 1
    assert sim.account_truth()["open_orders"] == 0


class Recorder:
    def __init__(self) -> None:
        self.tickers, self.orders, self.fills = [], [], []

    async def on_ticker(self, ticker):
        self.tickers.append(ticker)

    def on_order_update(self, order):
        self.orders.append(order)

    def on_fill(self, fill):
        self.fills.append(fill)


async def test_local_subscriber_gets_tickers_orders_and_fills(gateway, sim):
    mine, other = Recorder(), Recorder()
    await gateway.subscribe_local(mine, ["ETH-USDT-SWAP"], strategy_id="s1")
    await gateway.subscribe_local(other, [SWAP], strategy_id="s2")
    await eventually(lambda: mine.tickers and other.tickers, what="tickers")
    assert {t.inst_id for t in mine.tickers} == {"ETH-USDT-SWAP"}
    order = await gateway.submit_order(intent("1"))
    await eventually(lambda: mine.fills and any(o.state is OrderState.FILLED for o in mine.orders), what="events")
    assert {f.client_order_id for f in mine.fills} == {order.client_order_id}
    assert other.fills == [] and other.orders == []
    with pytest.raises(ValueError):
        await gateway.subscribe_local(mine, ["NOPE-USDT"])


async def test_ws_cut_recovers_and_fills_still_land(gateway, store, sim):
    sim.faults.cut_ws()
    await eventually(lambda: gateway._ws_private.reconnects >= 1 and gateway._ws_private.logged_in,
                     what="private reconnect")
    await eventually(lambda: _healthy(gateway), what="healthy again")
    order = await gateway.submit_order(intent("1"))
    await eventually(lambda: _applied_is(store, order.client_order_id, Decimal(1)), what="fills after reconnect")


class TcpProxy:
    """A loopback TCP forwarder to Redis that can be cut, to make Redis unreachable on demand."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.url = ""

    @classmethod
    async def start(cls, redis_url: str) -> TcpProxy:
        parts = urlsplit(redis_url)
        proxy = cls(parts.hostname or "127.0.0.1", parts.port or 6379)
        proxy._server = await asyncio.start_server(proxy._handle, "127.0.0.1", 0)
        port = proxy._server.sockets[0].getsockname()[1]
        proxy.url = f"redis://127.0.0.1:{port}{parts.path or '/0'}"
        return proxy

    async def _handle(self, reader, writer) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._writers.update({writer, up_writer})

        async def pipe(src, dst):
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()


async def test_stale_market_data_is_readiness_not_liveness(sim, redis_url, namespace, real_redis):
    """A venue that stops publishing tickers: the probe fails as readiness (holds strategies back, never
    restarts the gateway), and passes again when tickers return."""
    gw = make_gateway(sim, redis_url, namespace, heartbeat_interval_secs=0.05, market_data_stale_secs=0.5)
    await gw.start()
    try:
        await eventually(lambda: _healthy(gw), what="healthy")
        sim.faults.set_freeze_market_data()

        async def stale_probe():
            report = await gw.check_health()
            (probe,) = [p for p in report.probes if p.name == "market_data_fresh"]
            return None if probe.ok else probe

        await eventually(stale_probe, what="market data to go stale")
        probe = await stale_probe()
        assert probe is not None and probe.liveness is False and SWAP in probe.detail
        assert (await gw.check_health()).live  # no restart for a venue that stopped publishing
        sim.faults.set_freeze_market_data(False)
        await eventually(lambda: _healthy(gw), what="fresh tickers again")
    finally:
        await gw.stop()
