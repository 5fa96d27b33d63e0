"""The freshness gate: refuse an order when the state it would be based on is stale or unknown.

It runs on every order, in the order path, on its own inputs: it does not
trust that the reconciler, the fill-health monitor or the risk monitor are
doing their jobs, it checks that their results are recent. Fail closed: an
input that is missing or could not be read refuses the order, with a reason
that says what is unknown.

The one exception is the kill switch winding a strategy down: a reduce-only
intent of a ``WINDING_DOWN`` strategy passes the kill flag and open breakers
(they exist to stop new risk, and closing is the way out), but it still needs
fresh market data, verified positions and a venue that is not paused.

Pure: the host reads the inputs (``actors.gate_inputs.read_gate_inputs``)
and passes them in; an input it could not read becomes an ``unknown`` reason
(``unknown_reason`` / ``unknown_inputs``).
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict

from tradetree.core import ControlSnapshot, OrderDenied, OrderIntent, StoreError, StoreUnavailable, StrategyState
from tradetree.risk.config import RiskConfig
from tradetree.risk.root_supervision import root_unsupervised_reason

__all__ = [
    "GATE_STATE_UNKNOWN_REDIS",
    "GateInputs",
    "applicable_breakers",
    "check",
    "deny",
    "unknown_inputs",
    "unknown_reason",
]

GATE_STATE_UNKNOWN_REDIS = "state unknown: Redis unavailable"

class GateInputs(BaseModel):
    """What the gate decides on, read just before the order.

    Every field is required, so "not given" cannot happen by accident; a
    ``None`` means the value is unknown, except ``kill_flag`` where ``None``
    means the kill flag is not set. ``unknown`` holds reasons why inputs
    could not be read at all (each refuses the order).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    now_ms: int
    strategy_id: str
    strategy_state: StrategyState | None  # None = unknown (the store's text, e.g. "PAUSED", is accepted)
    kill_flag: str | None  # the kill flag's reason; None = not set
    control: ControlSnapshot | None  # None = unknown
    last_market_data_ms: int | None  # None = no market data seen
    unknown: tuple[str, ...] = ()
    # The root supervisor's heartbeat (wall-clock ms; None = none recorded), judged only when
    # ``root_armed`` (``risk.RootLatch``: a root heartbeat was seen by this reader). These two have
    # defaults, unlike the rest: a reader that does not watch the root (no latch) leaves the check off.
    root_heartbeat_ms: int | None = None
    root_armed: bool = False


def applicable_breakers(breakers: Mapping[str, object], *, venue: str, strategy_id: str) -> list[str]:
    """Names of open breakers that stop ``strategy_id`` trading on ``venue``, sorted.

    ``strategy:{id}:...`` applies to that strategy, ``venue:{venue}:...`` to
    that venue; any other name (``global:...`` or a name we do not know how
    to scope) applies to everything: an unknown breaker fails closed.
    """
    out = []
    for name in breakers:
        if name.startswith("strategy:"):
            applies = name.startswith(f"strategy:{strategy_id}:") or name == f"strategy:{strategy_id}"
        elif name.startswith("venue:"):
            applies = name.startswith(f"venue:{venue}:") or name == f"venue:{venue}"
        else:
            applies = True
        if applies:
            out.append(name)
    return sorted(out)


def _age_reason(what: str, ts_ms: int | None, now_ms: int, max_age_secs: float) -> str | None:
    if ts_ms is None:
        return f"{what} unknown: none recorded"
    age_ms = now_ms - ts_ms
    # A timestamp slightly ahead of our clock (venue clocks drift) counts as fresh.
    if age_ms > max_age_secs * 1000:
        return f"{what} stale: {age_ms / 1000:.1f} s old (max {max_age_secs:g} s)"
    return None


