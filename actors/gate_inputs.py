"""Reading the freshness gate's inputs from the store, for the hosts that run the gate.

The verdict is ``risk.freshness_gate.check``'s (pure); this is the I/O in front
of it. It never raises: inputs that cannot be read come back as
``GateInputs.unknown`` reasons, so the gate refuses (fail closed).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from tradetree.core import ControlState, StoreError, StoreUnavailable, StrategyState
from tradetree.risk import GateInputs, unknown_inputs, unknown_reason

__all__ = ["GateStore", "read_gate_inputs"]

log = logging.getLogger(__name__)


class GateStore(Protocol):
    """The part of ``core.store.RedisStore`` the gate reads."""

    async def strategy_state(self, strategy_id: str) -> StrategyState | None: ...

    async def kill_flag(self) -> str | None: ...


async def read_gate_inputs(
    store: GateStore,
    control_state: ControlState,
    venue: str,
    strategy_id: str,
    last_market_data_ms: int | None,
    now_ms: int,
) -> GateInputs:
    """Read the gate's inputs from Redis. Raises nothing (but lets cancellation through).

    When Redis cannot be read the result carries
    ``"state unknown: Redis unavailable"`` (or the error) in ``unknown``, so
    ``check`` refuses: fail closed.
    """
    try:
        state, kill_flag, control = await asyncio.gather(
            store.strategy_state(strategy_id), store.kill_flag(), control_state.snapshot(venue)
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
    )
