"""The REST poll cycle's plan around ``reconciliation``'s decisions, pure.

``reconciliation`` decides what the venue's answers mean; this module decides
the rest of a cycle, over plain snapshots, so the actor only does the I/O:

- ``poll_instruments``: whose trade history is fetched (configured ones and
  those of tracked orders: an order on an unconfigured instrument still gets
  its fills);
- ``cursor_ms_of`` and ``cursor_to_write``: the cursor rule end to end (how
  far it moves after a fetch, and where a first cycle without fills starts it);
- ``untrack_now``: the untrack guard's last step (below);
- ``targeted_fetch_since``: where the fill-health layer's fetch of one
  order's fills starts (``plan_fills`` with the order picks them);
- ``PollOutcome``: what one cycle did.

The untrack guard, whole: ``plan_orders`` only proposes orders the poller
itself saw terminal at the venue whose applied fills add up; ``untrack_now``
keeps of those only the ones whose snapshot *this cycle wrote or read* is
final, and none whose write failed. Nothing the WS path does reaches it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tradetree.core import Fill, Order
from tradetree.execution.reconciliation import advance_cursor

__all__ = [
    "PollOutcome",
    "poll_instruments",
    "cursor_ms_of",
    "cursor_to_write",
    "untrack_now",
    "targeted_fetch_since",
]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class PollOutcome(BaseModel):
    """What one poll cycle did. ``ok``: every fetch and write succeeded (the venue was verified)."""

    model_config = _FROZEN

    started_ms: int
    ok: bool
    fills_seen: int = 0
    fills_applied: int = 0
    fills_duplicate: int = 0
    orders_checked: int = 0
    orders_updated: tuple[str, ...] = ()
    untracked: tuple[str, ...] = ()
    decisions: dict[str, str] = Field(default_factory=dict)
    anomalies: dict[str, str] = Field(default_factory=dict)
    errors: tuple[str, ...] = ()


def poll_instruments(configured: Iterable[str], orders: Iterable[Order]) -> tuple[str, ...]:
    """The instruments whose fills a cycle fetches, sorted: configured ones and every tracked order's."""
    return tuple(sorted(set(configured) | {o.inst_id for o in orders}))


def cursor_ms_of(record: Mapping[str, Any] | None) -> int | None:
    """The cursor time in a stored cursor record (None: no cursor yet)."""
    if not record or "ts_ms" not in record:
        return None
    return int(record["ts_ms"])


def cursor_to_write(
    cursor_ms: int | None, planned: Sequence[Fill], stored_keys: Iterable[str], *, since_ms: int, overlap_ms: int
) -> int | None:
    """The cursor to store after a fetch from ``since_ms``, or None when it stays as it is.

    It moves as ``advance_cursor`` allows (past stored fills only, never
    backwards). A first cycle that moved nothing starts it where the fetch
    started plus the overlap, so a restart later never re-reads history older
    than the first cycle.
    """
    new_cursor = advance_cursor(cursor_ms, planned, stored_keys)
    if new_cursor is None and cursor_ms is None:
        new_cursor = since_ms + overlap_ms
    if new_cursor is None or new_cursor == cursor_ms:
        return None
    return new_cursor


def untrack_now(proposed: Iterable[str], snapshots: Mapping[str, Order], failed_writes: Iterable[str]) -> tuple[str, ...]:
    """The orders that leave the polling set now, of those ``plan_orders`` proposed.

    ``snapshots``: each order's snapshot as this cycle left it (written, or read
    when nothing was written); ``failed_writes``: orders whose write failed or
    lost a race this cycle. An order whose stored snapshot is not final, or
    whose state this cycle could not settle, stays tracked for the next cycle.
    """
    failed = set(failed_writes)
    return tuple(
        coid for coid in proposed
        if coid not in failed and (snapshot := snapshots.get(coid)) is not None and snapshot.state.is_terminal
    )


def targeted_fetch_since(order: Order, overlap_ms: int) -> int:
    """Where a targeted fetch of ``order``'s fills starts: its creation less the overlap, at least 0."""
    return max(order.created_ms - overlap_ms, 0)