def check(intent: OrderIntent, inputs: GateInputs, cfg: RiskConfig) -> list[str]:
    """Reasons to refuse ``intent``; an empty list means the gate lets it through.

    Refuses when: inputs could not be read; the inputs are for another
    strategy or venue; the strategy's state is unknown or not RUNNING
    (WINDING_DOWN admits reduce-only intents); positions were never
    verified or not within ``max_verification_age_secs``; a discrepancy is
    open on the venue; market data is missing or older than
    ``max_market_data_age_secs``; the venue is paused; a breaker that applies
    (global, the venue's or the strategy's) is open; the kill flag is set;
    the tree is unsupervised (``root_unsupervised_reason``, once ``root_armed``)
    and the intent is not reduce-only (closing risk stays possible).
    A reduce-only intent of a WINDING_DOWN strategy is not refused for the
    kill flag or breakers. Never raises.
    """
    reasons = list(inputs.unknown)
    if intent.strategy_id != inputs.strategy_id:
        reasons.append(
            f"gate inputs are for strategy {inputs.strategy_id!r}, not {intent.strategy_id!r}"
        )
    market = _age_reason("market data", inputs.last_market_data_ms, inputs.now_ms,
                         cfg.max_market_data_age_secs)
    if market is not None:
        reasons.append(market)
    if inputs.unknown:
        return reasons  # the rest was not read; saying more would only repeat "unknown"

    winding_down_close = False
    state = inputs.strategy_state
    if state is None:
        reasons.append(f"strategy state unknown: {intent.strategy_id} has no state in Redis")
    elif state is StrategyState.WINDING_DOWN:
        if intent.reduce_only:
            winding_down_close = True
        else:
            reasons.append(f"strategy {intent.strategy_id} is WINDING_DOWN: only reduce-only orders")
    elif state is not StrategyState.RUNNING:
        reasons.append(f"strategy {intent.strategy_id} is {state}, not RUNNING")

    control = inputs.control
    if control is None:
        reasons.append("control state unknown: verification, discrepancies, pauses and breakers")
    else:
        if control.venue != intent.venue:
            reasons.append(f"control state is for venue {control.venue!r}, not {intent.venue!r}")
        verified = _age_reason(f"position verification on {intent.venue}", control.verified_at_ms,
                               inputs.now_ms, cfg.max_verification_age_secs)
        if verified is not None:
            reasons.append(verified)
        for key in sorted(control.discrepancies):
            detail = control.discrepancies[key].get("detail", "")
            reasons.append(f"discrepancy open on {intent.venue}: {key} {detail}".rstrip())
        if control.venue_pause is not None:
            reasons.append(f"venue {intent.venue} paused: {control.venue_pause}")
        if not winding_down_close:
            for name in applicable_breakers(control.breakers, venue=intent.venue,
                                            strategy_id=intent.strategy_id):
                reasons.append(f"breaker {name} open: {control.breakers[name].get('reason', '')}".rstrip())

    if inputs.kill_flag is not None and not winding_down_close:
        reasons.append(f"kill flag set: {inputs.kill_flag or 'no reason given'}")
    if inputs.root_armed and not intent.reduce_only:
        unsupervised = root_unsupervised_reason(inputs.root_heartbeat_ms, inputs.now_ms)
        if unsupervised is not None:
            reasons.append(unsupervised)
    return reasons


def deny(intent: OrderIntent, reasons: list[str] | tuple[str, ...], *, ts_ms: int,
         checked_by: str) -> OrderDenied:
    """The ``OrderDenied`` event for a refused intent.

    Raises:
        ValueError: ``reasons`` is empty (an allowed intent is not denied).
    """
    if not reasons:
        raise ValueError("an OrderDenied needs at least one reason")
    return OrderDenied(intent=intent, reasons=tuple(reasons), ts_ms=ts_ms, checked_by=checked_by)


def unknown_reason(exc: BaseException) -> str:
    """The ``GateInputs.unknown`` reason for ``exc``, raised while reading the inputs.

    A store that does not answer is the common case and gets the one fixed
    text ``GATE_STATE_UNKNOWN_REDIS``; another store error says what it was;
    anything else (a bug) also names its type.
    """
    if isinstance(exc, StoreUnavailable):
        return GATE_STATE_UNKNOWN_REDIS
    if isinstance(exc, StoreError):
        return f"state unknown: {exc}"
    return f"state unknown: {type(exc).__name__}: {exc}"


def unknown_inputs(now_ms: int, strategy_id: str, last_market_data_ms: int | None,
                   reason: str) -> GateInputs:
    """Inputs that could not be read: ``check`` refuses with ``reason`` (fail closed)."""
    return GateInputs(
        now_ms=now_ms,
        strategy_id=strategy_id,
        strategy_state=None,
        kill_flag=None,
        control=None,
        last_market_data_ms=last_market_data_ms,
        unknown=(reason,),
    )
