"""What the paper-tree tests share: waiting on a condition, and reading the tree's state from Redis.

A paper test must not depend on how fast the machine starts the tree: it
waits for the condition it needs (the strategies released, the fills applied)
with a generous bound, and the bound only decides how long a failure takes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

import pytest

from tradetree.core.store import RedisStore
from tradetree.core.types import Order, Position

T = TypeVar("T")

# How long the tree may take to release its strategies. Measured: ~15 s idle, 95 s at load 10-30
# on 2 cores; the bound is only how long a real failure takes to report.
RELEASE_TIMEOUT_SECS = 300.0
# The whole of one paper test on a busy machine: start, trading, wind-down, settle, with room.
PAPER_TEST_TIMEOUT_SECS = 1200.0
# After the wind-down, how long fills may take to reach Redis.
SETTLE_TIMEOUT_SECS = 120.0
# Each child's start bound (creation, start, probes green). Beside two CPU hogs a strategy host took
# over the 30 s default just to be created and answer start(): slow, not broken.
SUPERVISION = {"venue_startup_timeout_secs": 180.0, "child_startup_timeout_secs": 180.0}


def wait_for(predicate: Callable[[], T], timeout_secs: float, what: str | Callable[[], str], *,
             poll_secs: float = 0.25, tolerate_exceptions: bool = False, clock: Callable[[], float] = time.monotonic,
             sleep: Callable[[float], None] = time.sleep) -> T:
    """Poll ``predicate`` until it returns something truthy; return that.

    ``what`` names the condition in the failure message (a callable is
    evaluated at the time of failure, so it can say what is still missing).
    With ``tolerate_exceptions`` an exception from ``predicate`` counts as "not
    yet" (an actor or Redis being restarted under a scenario) and the failure
    message ends with the last value or exception.

    Raises:
        pytest.fail.Exception: ``timeout_secs`` passed without a truthy value.
    """
    deadline = clock() + timeout_secs
    while True:
        try:
            value = last = predicate()
        except Exception as exc:
            if not tolerate_exceptions:
                raise
            value, last = None, exc
        if value:
            return value
        if clock() >= deadline:
            tail = f"; last: {last!r}" if tolerate_exceptions else ""
            pytest.fail(f"timed out after {timeout_secs:g}s waiting for {what() if callable(what) else what}{tail}")
        sleep(poll_secs)


@dataclass(frozen=True)
class StoreView:
    """One read of the tree's state in Redis (see :func:`store_view`)."""

    positions: list[Position]
    audit: list[Any]
    open_orders: list[Order]
    states: dict[str, str]
    owners: dict[str, str | None]  # client order id -> strategy id (None: not recorded)
    events: list[Order]  # the order event stream, oldest first (only with ``events=True``)


async def _read(redis_url: str, namespace: str, coids: Iterable[str], events: bool) -> StoreView:
    store = await RedisStore.connect(redis_url, namespace)
    try:
        owners = {c: (o.strategy_id if (o := await store.get_order(c)) else None) for c in coids}
        history: list[Order] = []
        if events:
            after = "0-0"
            while batch := await store.order_events(after_id=after, count=5000):
                history.extend(order for _, order in batch)
                after = batch[-1][0]
        return StoreView(positions=await store.positions(), audit=await store.audit_entries(),
                         open_orders=await store.open_orders(), states=await store.strategy_states(),
                         owners=owners, events=history)
    finally:
        await store.close()


def store_view(redis_url: str, namespace: str, *, coids: Iterable[str] = (), events: bool = False) -> StoreView:
    """Read positions, the audit stream, tracked orders, strategy states (and the owners of ``coids``)."""
    return asyncio.run(_read(redis_url, namespace, list(coids), events))


def wait_until_released(redis_url: str, namespace: str, strategy_ids: Iterable[str],
                        timeout_secs: float = RELEASE_TIMEOUT_SECS, *, tolerate_exceptions: bool = False) -> None:
    """Wait until Redis says every one of ``strategy_ids`` is RUNNING (the supervisor released it).

    ``tolerate_exceptions``: a failed read counts as "not yet" (see :func:`wait_for`).
    """
    wanted = list(strategy_ids)
    last: dict[str, str] = {}

    def released() -> bool:
        last.update(store_view(redis_url, namespace).states)
        return all(last.get(sid) == "RUNNING" for sid in wanted)

    wait_for(released, timeout_secs, lambda: f"{wanted} to run (states {last})",
             tolerate_exceptions=tolerate_exceptions)


def settled_view(truth: dict[str, Any], view: StoreView) -> bool:
    """True when the venue has no open order, Redis tracks no live one, and every venue trade is audited."""
    live = [o for o in view.open_orders if not o.state.is_terminal]
    return not truth["open_orders"] and not live and len(view.audit) == len(truth["trades"])


def summed_positions(positions: Iterable[Position]) -> dict[str, Decimal]:
    """Redis positions summed over strategies, per instrument, flat ones left out (the venue nets them)."""
    summed: dict[str, Decimal] = {}
    for p in positions:
        summed[p.inst_id] = summed.get(p.inst_id, Decimal(0)) + p.qty
    return {k: v for k, v in summed.items() if v != 0}
