"""Execution-side reconciliation logic, pure and testable without Ray or I/O.

- ``reconciliation``: the REST poller's decisions (fills to apply, cursor,
  order snapshots, which orders leave the polling set) and ``ReconcilerConfig``.
- ``fill_health``: order status vs applied fills, and whether fills flow on the WS.
- ``drift``: venue positions vs the sum of Redis positions.
- ``canary``: the net-zero round trip that proves the WS fill path works
  again before a fill-health pause is lifted.

``actors.reconciler`` runs them on their timers.
"""

# The folder sits at the repository root but installs as tradetree.execution; loading it
# under a second name would give every class and module-level state two copies.
if __name__ != "tradetree.execution":
    raise ImportError(f"import tradetree.execution, not {__name__}")

from tradetree.execution.canary import (
    CANARY_ORDER_PREFIX,
    CANARY_STRATEGY_ID,
    CanaryOutcome,
    CanarySchedule,
    CanaryVerdict,
    LeftoverClose,
    canary_active,
    canary_instrument,
    canary_size,
    first_leg_side,
    judge,
    leftover_close,
)
from tradetree.execution.drift import DriftCheck, DriftDetector, InstrumentDrift, expected_positions, in_flight_fills
from tradetree.execution.fill_health import (
    WS_FLOW_KEY,
    FillGap,
    FillHealthAction,
    FillHealthActionKind,
    FillHealthMonitor,
    OrderFillObservation,
    WsFlowStatus,
)
from tradetree.execution.reconciliation import (
    NEVER_REACHED_VENUE,
    LookupKind,
    OrderDecision,
    OrderLookup,
    OrderPlan,
    ReconcilerConfig,
    TrackedOrder,
    advance_cursor,
    fetch_since_ms,
    plan_orders,
    plan_poll_fills,
)

__all__ = [
    "CANARY_ORDER_PREFIX",
    "CANARY_STRATEGY_ID",
    "NEVER_REACHED_VENUE",
    "WS_FLOW_KEY",
    "CanaryOutcome",
    "CanarySchedule",
    "CanaryVerdict",
    "LeftoverClose",
    "DriftCheck",
    "DriftDetector",
    "FillGap",
    "FillHealthAction",
    "FillHealthActionKind",
    "FillHealthMonitor",
    "InstrumentDrift",
    "LookupKind",
    "OrderDecision",
    "OrderFillObservation",
    "OrderLookup",
    "OrderPlan",
    "ReconcilerConfig",
    "TrackedOrder",
    "WsFlowStatus",
    "advance_cursor",
    "canary_active",
    "canary_instrument",
    "canary_size",
    "expected_positions",
    "fetch_since_ms",
    "first_leg_side",
    "in_flight_fills",
    "judge",
    "leftover_close",
    "plan_orders",
    "plan_poll_fills",
]
