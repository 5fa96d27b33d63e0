"""StrategyHost without Ray: Redis-backed context, the pre-trade gate, pause sources."""

from __future__ import annotations

from decimal import Decimal

import fakeredis
import pytest

from tradetree.actors.strategy_host import ORDER_ADMISSION_SECS, StrategyHost
from tradetree.core.clock import ManualClock
from tradetree.core.config import StrategyConfig
from tradetree.core.control_state import ControlState
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
    StrategyState,
    Ticker,
)
from tradetree.risk.pre_trade_inputs import pending_by_instrument

INST = Instrument(venue="okx", inst_id="BTC-USDT-SWAP", kind=InstrumentKind.SWAP, base="BTC", quote="USDT",
                  settle="USDT", contract_value=Decimal("0.01"), tick_size=Decimal("0.1"),
                  lot_size=Decimal("0.01"), min_size=Decimal("0.01"))


class RecordingSink:
    """Stands in for the gateway: records the order in Redis as the gateway does, then acks it."""

    def __init__(self, store: RedisStore, clock: ManualClock) -> None:
        self.store, self.clock, self.intents, self.deadlines = store, clock, [], []

    async def submit_order(self, intent: OrderIntent, not_after_ms: int | None = None) -> Order:
        self.intents.append(intent)
        self.deadlines.append(not_after_ms)
        order = Order.from_intent(intent, now_ms=self.clock.now_ms())
        await self.store.record_order(order)
        return await self.store.update_order(order.transition(OrderState.LIVE, now_ms=self.clock.now_ms() + 1))


def _config(**params):
    p = {"window_bars": 3, "entry_z": 1.0, "exit_z": 0.1, "stop_z": 5.0, "size": "1"}
    p.update(params)
    return StrategyConfig.model_validate({"class": "MeanReversion", "version": "v1", "venue": "okx",
                                          "symbols": ["BTC-USDT-SWAP"], "bar_interval_ms": 1000, "params": p})


@pytest.fixture
async def env():
    server = fakeredis.FakeServer()
    clock = ManualClock(start_ms=1_000_000)
    store = RedisStore(fakeredis.FakeAsyncRedis(server=server), "t")
    host = StrategyHost(_config(), redis_url="unused", namespace="t", sink=None, clock=clock)
    host.store = store
    host.control = ControlState(store.client, "t")
    host.sink = RecordingSink(store, clock)
    yield host, store, clock
    await store.client.aclose()


async def _feed(host, clock, prices):
    sent = []
    for px in prices:
        clock.advance(1.0)
        sent += await host.on_ticker(Ticker(venue="okx", inst_id="BTC-USDT-SWAP", ts_ms=clock.now_ms(),
                                            last=Decimal(px)))
    return sent


async def test_never_verified_positions_refuse_every_order(env):
    host, store, clock = env
    await host.start()
    await _feed(host, clock, [100, 101, 100, 101, 80, 80])
    assert host.sink.intents == []
    assert host.denials >= 1, host.last_denial
    assert any("verif" in r for r in host.last_denial), host.last_denial


async def test_fresh_state_lets_the_entry_through_once(env):
    host, store, clock = env
    await host.start()
    await host.control.mark_verified("okx", clock.now_ms() + 10_000)
    await _feed(host, clock, [100, 101, 100, 101, 80, 80, 79])
    assert len(host.sink.intents) == 1  # the live order counts as exposure: no second entry
    assert host.sink.intents[0].side is Side.BUY


async def test_orders_go_out_with_the_admission_deadline(env):
    # The gateway never sends an order whose turn comes after this: a submission that timed out
    # here is then in Redis or never sent (see RayGatewaySink).
    host, store, clock = env
    await host.start()
    await host.control.mark_verified("okx", clock.now_ms() + 10_000)
    sent = await _feed(host, clock, [100, 101, 100, 101, 80, 80, 79])
    assert len(sent) == 1
    assert host.sink.deadlines == [sent[0].created_ms + int(ORDER_ADMISSION_SECS * 1000)]


async def test_filled_order_whose_fill_never_arrived_still_counts_as_exposure():
    order = Order(client_order_id="a", strategy_id="S", venue="okx", inst_id="X", side=Side.SELL,
                  type=OrderType.MARKET, size=Decimal(2), state=OrderState.FILLED, filled_size=Decimal(2),
                  created_ms=1, updated_ms=2)
    assert pending_by_instrument([(order, Decimal(0))]) == {"X": Decimal(-2)}
    assert pending_by_instrument([(order, Decimal(2))]) == {}
    canceled = order.model_copy(update={"state": OrderState.CANCELED, "filled_size": Decimal(1)})
    assert pending_by_instrument([(canceled, Decimal(1))]) == {}
    rejected = order.model_copy(update={"state": OrderState.REJECTED, "filled_size": Decimal(0)})
    assert pending_by_instrument([(rejected, Decimal(0))]) == {}


async def test_context_reads_positions_applied_by_any_layer(env):
    host, store, clock = env
    await host.start()
    order = Order.from_intent(OrderIntent(strategy_id=host.id, venue="okx", inst_id="BTC-USDT-SWAP",
                                          side=Side.BUY, size=Decimal(3)), now_ms=clock.now_ms())
    await store.record_order(order)
    await store.apply_fill(Fill(venue="okx", inst_id="BTC-USDT-SWAP", trade_id="t1",
                                client_order_id=order.client_order_id, side=Side.BUY, price=Decimal(100),
                                size=Decimal(1), ts_ms=clock.now_ms(), layer=FillLayer.POLL), INST)
    ctx = await host.context()
    assert ctx.positions == {"BTC-USDT-SWAP": Decimal(1)}
    assert ctx.pending == {"BTC-USDT-SWAP": Decimal(2)}


