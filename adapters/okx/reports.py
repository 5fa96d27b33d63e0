"""The venue's view of one order, and how it moves tradetree's own record forward.

``VenueOrderReport`` is venue-neutral (a Binance adapter produces the same
model); it lives here until a second venue needs it and is re-exported from
``adapters``. ``apply_report`` is pure: the gateway's WS path, its submit path
and the fill reconciler all use it, so they agree on what "newer" means.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from tradetree.core import Order, OrderState, Side, VenueProtocolError

__all__ = ["VenueOrderReport", "apply_report", "state_progress"]


class VenueOrderReport(BaseModel):
    """One order as the venue reports it (REST ``trade/order`` or a WS ``orders`` row).

    Sizes are in venue units (base for spot, contracts for swaps).
    ``filled_size`` and ``avg_price`` are cumulative; ``avg_price`` is None
    while nothing has filled. ``venue_state`` keeps the venue's own spelling
    (e.g. ``mmp_canceled``) for diagnostics.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    venue: str
    inst_id: str
    venue_order_id: str
    client_order_id: str | None = None
    side: Side
    state: OrderState
    venue_state: str
    size: Decimal
    filled_size: Decimal
    avg_price: Decimal | None = None
    updated_ms: int


_PROGRESS: dict[OrderState, int] = {
    OrderState.PENDING_NEW: 0,
    OrderState.LIVE: 1,
    OrderState.PARTIALLY_FILLED: 2,
    OrderState.FILLED: 3,
    OrderState.CANCELED: 3,
    OrderState.REJECTED: 3,
}


def state_progress(state: OrderState) -> int:
    """How far along its life an order in ``state`` is (0 = not acknowledged, 3 = terminal)."""
    return _PROGRESS[state]


def apply_report(order: Order, report: VenueOrderReport, *, now_ms: int) -> Order | None:
    """The order moved forward by ``report``, or None when the report adds nothing.

    Venues deliver out of order and repeat themselves, so a report is *stale*
    (ignored) when it is behind what ``order`` already holds: an earlier state
    or a smaller cumulative filled size. A stale report still teaches us the
    venue order id if we lacked it. A terminal order is never changed.
    ``updated_ms`` never goes backwards.

    Raises:
        VenueProtocolError: the report is about another order (ids disagree).
        InvalidOrderTransition: the state machine forbids the move (e.g. a
            report arriving for an order we hold as REJECTED is filtered out
            before, so this signals a real inconsistency).
    """
    if report.client_order_id is not None and report.client_order_id != order.client_order_id:
        raise VenueProtocolError(
            f"report for clOrdId {report.client_order_id!r} applied to order {order.client_order_id!r}",
            venue=report.venue,
        )
    if order.venue_order_id is not None and order.venue_order_id != report.venue_order_id:
        raise VenueProtocolError(
            f"report for ordId {report.venue_order_id!r} applied to order {order.client_order_id!r} "
            f"(ordId {order.venue_order_id!r})",
            venue=report.venue,
        )
    if order.state.is_terminal:
        return None
    stamp = max(now_ms, order.updated_ms)
    learns_id = order.venue_order_id is None
    behind = (
        _PROGRESS[report.state] < _PROGRESS[order.state] or report.filled_size < order.filled_size
    )
    if behind:
        if learns_id:
            return order.model_copy(
                update={"venue_order_id": report.venue_order_id, "updated_ms": stamp}
            )
        return None
    if report.state is order.state and report.filled_size == order.filled_size and not learns_id:
        return None
    return order.transition(
        report.state,
        now_ms=stamp,
        filled_size=report.filled_size,
        avg_fill_price=report.avg_price if report.avg_price is not None else order.avg_fill_price,
        venue_order_id=report.venue_order_id,
    )
