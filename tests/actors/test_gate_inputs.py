"""Reading the freshness gate's inputs from the store: what it reads, and failing closed."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tradetree.actors.gate_inputs import read_gate_inputs
from tradetree.core.control_state import ControlState
from tradetree.core.errors import StoreError, StoreUnavailable
from tradetree.core.store import RedisStore
from tradetree.core.types import OrderIntent, Side
from tradetree.risk.config import RiskConfig
from tradetree.risk.freshness_gate import GATE_STATE_UNKNOWN_REDIS, check

NOW = 1_700_000_000_000
CFG = RiskConfig(max_verification_age_secs=10, max_market_data_age_secs=5)


def _intent(**kw):
    base = dict(strategy_id="S1", venue="okx", inst_id="BTC-USDT-SWAP", side=Side.BUY, size=Decimal(1))
    base.update(kw)
    return OrderIntent(**base)


async def test_read_gate_inputs_from_redis(fake_redis, namespace):
    store, control = RedisStore(fake_redis, namespace), ControlState(fake_redis, namespace)
    await store.set_strategy_state("S1", "RUNNING")
    await control.mark_verified("okx", NOW - 2_000)
    inputs = await read_gate_inputs(store, control, "okx", "S1", NOW - 100, NOW)
    assert inputs.unknown == () and inputs.strategy_state == "RUNNING" and inputs.kill_flag is None
    assert check(_intent(), inputs, CFG) == []

    await store.set_kill_flag("operator", NOW)
    await control.set_breaker("strategy:S1:flip", "flipped", NOW)
    inputs = await read_gate_inputs(store, control, "okx", "S1", NOW - 100, NOW)
    assert inputs.kill_flag == "operator"
    reasons = check(_intent(), inputs, CFG)
    assert len(reasons) == 2 and "kill flag" in reasons[0] + reasons[1]


async def test_another_strategys_garbled_state_refuses_only_that_strategy(fake_redis, namespace):
    # One bad entry in the states hash used to make every strategy's gate read fail (all refused).
    store, control = RedisStore(fake_redis, namespace), ControlState(fake_redis, namespace)
    await store.set_strategy_state("S1", "RUNNING")
    await fake_redis.hset(f"{namespace}:strategy_states", "S2", "paused")  # not a StrategyState
    await control.mark_verified("okx", NOW - 2_000)
    inputs = await read_gate_inputs(store, control, "okx", "S1", NOW - 100, NOW)
    assert inputs.unknown == () and check(_intent(), inputs, CFG) == []
    theirs = await read_gate_inputs(store, control, "okx", "S2", NOW - 100, NOW)
    assert theirs.unknown and check(_intent(strategy_id="S2"), theirs, CFG)  # fail closed for S2 itself


class _FailingStore:
    def __init__(self, exc):
        self.exc = exc

    async def strategy_state(self, strategy_id):
        raise self.exc

    async def kill_flag(self):
        return None


@pytest.mark.parametrize(
    "exc, expected",
    [
        (StoreUnavailable("down"), GATE_STATE_UNKNOWN_REDIS),
        (StoreError("WRONGTYPE"), "state unknown: WRONGTYPE"),
        (RuntimeError("bug"), "state unknown: RuntimeError: bug"),
    ],
)
async def test_read_gate_inputs_raises_nothing_and_fails_closed(fake_redis, namespace, exc, expected):
    inputs = await read_gate_inputs(_FailingStore(exc), ControlState(fake_redis, namespace), "okx", "S1",
                                    NOW, NOW)
    assert inputs.unknown == (expected,)
    assert check(_intent(), inputs, CFG) == [expected]


async def test_read_gate_inputs_with_redis_down(namespace):
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    client = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    try:
        inputs = await read_gate_inputs(RedisStore(client, namespace), ControlState(client, namespace),
                                        "okx", "S1", NOW, NOW)
    finally:
        await client.aclose()
    assert check(_intent(), inputs, CFG) == [GATE_STATE_UNKNOWN_REDIS]