async def test_supervisor_release_does_not_override_a_risk_pause(env):
    host, store, clock = env
    host.start_paused = True
    await host.start()
    assert await host.state() is StrategyState.PAUSED
    assert await host.resume() is True  # the supervisor's own hold is released
    await host.pause("5 consecutive rejections", source="risk")
    await host.pause("supervisor StrategySupervisor: held paused")  # a restart's hold must not mask it
    assert await host.resume() is False
    assert await host.state() is StrategyState.PAUSED
    assert await host.operator_resume() is True
    assert await host.state() is StrategyState.RUNNING


async def test_restart_keeps_a_pause_it_cannot_explain(env):
    host, store, clock = env
    await store.set_strategy_state(host.id, StrategyState.PAUSED.value)  # e.g. risk paused, actor was dead
    host.start_paused = True
    await host.start()
    assert await host.resume() is False
    assert (await host.control.strategy_pause(host.id))["source"] == "unknown"


async def test_killed_and_winding_down_are_never_resumed_by_start(env):
    host, store, clock = env
    await store.set_strategy_state(host.id, StrategyState.WINDING_DOWN.value)
    await host.start()
    assert await host.state() is StrategyState.WINDING_DOWN
    await host.pause("x")
    assert await host.state() is StrategyState.WINDING_DOWN


def _kill_switch_writes_meanwhile(host, store, state):
    """Make the kill switch write ``state`` between the host's read of the state and its write."""
    clear = host.control.clear_strategy_pause

    async def clear_then_kill(strategy_id):
        await clear(strategy_id)
        await store.set_strategy_state(strategy_id, state)

    host.control.clear_strategy_pause = clear_then_kill


@pytest.mark.parametrize("resume", ["resume", "operator_resume"])
async def test_a_resume_racing_the_kill_switch_never_overwrites_winding_down(env, resume):
    host, store, clock = env
    host.start_paused = True
    await host.start()
    _kill_switch_writes_meanwhile(host, store, StrategyState.WINDING_DOWN)
    assert await getattr(host, resume)() is False
    assert await host.state() is StrategyState.WINDING_DOWN


async def test_a_start_racing_the_kill_switch_never_overwrites_killed(env):
    host, store, clock = env
    _kill_switch_writes_meanwhile(host, store, StrategyState.KILLED)
    await host.start()
    assert await host.state() is StrategyState.KILLED


async def test_a_pause_racing_the_kill_switch_never_overwrites_winding_down(env):
    host, store, clock = env
    await host.start()
    set_pause = host.control.set_strategy_pause

    async def record_then_kill(strategy_id, *args):
        await set_pause(strategy_id, *args)
        await store.set_strategy_state(strategy_id, StrategyState.WINDING_DOWN)

    host.control.set_strategy_pause = record_then_kill
    await host.pause("operator says stop", source="operator")
    assert await host.state() is StrategyState.WINDING_DOWN


async def test_strategy_cancels_are_carried_out_even_while_paused(env):
    host, store, clock = env
    canceled = []

    async def cancel_order(coid):
        canceled.append(coid)
        order = await store.get_order(coid)
        return await store.update_order(order.transition(OrderState.CANCELED, now_ms=clock.now_ms() + 5))

    host.sink.cancel_order = cancel_order
    await host.start()
    resting = Order.from_intent(OrderIntent(strategy_id=host.id, venue="okx", inst_id="BTC-USDT-SWAP",
                                            side=Side.BUY, type=OrderType.POST_ONLY, size=Decimal(1),
                                            price=Decimal(90)), now_ms=clock.now_ms())
    await store.record_order(resting)
    seen = []
    host.strategy.cancels = lambda: [resting.client_order_id] if not canceled else []
    host.strategy.on_order_update = seen.append
    await host.pause("operator says stop", source="operator")
    await _feed(host, clock, [100, 101, 102])
    assert canceled == [resting.client_order_id]
    assert seen[-1].state is OrderState.CANCELED


async def test_a_fill_applied_between_the_reads_is_never_missed(env, monkeypatch):
    # The fill of the whole order lands right after one of the two reads: read positions first and
    # it is in neither (not yet in the position, no longer pending); read orders first and it is in
    # both at worst. The strategy must never see room that is not there.
    host, store, clock = env
    await host.start()
    order = Order.from_intent(OrderIntent(strategy_id=host.id, venue="okx", inst_id="BTC-USDT-SWAP",
                                          side=Side.BUY, size=Decimal(3)), now_ms=clock.now_ms())
    await store.record_order(order)
    fill = Fill(venue="okx", inst_id="BTC-USDT-SWAP", trade_id="t1", client_order_id=order.client_order_id,
                side=Side.BUY, price=Decimal(100), size=Decimal(3), ts_ms=clock.now_ms(), layer=FillLayer.WS)
    landed = []
    for name in ("positions", "open_orders_with_applied"):
        real = getattr(store, name)

        async def hooked(*args, _real=real, **kwargs):
            result = await _real(*args, **kwargs)
            if not landed:
                landed.append((await store.apply_fill(fill, INST)).applied)
            return result

        monkeypatch.setattr(store, name, hooked)
    ctx = await host.context()
    assert landed == [True]
    seen = ctx.positions.get("BTC-USDT-SWAP", Decimal(0)) + ctx.pending.get("BTC-USDT-SWAP", Decimal(0))
    assert seen >= 3, ctx
