"""Reconciliation as pure functions: venue reports in, decisions out.

The REST poller of one venue runs a cycle in two phases, and this module holds
the decisions of both (no I/O, the clock is an argument):

1. **Fills.** ``plan_fills`` picks, from what the venue's trade history
   returned since the cursor, the fills to apply (tagged ``poll``), in
   canonical order. After the caller applied them, ``advance_cursor`` says how
   far the cursor may move: only past fills that were applied (or found
   already applied), never past one that failed, never backwards. Overlap is
   fine, the store dedups on ``(venue, inst_id, trade_id)``.
2. **Orders.** ``plan_orders`` takes the orders Redis tracks for the venue
   (with their applied sizes *read after phase 1*) and what the venue said
   about each one (a report, "unknown", or nothing because the lookup failed)
   and returns the order snapshots to write, the orders to untrack and the
   anomalies worth an alert.

The rule that the incident taught: an order leaves the polling set only when
the poller *itself* saw it in a terminal state at the venue **and** the fills
applied for it add up to the venue's filled size (zero for an order rejected
or canceled unfilled). A terminal snapshot written by the WS path counts for
nothing here.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tradetree.adapters.okx import VenueOrderReport, apply_report
from tradetree.core import Fill, FillLayer, InvalidOrderTransition, Order, OrderState, VenueProtocolError

__all__ = [
    "NEVER_REACHED_VENUE",
    "ReconcilerConfig",
    "TrackedOrder",
    "LookupKind",
    "OrderLookup",
    "OrderDecision",
    "OrderPlan",
    "plan_fills",
    "advance_cursor",
    "fetch_since_ms",
    "plan_orders",
]

NEVER_REACHED_VENUE = "never reached the venue"

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class ReconcilerConfig(BaseModel):
    """Timers and thresholds of one venue's ``FillReconciler``.

    Every check runs on its own timer: ``poll_interval_secs`` (fills since the
    cursor plus the status of every tracked order), ``fill_health_interval_secs``
    and ``drift_interval_secs``.

    - ``fill_gap_alert_secs``: an order whose venue status says more filled
      than the applied fills add up to, for longer than this, gets a targeted
      fetch of its fills and an alert.
    - ``gap_recurrence_count`` gaps within ``gap_recurrence_window_secs`` (or
      one that survives its targeted fetch) pause the venue.
    - ``drift_tolerance``: contracts (venue units) of venue-vs-Redis position
      difference accepted per instrument.
    - ``pending_grace_secs``: a PENDING_NEW (or REJECTED) order the venue does
      not know, older than this, is final as REJECTED "never reached the venue".
    - ``cursor_overlap_secs``: each trade-history fetch starts this much
      before the cursor (venue clocks and late-recorded fills; the store dedups).
    - ``ws_flow_window_secs``: fills applied by poll/health within this window
      that the WS never delivered mark the WS fill path as not flowing (which
      alerts and pauses the venue).
    - ``poll_failure_alert_cycles``: this many failed poll cycles in a row
      raise an alert (once per outage; the first clean cycle says so).

    The **canary** (``execution.canary``): while the venue is paused by the
    fill-health layer and the REST poll is healthy, the reconciler sends a
    net-zero market round trip through its own REST client and lifts its pause
    only when the WS delivered those fills.

    - ``canary_enabled``: None (default) = on for the embedded simulator, off
      for a venue with a configured ``rest_url`` (real money: each round trip
      costs two taker fees on ``canary_size``); True/False forces it.
    - ``canary_inst_id``: the instrument traded (a swap; None = the venue's
      first configured swap). ``canary_size``: venue units (None = the
      instrument's minimum size).
    - ``canary_interval_secs``: the first round trip this long after the pause,
      then between round trips; each one whose fills did not come by the WS
      doubles it, up to ``canary_max_interval_secs``.
    - ``canary_deadline_secs``: how long one leg waits to fill, and the round
      trip waits for its fills on the WS.
    """

    model_config = _FROZEN

    poll_interval_secs: float = Field(default=2.0, gt=0)
    fill_health_interval_secs: float = Field(default=1.0, gt=0)
    fill_gap_alert_secs: float = Field(default=5.0, gt=0)
    gap_recurrence_count: int = Field(default=2, ge=1)
    gap_recurrence_window_secs: float = Field(default=60.0, gt=0)
    drift_interval_secs: float = Field(default=5.0, gt=0)
    drift_tolerance: Decimal = Field(default=Decimal(0), ge=0)
    pending_grace_secs: float = Field(default=10.0, gt=0)
    cursor_overlap_secs: float = Field(default=5.0, ge=0)
    ws_flow_window_secs: float = Field(default=120.0, gt=0)
    poll_failure_alert_cycles: int = Field(default=3, ge=1)
    canary_enabled: bool | None = None
    canary_inst_id: str | None = None
    canary_size: Decimal | None = Field(default=None, gt=0)
    canary_interval_secs: float = Field(default=5.0, gt=0)
    canary_max_interval_secs: float = Field(default=300.0, gt=0)
    canary_deadline_secs: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _canary_backoff_ordered(self) -> ReconcilerConfig:
        if self.canary_max_interval_secs < self.canary_interval_secs:
            raise ValueError("canary_max_interval_secs must be at least canary_interval_secs")
        return self


class TrackedOrder(BaseModel):
    """An order of the venue's polling set, as Redis holds it, with its applied fill total."""

    model_config = _FROZEN

    order: Order
    applied_size: Decimal = Decimal(0)

    @property
    def client_order_id(self) -> str:
        return self.order.client_order_id


class LookupKind(str, enum.Enum):
    FOUND = "found"  # the venue returned the order
    UNKNOWN = "unknown"  # the venue answered that it does not know the order
    FAILED = "failed"  # the lookup itself failed: nothing is known


class OrderLookup(BaseModel):
    """What one status lookup of a tracked order returned."""

    model_config = _FROZEN

    client_order_id: str
    kind: LookupKind
    report: VenueOrderReport | None = None
    error: str = ""

    @classmethod
    def found(cls, report: VenueOrderReport, client_order_id: str) -> OrderLookup:
        return cls(client_order_id=client_order_id, kind=LookupKind.FOUND, report=report)

    @classmethod
    def unknown(cls, client_order_id: str) -> OrderLookup:
        return cls(client_order_id=client_order_id, kind=LookupKind.UNKNOWN)

    @classmethod
    def failed(cls, client_order_id: str, error: str) -> OrderLookup:
        return cls(client_order_id=client_order_id, kind=LookupKind.FAILED, error=error)


class OrderDecision(str, enum.Enum):
    """Why an order stays tracked or leaves (one per tracked order, for stats and logs)."""

    UNTRACK = "untrack"  # poller saw terminal, applied fills add up
    OPEN = "open"  # the venue still works the order
    AWAITING_FILLS = "awaiting_fills"  # terminal at the venue, applied fills short of filled size
    OVER_APPLIED = "over_applied"  # applied fills exceed the venue's filled size
    PENDING_GRACE = "pending_grace"  # the venue does not know it yet, within the grace period
    UNKNOWN_AT_VENUE = "unknown_at_venue"  # acknowledged once, now unknown to the venue
    LOOKUP_FAILED = "lookup_failed"  # no answer this cycle
    INCONSISTENT = "inconsistent"  # the report contradicts the record (ids, state machine)


class OrderPlan(BaseModel):
    """The order-phase decisions of one poll cycle.

    ``updates`` are snapshots to write (``RedisStore.update_order``);
    ``untrack`` the client order ids to remove from the polling set, each
    valid only once its update (if any) was stored; ``decisions`` one entry
    per tracked order; ``anomalies`` coid -> human-readable problem, for alerts.
    """

    model_config = _FROZEN

    updates: tuple[Order, ...] = ()
    untrack: tuple[str, ...] = ()
    decisions: dict[str, OrderDecision] = Field(default_factory=dict)
    anomalies: dict[str, str] = Field(default_factory=dict)


# -- phase 1: fills ------------------------------------------------------------------------


def plan_fills(venue: str, fills: Iterable[Fill], *, layer: FillLayer = FillLayer.POLL,
               order: Order | None = None) -> tuple[Fill, ...]:
    """The fills of ``venue`` to apply, tagged ``layer``, oldest first, each trade once.

    Fills of another venue are dropped (a mixed-up list is a caller bug and
    must not touch this venue's positions). Ordering is (ts_ms, trade_id);
    a trade listed twice (pagination overlap) appears once. With an ``order``
    (the fill-health layer's targeted fetch), only that order's fills: by
    client order id, or by venue order id once the venue assigned one (a fill
    pushed without our id still counts).
    """
    unique: dict[str, Fill] = {}
    for fill in fills:
        if fill.venue != venue or (order is not None and not _of_order(fill, order)):
            continue
        tagged = fill if fill.layer is layer else fill.model_copy(update={"layer": layer})
        unique.setdefault(tagged.key, tagged)
    return tuple(sorted(unique.values(), key=lambda f: (f.ts_ms, f.trade_id)))


def _of_order(fill: Fill, order: Order) -> bool:
    return fill.client_order_id == order.client_order_id or (
        order.venue_order_id is not None and fill.venue_order_id == order.venue_order_id
    )


def advance_cursor(cursor_ms: int | None, planned: Sequence[Fill], stored_keys: Iterable[str]) -> int | None:
    """The new cursor (ms, inclusive) of one instrument after applying ``planned``.

    ``stored_keys`` holds the ``Fill.key`` of every planned fill the store
    accepted (applied now or found applied before). The cursor moves to the
    timestamp of the first planned fill that was *not* stored (so it is
    fetched again), or, when all were stored, to the newest planned fill.
    It never moves backwards, and stays put when nothing was planned.
    """
    stored = set(stored_keys)
    ordered = sorted(planned, key=lambda f: (f.ts_ms, f.trade_id))
    target: int | None = None
    for fill in ordered:
        if fill.key not in stored:
            target = fill.ts_ms
            break
        target = fill.ts_ms
    if target is None:
        return cursor_ms
    if cursor_ms is None:
        return target
    return max(cursor_ms, target)


def fetch_since_ms(
    cursor_ms: int | None, tracked: Iterable[TrackedOrder], inst_id: str, *, now_ms: int, overlap_ms: int
) -> int:
    """Where the next trade-history fetch of ``inst_id`` starts (ms, inclusive).

    With a cursor: ``overlap_ms`` before it. Without one (first cycle of a
    namespace): the oldest tracked order of the instrument, or ``now_ms``
    when none, again minus the overlap. Earlier account history is not
    tradetree's (the drift check reports a venue position it cannot explain).
    """
    if cursor_ms is not None:
        return max(cursor_ms - overlap_ms, 0)
    created = [t.order.created_ms for t in tracked if t.order.inst_id == inst_id]
    start = min([now_ms, *created])
    return max(start - overlap_ms, 0)


# -- phase 2: orders -----------------------------------------------------------------------


def plan_orders(
    tracked: Sequence[TrackedOrder],
    lookups: Mapping[str, OrderLookup],
    *,
    now_ms: int,
    pending_grace_ms: int,
) -> OrderPlan:
    """Decide, for every tracked order, the snapshot to write and whether it leaves the polling set.

    ``tracked`` must carry applied sizes read *after* this cycle's fills were
    applied. An order without an entry in ``lookups`` is treated as a failed
    lookup. Rules:

    - FOUND: the report moves the snapshot forward (``apply_report``). The
      order is untracked iff the report's state is terminal and the applied
      size equals the report's filled size.
    - UNKNOWN, order PENDING_NEW or REJECTED, created at least
      ``pending_grace_ms`` ago: final as REJECTED (a PENDING_NEW one gets
      ``reject_reason`` "never reached the venue"); untracked iff nothing
      was applied for it. Younger: kept (the submit may still be in flight).
    - UNKNOWN, order acknowledged before: kept, reported as an anomaly.
    - FAILED: kept, nothing written.
    """
    updates: list[Order] = []
    untrack: list[str] = []
    decisions: dict[str, OrderDecision] = {}
    anomalies: dict[str, str] = {}
    for item in tracked:
        order = item.order
        coid = order.client_order_id
        lookup = lookups.get(coid) or OrderLookup.failed(coid, "not looked up")
        if lookup.kind is LookupKind.FAILED:
            decisions[coid] = OrderDecision.LOOKUP_FAILED
            continue
        if lookup.kind is LookupKind.UNKNOWN:
            decision, update, problem = _decide_unknown(item, now_ms=now_ms, pending_grace_ms=pending_grace_ms)
        else:
            assert lookup.report is not None
            decision, update, problem = _decide_found(item, lookup.report, now_ms=now_ms)
        decisions[coid] = decision
        if update is not None:
            updates.append(update)
        if decision is OrderDecision.UNTRACK:
            untrack.append(coid)
        if problem:
            anomalies[coid] = problem
    return OrderPlan(updates=tuple(updates), untrack=tuple(untrack), decisions=decisions, anomalies=anomalies)


def _decide_found(
    item: TrackedOrder, report: VenueOrderReport, *, now_ms: int
) -> tuple[OrderDecision, Order | None, str]:
    order = item.order
    try:
        update = apply_report(order, report, now_ms=now_ms)
    except (VenueProtocolError, InvalidOrderTransition) as exc:
        return OrderDecision.INCONSISTENT, None, f"venue report contradicts the record: {exc}"
    problem = ""
    if order.state is OrderState.REJECTED and report.state is not OrderState.REJECTED:
        problem = (
            f"recorded REJECTED ({order.reject_reason or 'no reason'}) but the venue has it "
            f"{report.venue_state} with {report.filled_size} filled"
        )
    if not report.state.is_terminal:
        # Applied ahead of this report is normal for a working order: a WS fill
        # may land between the lookup and the applied-size read. Fill health
        # watches whether it persists.
        return OrderDecision.OPEN, update, problem
    if item.applied_size == report.filled_size:
        return OrderDecision.UNTRACK, update, problem
    if item.applied_size > report.filled_size:
        return OrderDecision.OVER_APPLIED, update, _over_applied(item, report.filled_size)
    return OrderDecision.AWAITING_FILLS, update, problem


def _decide_unknown(
    item: TrackedOrder, *, now_ms: int, pending_grace_ms: int
) -> tuple[OrderDecision, Order | None, str]:
    order = item.order
    if order.state not in (OrderState.PENDING_NEW, OrderState.REJECTED):
        return (
            OrderDecision.UNKNOWN_AT_VENUE,
            None,
            f"order is {order.state.value} in Redis but the venue does not know it",
        )
    if now_ms - order.created_ms < pending_grace_ms:
        return OrderDecision.PENDING_GRACE, None, ""
    update = None
    if order.state is OrderState.PENDING_NEW:
        update = order.transition(
            OrderState.REJECTED, now_ms=max(now_ms, order.updated_ms), reject_reason=NEVER_REACHED_VENUE
        )
    if item.applied_size != 0:
        return (
            OrderDecision.OVER_APPLIED,
            update,
            f"fills of {item.applied_size} applied to an order the venue does not know",
        )
    return OrderDecision.UNTRACK, update, ""


def _over_applied(item: TrackedOrder, filled: Decimal) -> str:
    return f"applied fills add up to {item.applied_size}, more than the venue's filled size {filled}"
