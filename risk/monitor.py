"""What the risk monitor decides around its rules, as pure functions (the rules are ``risk.rules``).

``actors.risk_monitor`` reads the order events and the positions, feeds the
rules, and carries out what is decided here:

- ``parse_order_event``: an order events entry is an ``Order`` or unreadable
  (skipped and counted, never guessed at);
- ``batch_caught_up``: a short XREAD batch means the stream was read to its end,
  the condition for judging position flips on those orders;
- ``loss_limits_set`` / ``needs_strategy_states``: what a loop has to read at all;
- ``pause_reason``: what a paused strategy is told;
- ``should_persist_cursor``: the cursor (with the streaks) is persisted only
  once every trip from the events before it is applied, so a monitor that dies
  in between re-reads them and trips again rather than lose them;
- ``loop_fresh_probe``: the health verdict on the loop's age.

Pausing a strategy only from RUNNING is the store's check-and-set
(``core.store.RedisStore.transition_strategy_state``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from tradetree.core import Order, ProbeResult
from tradetree.risk.config import RiskConfig
from tradetree.risk.rules import Trip

__all__ = [
    "UnreadableOrderEvent",
    "batch_caught_up",
    "loop_fresh_probe",
    "loss_limits_set",
    "needs_strategy_states",
    "parse_order_event",
    "pause_reason",
    "should_persist_cursor",
]

class UnreadableOrderEvent(ValueError):
    """An order events entry without a readable ``order`` field."""


def parse_order_event(fields: Mapping[Any, Any]) -> Order:
    """The order an order events entry carries (field ``order``, bytes or str keys).

    Raises:
        UnreadableOrderEvent: the field is missing or is not an ``Order``'s JSON; the message says which.
    """
    raw = fields.get(b"order", fields.get("order"))
    if raw is None:
        raise UnreadableOrderEvent("no 'order' field")
    try:
        return Order.model_validate_json(raw)
    except (ValidationError, ValueError) as exc:
        raise UnreadableOrderEvent(str(exc)) from None


def batch_caught_up(entries_read: int, batch_size: int) -> bool:
    """True when a batch of ``entries_read`` (asked for ``batch_size``) reached the stream's end."""
    return entries_read < batch_size


def loss_limits_set(cfg: RiskConfig) -> bool:
    """Whether a daily loss limit is configured (only then are the day baselines read)."""
    return cfg.max_daily_loss_per_strategy is not None or cfg.max_daily_loss_global is not None


def needs_strategy_states(trip: Trip) -> bool:
    """A global trip pauses every RUNNING strategy, so only it needs the states read."""
    return trip.strategy_id is None


def pause_reason(trip: Trip) -> str:
    """What the strategies ``trip`` pauses are told."""
    return f"{trip.breaker}: {trip.reason}"


def should_persist_cursor(*, pending_trips: int, cursor: str, persisted_cursor: str) -> bool:
    """Persist the read position when it moved and no trip from before it is still unapplied."""
    return pending_trips == 0 and cursor != persisted_cursor


def loop_fresh_probe(last_ok_age_secs: float | None, cfg: RiskConfig, last_error: str) -> ProbeResult:
    """The ``loop_fresh`` probe: a full loop completed within ``loop_stale_after_secs``.

    ``last_ok_age_secs`` is None before any loop completed; ``last_error`` (may
    be empty) is the latest loop's failure, shown when it explains the verdict.
    """
    if last_ok_age_secs is None:
        return ProbeResult(name="loop_fresh", ok=False, detail=last_error or "no loop completed yet")
    ok = last_ok_age_secs <= cfg.loop_stale_after_secs
    detail = f"last good loop {last_ok_age_secs:.1f} s ago"
    if not ok and last_error:
        detail += f"; {last_error}"
    return ProbeResult(name="loop_fresh", ok=ok, detail=detail)
