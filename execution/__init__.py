"""Execution-side reconciliation logic, pure and testable without Ray or I/O.

- ``reconciliation``: the REST poller's decisions (fills to apply, cursor,
  order snapshots, which orders leave the polling set) and ``ReconcilerConfig``.
- ``fill_health``: order status vs applied fills, and whether fills flow on the WS.
- ``drift``: venue positions vs the sum of Redis positions.

``actors.reconciler`` runs them on their timers.
"""

from execution.drift import DriftCheck, DriftDetector, InstrumentDrift, expected_positions, in_flight_fills
from execution.fill_health import (
    FillGap,
    FillHealthAction,
    FillHealthActionKind,
    FillHealthMonitor,
    OrderFillObservation,
    WsFlowStatus,
)
from execution.reconciliation import (
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
    "NEVER_REACHED_VENUE",
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
    "expected_positions",
    "fetch_since_ms",
    "in_flight_fills",
    "plan_orders",
    "plan_poll_fills",
]
