"""Risk decisions: the freshness gate, limits, the duplicate-close guard, the monitor's rules,
today's P&L and the kill switch's wind-down planner.

Everything here is pure: plain functions and small state machines over
snapshots the caller reads, no Redis, Ray or venue I/O. The hosts do the
reading and the acting: ``actors.risk_monitor`` runs the rules on a timer,
``actors.kill_switch`` carries out the wind-down ``kill_switch.plan_wind_down``
plans (deciding as ``kill_run`` says), ``actors.gate_inputs`` reads the
gate's inputs, and ``core.store.RedisStore`` keeps the kill records and the
day P&L baselines.

In the order path (``actors.strategy_host``), call the gate first and the limits second::

    inputs = await read_gate_inputs(store, control_state, venue, strategy_id,
                                    last_market_data_ms, now_ms)
    reasons = freshness_gate.check(intent, inputs, cfg) or pre_trade.check(intent, pre_inputs, cfg)
    if reasons:
        return deny(intent, reasons, ts_ms=now_ms, checked_by=host_name)
"""

# The folder sits at the repository root but installs as tradetree.risk; loading it
# under a second name would give every class and module-level state two copies.
if __name__ != "tradetree.risk":
    raise ImportError(f"import tradetree.risk, not {__name__}")

from tradetree.risk.config import RiskConfig, instrument_key
from tradetree.risk.freshness_gate import GateInputs, applicable_breakers, deny, unknown_inputs, unknown_reason
from tradetree.risk.pre_trade import PreTradeInputs, duplicate_close_reasons, in_flight_size, limit_reasons
from tradetree.risk.rules import (
    GLOBAL_LOSS,
    GLOBAL_NOTIONAL,
    ExposureMonitor,
    FlipDetector,
    LossMonitor,
    RejectionStreak,
    Trip,
    daily_pnl_by_strategy,
    strategy_breaker,
)

__all__ = [
    "GLOBAL_LOSS",
    "GLOBAL_NOTIONAL",
    "ExposureMonitor",
    "FlipDetector",
    "GateInputs",
    "LossMonitor",
    "PreTradeInputs",
    "RejectionStreak",
    "RiskConfig",
    "Trip",
    "applicable_breakers",
    "daily_pnl_by_strategy",
    "deny",
    "duplicate_close_reasons",
    "in_flight_size",
    "instrument_key",
    "limit_reasons",
    "strategy_breaker",
    "unknown_inputs",
    "unknown_reason",
]
