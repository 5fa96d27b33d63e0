"""Reading the gates' inputs from the store: the freshness gate's (strategy hosts) and the gateway's.

The verdicts are ``risk.freshness_gate.check``'s and
``execution.strategy_order_refusals`` / ``wind_down_refusals``' (pure); this
is the I/O in front of them. Neither reader raises: inputs that cannot be read
come back as ``unknown`` reasons, so the gate refuses (fail closed).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Protocol

from tradetree.core import (
    ROOT_HEARTBEAT_KEY,
    ControlState,
    RedisKeys,
    StoreError,
    StoreUnavailable,
    StrategyState,
    as_text,
    redis_call,
)
from tradetree.execution import GatewayGateInputs
from tradetree.risk import GateInputs, RootLatch, parse_heartbeat_ms, unknown_inputs, unknown_reason

__all__ = ["GateStore", "read_gate_inputs", "read_gateway_gate"]

log = logging.getLogger(__name__)


class GateStore(Protocol):
    """The part of ``core.store.RedisStore`` the gate reads."""

    async def strategy_state(self, strategy_id: str) -> StrategyState | None: ...

    async def kill_flag(self) -> str | None: ...

    async def heartbeat_text(self, component: str) -> str | None: ...  # only read with a ``RootLatch``


async def read_gate_inputs(
    store: GateStore,
    control_state: ControlState,
    venue: str,
    strategy_id: str,
    last_market_data_ms: int | None,
    now_ms: int,
    *,
    root_latch: RootLatch | None = None,
) -> GateInputs:
    """Read the gate's inputs from Redis. Raises nothing (but lets cancellation through).

    When Redis cannot be read the result carries
    ``"state unknown: Redis unavailable"`` (or the error) in ``unknown``, so
    ``check`` refuses: fail closed.

    With ``root_latch`` (the host's, kept across orders) the root supervisor's
    heartbeat is read too, in the same gather, and the check on it is armed
    once the latch has seen it (``risk.RootLatch`` says why). Without one the
    root is not watched (hosts built outside a tree).
    """
    async def root_heartbeat() -> str | None:
        return None if root_latch is None else await store.heartbeat_text(ROOT_HEARTBEAT_KEY)

    try:
        state, kill_flag, control, root_raw = await asyncio.gather(
            store.strategy_state(strategy_id), store.kill_flag(), control_state.snapshot(venue), root_heartbeat()
        )
    except Exception as exc:
        if isinstance(exc, StoreUnavailable):
            log.warning("freshness gate: %s", exc)
        elif not isinstance(exc, StoreError):
            log.exception("freshness gate: reading inputs failed")
        return unknown_inputs(now_ms, strategy_id, last_market_data_ms, unknown_reason(exc))
    return GateInputs(
        now_ms=now_ms,
        strategy_id=strategy_id,
        strategy_state=state,
        kill_flag=kill_flag,
        control=control,
        last_market_data_ms=last_market_data_ms,
        root_heartbeat_ms=parse_heartbeat_ms(root_raw),
        root_armed=root_latch is not None and root_latch.observe(root_raw is not None),
    )


async def read_gateway_gate(client: Any, namespace: str, venue: str, strategy_id: str, *,
                            now_ms: int = 0, root_latch: RootLatch | None = None) -> GatewayGateInputs:
    """Read what the gateway's gate needs for one order of ``strategy_id`` on ``venue``: one pipeline.

    The strategy's state, the kill flag, the venue's pauses and the root
    supervisor's heartbeat, in one round trip (the gateway reads this for
    every order). Any other failure (a Redis error, a stored value that does
    not parse) comes back as ``unknown``, which refuses the order (fail
    closed); a root heartbeat that does not parse is no heartbeat (it
    refuses opening risk, never a wind-down clip). ``root_latch`` (the
    gateway's, kept across orders) arms the root check once it has seen a
    root heartbeat (``risk.RootLatch``); without one the root is not judged.
    ``now_ms`` is stamped on the result for that check.

    Raises:
        StoreUnavailable: Redis does not answer. The gateway's contract for that
            case stands: the order is neither recorded nor sent, and the caller
            learns it from this error.
    """
    keys = RedisKeys(namespace)
    try:
        pipe = client.pipeline(transaction=False)
        pipe.hget(keys.strategy_states, strategy_id)
        pipe.hgetall(keys.kill)  # set is set, whatever its fields say
        pipe.hgetall(keys.ctl_venue_pause(venue))
        pipe.hget(keys.heartbeats, ROOT_HEARTBEAT_KEY)
        state_raw, kill, pauses_raw, root_raw = await redis_call(pipe.execute(), "the gateway's gate")
        state = None if state_raw is None else StrategyState(as_text(state_raw))
        kill_flag = as_text(kill.get(b"reason", kill.get("reason", b""))) if kill else None
        pauses = {as_text(k): str(json.loads(as_text(v)).get("reason", "")) for k, v in pauses_raw.items()}
    except StoreUnavailable:
        raise
    except Exception as exc:
        if not isinstance(exc, StoreError):
            log.exception("gateway gate: reading inputs failed")
        return GatewayGateInputs(strategy_id=strategy_id, unknown=unknown_reason(exc).removeprefix("state unknown: "))
    return GatewayGateInputs(strategy_id=strategy_id, strategy_state=state,
                             kill_flag=kill_flag, venue_pauses=pauses, now_ms=now_ms,
                             root_heartbeat_ms=parse_heartbeat_ms(root_raw),
                             root_armed=root_latch is not None and root_latch.observe(root_raw is not None))
