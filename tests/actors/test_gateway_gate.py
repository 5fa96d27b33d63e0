"""The gateway's own gate, against the simulator over loopback and a real Redis.

An order sent straight to ``VenueGateway.submit_order`` (past every strategy
host) must not reach the venue while the kill flag is set, its venue is
paused or its strategy is not RUNNING; each gate (the strategy host's and the
gateway's) stops an order when the other is broken; the kill switch's clips,
and only they, pass the flag and the pauses.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from tests.actors.test_gateway_sim import make_gateway
from tests.adapters.sim_helpers import eventually
from tradetree.actors.kill_switch import KillSwitch
from tradetree.actors.strategy_host import StrategyHost
from tradetree.core.config import StrategyConfig
from tradetree.core.control_state import PAUSE_SOURCE_FILL_HEALTH, ControlState
from tradetree.core.store import RedisStore
from tradetree.core.types import OrderDenied, OrderIntent, OrderState, Side, StrategyState, Ticker
from tradetree.risk.kill_switch import KillState, KillSwitchConfig

pytestmark = pytest.mark.integration

SWAP = "BTC-USDT-SWAP"
CFG = StrategyConfig.model_validate({"class": "MeanReversion", "version": "v1", "venue": "okx",
                                     "symbols": [SWAP], "bar_interval_ms": 1000, "params": {"size": "1"}})


def intent(strategy: str = "A", side: Side = Side.BUY, size: str = "1", **kw) -> OrderIntent:
    return OrderIntent(strategy_id=strategy, venue="okx", inst_id=SWAP, side=side, size=Decimal(size), **kw)


@pytest.fixture
async def store(real_redis, namespace):
    return RedisStore(real_redis, namespace)


@pytest.fixture
async def control(real_redis, namespace):
    return ControlState(real_redis, namespace)


@pytest.fixture
async def gateway(sim, redis_url, namespace, real_redis):
    gw = make_gateway(sim, redis_url, namespace, heartbeat_interval_secs=0.05, dead_man_switch_secs=0)
    await gw.start()
    yield gw
    await gw.stop()


def venue_untouched(sim, before: int) -> bool:
    """No order request reached the simulator since ``before`` (its count then), and it never traded."""
    return sim.order_requests == before and sim.account_truth()["trades"] == []


async def filled(store: RedisStore, order) -> bool:
    now = await store.get_order(order.client_order_id)
    return (now is not None and now.state is OrderState.FILLED
            and await store.applied_size(order.client_order_id) == order.size)


async def kill_flag(store, control):
    await store.set_kill_flag("operator: stop everything", 1)


async def venue_paused(store, control):
    await control.pause_venue("okx", "fills not arriving on the WS", 1, source=PAUSE_SOURCE_FILL_HEALTH)


async def strategy_paused(store, control):
    await store.set_strategy_state("A", StrategyState.PAUSED)


async def strategy_winding_down(store, control):
    await store.set_strategy_state("A", StrategyState.WINDING_DOWN)


async def strategy_unknown(store, control):
    await store.client.hdel(store._keys.strategy_states, "A")


async def strategy_garbled(store, control):
    await store.client.hset(store._keys.strategy_states, "A", "RUNNNG")


@pytest.mark.parametrize(("fault", "reason"), [
    (kill_flag, "kill flag set: operator: stop everything"),
    (venue_paused, "venue okx paused (fill_health: fills not arriving on the WS)"),
    (strategy_paused, "strategy A is PAUSED, not RUNNING"),
    (strategy_winding_down, "strategy A is WINDING_DOWN, not RUNNING"),
    (strategy_unknown, "strategy A has no state in Redis, not RUNNING"),
    (strategy_garbled, "gateway gate: state unknown: "),
])
async def test_a_strategy_order_straight_to_the_gateway_never_reaches_the_venue(gateway, store, control, sim,
                                                                                 fault, reason):
    await store.set_strategy_state("A", StrategyState.RUNNING)
    await fault(store, control)
    before = sim.order_requests

    denied = await gateway.submit_order(intent(reduce_only=False))
    close = await gateway.submit_order(intent(side=Side.SELL, reduce_only=True, reason="kill switch wind-down"))

    for result in (denied, close):  # a close calling itself the kill switch's is no different
        assert isinstance(result, OrderDenied), result
        assert result.checked_by == "gateway:okx"
        assert any(r.startswith(reason) for r in result.reasons), result.reasons
    assert venue_untouched(sim, before)
    assert await store.open_orders(venue="okx") == []  # nothing recorded either
    assert gateway.counters["gate_refused"] == 2


async def test_the_same_order_goes_once_the_fault_is_lifted(gateway, store, control, sim):
    await store.set_strategy_state("A", StrategyState.RUNNING)
    await kill_flag(store, control)
    await venue_paused(store, control)
    assert isinstance(await gateway.submit_order(intent()), OrderDenied)
    await store.clear_kill_flag()
    assert isinstance(await gateway.submit_order(intent()), OrderDenied)  # still paused
    await control.resume_venue("okx")
    order = await gateway.submit_order(intent())
    assert not isinstance(order, OrderDenied)
    await eventually(lambda: filled(store, order), what="the order filled once nothing holds it")


# -- each gate holds when the other is broken ---------------------------------------------------


async def host_on(gateway, store, control, redis_url, namespace) -> StrategyHost:
    """A strategy host whose orders go to ``gateway``, with its own gate's inputs fresh:
    positions verified, a ticker just in. Its strategy wants one buy on the next bar."""
    host = StrategyHost(CFG, redis_url=redis_url, namespace=namespace, sink=gateway)
    await host.start()
    wanted = [intent(host.id)]
    host.strategy.on_bar = lambda bar, ctx: [wanted.pop()] if wanted else []
    await control.mark_verified("okx", host.clock.now_ms() + 600_000)
    return host


async def one_bar(host: StrategyHost) -> None:
    base = 10_000_000
    for i in range(3):  # the second ticker closes the first bar
        await host.on_ticker(Ticker(venue="okx", inst_id=SWAP, ts_ms=base + 1000 * i, last=Decimal(50_000)))


async def test_with_the_hosts_gate_broken_the_gateways_still_stops_the_order(gateway, store, control, sim,
                                                                             redis_url, namespace, monkeypatch):
    host = await host_on(gateway, store, control, redis_url, namespace)
    try:
        assert await store.strategy_state(host.id) is StrategyState.RUNNING
        await store.set_kill_flag("operator: stop", 1)
        monkeypatch.setattr("tradetree.actors.strategy_host.check_freshness", lambda intent, gate, cfg: [])
        before = sim.order_requests
        await one_bar(host)
        assert host.denials == 1 and host.orders_sent == 0, host.stats()
        assert host.last_denial == ("kill flag set: operator: stop",)  # the gateway's words
        assert gateway.counters["gate_refused"] == 1
        assert venue_untouched(sim, before)
    finally:
        await host.stop()


async def test_with_the_gateways_gate_broken_the_hosts_still_stops_the_order(gateway, store, control, sim,
                                                                             redis_url, namespace, monkeypatch):
    host = await host_on(gateway, store, control, redis_url, namespace)
    try:
        monkeypatch.setattr("tradetree.actors.gateway.strategy_order_refusals", lambda intent, inputs: [])
        await store.set_kill_flag("operator: stop", 1)
        before = sim.order_requests
        await one_bar(host)
        assert host.denials == 1 and host.orders_sent == 0, host.stats()
        assert host.last_denial == ("kill flag set: operator: stop",)
        assert gateway.counters["gate_refused"] == 0  # the host's gate stopped it; the gateway never saw it
        assert venue_untouched(sim, before)

        # The gateway's gate really is off: the same order straight to it reaches the venue.
        order = await gateway.submit_order(intent(host.id))
        assert not isinstance(order, OrderDenied)
        assert sim.order_requests == before + 1
    finally:
        await host.stop()


# -- the kill switch's clips, and only they, pass -------------------------------------------------


class GatewayPort:
    """The kill switch's ``VenuePort`` on one in-process gateway, calling what ``RayVenuePort`` calls."""

    def __init__(self, gateway) -> None:
        self.gateway = gateway

    def venues(self):
        return ("okx",)

    async def cancel_all(self, venue: str, strategy_id: str | None = None) -> int:
        return await self.gateway.cancel_all(strategy_id)

    async def submit_order(self, intent: OrderIntent):
        return await self.gateway.submit_account_order(intent)

    async def venue_positions(self, venue: str):
        return {inst: Decimal(qty) for inst, qty in (await self.gateway.venue_positions()).items()}


