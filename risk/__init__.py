"""Pre-trade risk: the freshness gate, limits, the duplicate-close guard and the monitor's rules.

Everything here is pure (``read_gate_inputs`` aside, which only reads Redis
and never raises); the Ray shell that runs the rules on a timer is
``actors.risk_monitor``.

In the order path, call the gate first and the limits second::

    inputs = await read_gate_inputs(store, control_state, venue, strategy_id,
                                    last_market_data_ms, now_ms)
    reasons = freshness_gate.check(intent, inputs, cfg) or pre_trade.check(intent, pre_inputs, cfg)
    if reasons:
        return deny(intent, reasons, ts_ms=now_ms, checked_by="gateway")
"""

# The folder sits at the repository root but installs as tradetree.risk; loading it
# under a second name would give every class and module-level state two copies.
if __name__ != "tradetree.risk":
    raise ImportError(f"import tradetree.risk, not {__name__}")

from tradetree.risk.config import RiskConfig, instrument_key
from tradetree.risk.freshness_gate import GateInputs, applicable_breakers, deny, read_gate_inputs
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
    "read_gate_inputs",
    "strategy_breaker",
]
