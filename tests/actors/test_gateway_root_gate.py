"""While the root supervisor's heartbeat is stale, the gates refuse opening risk and let closing it through.

Against the simulator over loopback and a real Redis: the gateway reads the
root's heartbeat in its gate's round trip; once it has seen one, a stale or
vanished heartbeat refuses a strategy's opening order, while a strategy's
reduce-only close and the kill switch's clips still go. The strategy host's
reader (``read_gate_inputs``) does the same for the freshness gate.
"""

from __future__ import annotations

import pytest

from tests.actors.test_gateway_gate import control, filled, gateway, intent, store
from tests.adapters.sim_helpers import eventually
from tradetree.actors.gate_inputs import read_gate_inputs
from tradetree.core.clock import WallClock
from tradetree.core.names import ROOT_HEARTBEAT_KEY
from tradetree.core.types import OrderDenied, Side, StrategyState
from tradetree.risk.config import RiskConfig
from tradetree.risk.freshness_gate import check
from tradetree.risk.root_supervision import RootLatch

__all__ = ["control", "gateway", "store"]  # the fixtures, taken from the gateway gate's tests

pytestmark = pytest.mark.integration


def now_ms() -> int:
    return WallClock().now_ms()


async def root_heartbeat(store, age_secs: float) -> None:
    await store.heartbeat(ROOT_HEARTBEAT_KEY, now_ms() - int(age_secs * 1000))


async def root_gone(store) -> None:
    await store.client.hdel(store._keys.heartbeats, ROOT_HEARTBEAT_KEY)


async def test_a_stale_root_refuses_a_strategys_order_and_lets_closes_through(gateway, store, control, sim):
    await store.set_strategy_state("A", StrategyState.RUNNING)
    await root_heartbeat(store, 0.5)
    opened = await gateway.submit_order(intent("A", size="3"))  # fresh root: it goes
    assert not isinstance(opened, OrderDenied), opened
    await eventually(lambda: filled(store, opened), what="A's position open")

    await root_heartbeat(store, 30)  # the root went away 30 s ago
    before = sim.order_requests
    denied = await gateway.submit_order(intent("A"))
    assert isinstance(denied, OrderDenied), denied
    assert denied.checked_by == "gateway:okx"
    assert len(denied.reasons) == 1 and denied.reasons[0].startswith(
        "tree unsupervised: RootSupervisor heartbeat 30."), denied.reasons
    assert denied.reasons[0].endswith("s old (stale after 10s)")
    assert sim.order_requests == before and gateway.counters["gate_refused"] == 1

    close = await gateway.submit_order(intent("A", Side.SELL, "1", reduce_only=True))  # the strategy's own close
    assert not isinstance(close, OrderDenied), close
    await eventually(lambda: filled(store, close), what="the strategy's reduce-only close filled")

    await store.set_strategy_state("A", StrategyState.WINDING_DOWN)  # as the kill switch does
    clip = await gateway.submit_account_order(intent("A", Side.SELL, "2", reduce_only=True,
                                                     reason="kill switch wind-down"))
    assert not isinstance(clip, OrderDenied), clip
    await eventually(lambda: filled(store, clip), what="the wind-down clip filled")
    assert (await store.position("A", "okx", "BTC-USDT-SWAP")).qty == 0


async def test_a_vanished_root_refuses_and_a_fresh_one_lets_the_order_go(gateway, store, control, sim):
    await store.set_strategy_state("A", StrategyState.RUNNING)
    await root_heartbeat(store, 1)
    first = await gateway.submit_order(intent("A"))
    assert not isinstance(first, OrderDenied), first

    await root_gone(store)  # seen once: a missing heartbeat now means the root vanished
    denied = await gateway.submit_order(intent("A"))
    assert isinstance(denied, OrderDenied)
    assert denied.reasons == ("tree unsupervised: no RootSupervisor heartbeat in Redis (stale after 10s)",)

    await root_heartbeat(store, 0.2)  # Ray re-created the root
    again = await gateway.submit_order(intent("A"))
    assert not isinstance(again, OrderDenied), again
    await eventually(lambda: filled(store, again), what="the order filled once the root is back")


async def test_a_gateway_that_never_saw_a_root_heartbeat_does_not_judge_it(gateway, store, control, sim):
    await store.set_strategy_state("A", StrategyState.RUNNING)
    order = await gateway.submit_order(intent("A"))  # a tree without a heartbeating root (yet)
    assert not isinstance(order, OrderDenied), order


async def test_a_gateway_started_while_the_root_is_gone_refuses_at_once(gateway, store, control, sim):
    await store.set_strategy_state("A", StrategyState.RUNNING)
    await root_heartbeat(store, 45)  # the lost root's last value is still in the hash
    denied = await gateway.submit_order(intent("A"))
    assert isinstance(denied, OrderDenied) and denied.reasons[0].startswith("tree unsupervised: ")


async def test_the_hosts_reader_arms_on_the_root_heartbeat_and_refuses_opening_risk(store, control):
    cfg = RiskConfig(max_verification_age_secs=600, max_market_data_age_secs=60)
    await store.set_strategy_state("S1", StrategyState.RUNNING)
    now = now_ms()
    await control.mark_verified("okx", now)
    latch = RootLatch()
    buy, close = intent("S1"), intent("S1", Side.SELL, reduce_only=True)

    inputs = await read_gate_inputs(store, control, "okx", "S1", now, now, root_latch=latch)
    assert not inputs.root_armed and check(buy, inputs, cfg) == []  # no root heartbeat seen yet

    await root_heartbeat(store, 0.5)
    inputs = await read_gate_inputs(store, control, "okx", "S1", now, now_ms(), root_latch=latch)
    assert inputs.root_armed and check(buy, inputs, cfg) == []

    await root_heartbeat(store, 20)
    inputs = await read_gate_inputs(store, control, "okx", "S1", now, now_ms(), root_latch=latch)
    reasons = check(buy, inputs, cfg)
    assert len(reasons) == 1 and reasons[0].startswith("tree unsupervised: RootSupervisor heartbeat 20."), reasons
    assert check(close, inputs, cfg) == []

    await store.client.hset(store._keys.heartbeats, ROOT_HEARTBEAT_KEY, "garbled")
    inputs = await read_gate_inputs(store, control, "okx", "S1", now, now_ms(), root_latch=latch)
    assert inputs.unknown == () and inputs.root_heartbeat_ms is None
    assert check(buy, inputs, cfg) == ["tree unsupervised: no RootSupervisor heartbeat in Redis (stale after 10s)"]

    unwatched = await read_gate_inputs(store, control, "okx", "S1", now, now_ms())  # no latch: not judged
    assert check(buy, unwatched, cfg) == []