async def test_the_kill_switchs_clips_pass_the_flag_and_a_paused_venue(gateway, store, control, sim):
    for strategy in ("A", "B"):
        await store.set_strategy_state(strategy, StrategyState.RUNNING)
    opened = await gateway.submit_order(intent("A", size="3"))
    await eventually(lambda: filled(store, opened), what="A's position open")
    await venue_paused(store, control)  # held by the fill-health layer, as in the incident

    # Before the kill: the clip path refuses a strategy's order, whatever it says of itself.
    before = sim.order_requests
    fake_clip = await gateway.submit_account_order(intent("A", Side.SELL, "3", reduce_only=True,
                                                          reason="kill switch wind-down"))
    assert isinstance(fake_clip, OrderDenied) and fake_clip.reasons[0].startswith(
        "not a wind-down clip: strategy A is RUNNING")
    assert sim.order_requests == before and gateway.counters["clips_refused"] == 1

    cfg = KillSwitchConfig(max_clip_size=Decimal(2), step_max_attempts=4, backoff_min_secs=0.05,
                           backoff_max_secs=0.2, max_duration_secs=30, verify_interval_secs=0.05,
                           call_timeout_secs=10, lease_secs=30)
    switch = KillSwitch(store, store, GatewayPort(gateway), cfg)
    try:
        progress = await asyncio.wait_for(switch.kill("test: flatten everything"), 60)
    finally:
        await switch.aclose()
    assert progress.state is KillState.DONE, progress
    assert await store.kill_flag() == "test: flatten everything"
    assert (await control.venue_pauses("okx")).keys() == {PAUSE_SOURCE_FILL_HEALTH}
    assert Decimal(sim.account_truth()["positions"].get(SWAP, "0")) == 0  # two clips: 2, then 1
    assert (await store.position("A", "okx", SWAP)).qty == 0
    assert sim.order_requests == before + 2

    # While the flag stands, a strategy's order is still refused.
    assert isinstance(await gateway.submit_order(intent("B")), OrderDenied)
    assert sim.order_requests == before + 2
