"""Pre-trade limits and the duplicate-close guard (pure).

``check(intent, inputs, cfg)`` returns the reasons to refuse an intent; an
empty list allows it. It runs after the freshness gate, on state the caller
read from Redis (positions, in-flight orders, what the store applied for
them) plus marks it knows from market data.

Exposure is counted worst case: per strategy and instrument, the larger of
``|qty + in-flight buys|`` and ``|qty - in-flight sells|`` (non-reduce-only
orders; reduce-only ones can only shrink a position once the guard below
holds). A limit refuses an intent only when the intent makes that exposure
larger, so an order that reduces a position over its limit is let through.

Reduce-only intents are exempt from the exposure and loss limits (they take
no new risk, and the kill switch's wind-down must not be blocked by them) but
pass the **duplicate-close guard**: its size plus the reduce-only orders on
the same side already in flight may not exceed the open position, else a
second close of the same position would open the opposite side.

Fail closed: a notional limit that cannot be evaluated (no mark price or no
configured contract value for an instrument with exposure) refuses, and so
does a loss limit when today's P&L is unknown.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from tradetree.core import Order, OrderIntent, OrderState, Position, Side
from tradetree.risk.config import RiskConfig, instrument_key

__all__ = [
    "PreTradeInputs",
    "check",
    "duplicate_close_reasons",
    "fmt_decimal",
    "in_flight_size",
    "limit_reasons",
]

_ZERO = Decimal(0)
_Key = tuple[str, str, str]  # strategy_id, venue, inst_id


class PreTradeInputs(BaseModel):
    """State the limits are checked against.

    Attributes:
        positions: positions from Redis; every strategy's when a global limit
            is set, at least the intent's strategy's otherwise.
        in_flight: orders not yet fully reflected in positions (the store's
            tracked orders), of the same scope as ``positions``.
        applied_sizes: client order id -> size the store has applied for it;
            a missing entry counts as nothing applied (conservative).
        marks: ``(venue, inst_id)`` -> price used to value exposure.
        daily_pnl: strategy id -> realized P&L net of fees today; None when
            unknown. A strategy without an entry made nothing today.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    positions: tuple[Position, ...]
    in_flight: tuple[Order, ...]
    applied_sizes: dict[str, Decimal] = {}
    marks: dict[tuple[str, str], Decimal] = {}
    daily_pnl: dict[str, Decimal] | None = None


def fmt_decimal(value: Decimal) -> str:
    """``value`` without exponent or trailing zeros (``1.50`` -> ``1.5``)."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def in_flight_size(order: Order, applied: Decimal) -> Decimal:
    """Size of ``order`` still to show up in positions.

    What the order is expected to fill (its size; what it filled if
    canceled; nothing if rejected) minus what the store applied for it. A
    filled order whose fills were never applied still counts: that is the
    incident, and a check must not take the gap for room.
    """
    if order.state is OrderState.REJECTED:
        return _ZERO
    expected = order.filled_size if order.state is OrderState.CANCELED else order.size
    return max(expected - applied, _ZERO)


def _position_qty(positions: tuple[Position, ...], key: _Key) -> Decimal:
    return sum((p.qty for p in positions if (p.strategy_id, p.venue, p.inst_id) == key), _ZERO)


def duplicate_close_reasons(intent: OrderIntent, inputs: PreTradeInputs) -> list[str]:
    """Why a reduce-only ``intent`` would not only reduce its position (empty = it would).

    Refuses a reduce-only intent when there is no position, when it is on
    the position's side, or when its size plus the reduce-only orders of the
    same strategy, instrument and side already in flight exceeds the position.
    Non-reduce-only intents are not this guard's business (empty list).
    """
    if not intent.reduce_only:
        return []
    key = (intent.strategy_id, intent.venue, intent.inst_id)
    where = f"{intent.venue}:{intent.inst_id}"
    qty = _position_qty(inputs.positions, key)
    if qty == 0:
        return [f"reduce-only {intent.side.value} {fmt_decimal(intent.size)}: no open position on {where}"]
    if (qty > 0) == (intent.side is Side.BUY):
        return [
            f"reduce-only {intent.side.value} would add to the {fmt_decimal(qty)} position on {where}"
        ]
    closing = sum(
        (
            in_flight_size(o, inputs.applied_sizes.get(o.client_order_id, _ZERO))
            for o in inputs.in_flight
            if o.reduce_only and o.side is intent.side
            and (o.strategy_id, o.venue, o.inst_id) == key
        ),
        _ZERO,
    )
    if intent.size + closing > abs(qty):
        return [
            f"duplicate close: reduce-only {intent.side.value} {fmt_decimal(intent.size)} plus "
            f"{fmt_decimal(closing)} already closing exceeds the {fmt_decimal(abs(qty))} position "
            f"on {where} (it would open the opposite side)"
        ]
    return []


class _Exposure:
    """Worst-case absolute quantity per (strategy, venue, inst_id)."""

    def __init__(self, inputs: PreTradeInputs) -> None:
        self.qty: dict[_Key, Decimal] = defaultdict(lambda: _ZERO)
        self.buys: dict[_Key, Decimal] = defaultdict(lambda: _ZERO)
        self.sells: dict[_Key, Decimal] = defaultdict(lambda: _ZERO)
        for p in inputs.positions:
            self.qty[(p.strategy_id, p.venue, p.inst_id)] += p.qty
        for o in inputs.in_flight:
            if o.reduce_only:
                continue
            rest = in_flight_size(o, inputs.applied_sizes.get(o.client_order_id, _ZERO))
            book = self.buys if o.side is Side.BUY else self.sells
            book[(o.strategy_id, o.venue, o.inst_id)] += rest

    def keys(self) -> set[_Key]:
        return set(self.qty) | set(self.buys) | set(self.sells)

    def worst(self, key: _Key, extra_buy: Decimal = _ZERO, extra_sell: Decimal = _ZERO) -> Decimal:
        q = self.qty.get(key, _ZERO)
        return max(abs(q + self.buys.get(key, _ZERO) + extra_buy),
                   abs(q - self.sells.get(key, _ZERO) - extra_sell))


def _unit_value(venue: str, inst_id: str, price: Decimal | None, cfg: RiskConfig,
                unknown: set[str]) -> Decimal | None:
    """Quote value of one venue unit at ``price``; None (and a note in ``unknown``) if unknowable."""
    cv = cfg.contract_value(venue, inst_id)
    if price is None or cv is None:
        missing = "mark price" if price is None else "configured contract value"
        unknown.add(f"{instrument_key(venue, inst_id)} has no {missing}")
        return None
    return price * cv


def _notional(
    exposure: _Exposure, keys: list[_Key], intent: OrderIntent, with_intent: bool,
    inputs: PreTradeInputs, cfg: RiskConfig, unknown: set[str],
) -> Decimal:
    total = _ZERO
    ikey = (intent.strategy_id, intent.venue, intent.inst_id)
    for key in keys:
        extra_buy = extra_sell = _ZERO
        if with_intent and key == ikey:
            extra_buy, extra_sell = (intent.size, _ZERO) if intent.side is Side.BUY else (_ZERO, intent.size)
        qty = exposure.worst(key, extra_buy, extra_sell)
        if qty == 0:
            continue
        _, venue, inst_id = key
        price = inputs.marks.get((venue, inst_id))
        if price is None and key == ikey:
            price = intent.price
        unit = _unit_value(venue, inst_id, price, cfg, unknown)
        if unit is not None:
            total += qty * unit
    return total


def limit_reasons(intent: OrderIntent, inputs: PreTradeInputs, cfg: RiskConfig) -> list[str]:
    """Why a non-reduce-only ``intent`` breaks a notional, position or loss limit (empty = none)."""
    if intent.reduce_only:
        return []
    reasons: list[str] = []
    ikey = (intent.strategy_id, intent.venue, intent.inst_id)
    exposure: _Exposure | None = None  # built only when a limit needs it (most runs set none)

    pos_limit = cfg.position_limit(intent.venue, intent.inst_id)
    if pos_limit is not None:
        where = instrument_key(intent.venue, intent.inst_id)
        exposure = _Exposure(inputs)
        extra = (intent.size, _ZERO) if intent.side is Side.BUY else (_ZERO, intent.size)
        before, after = exposure.worst(ikey), exposure.worst(ikey, *extra)
        if after > pos_limit and after > before:
            reasons.append(
                f"position limit: {fmt_decimal(after)} on {where} (with orders in flight) "
                f"exceeds {fmt_decimal(pos_limit)}"
            )

    if cfg.notional_limits_set:
        if exposure is None:
            exposure = _Exposure(inputs)
        unknown: set[str] = set()
        if cfg.max_order_notional is not None:
            # A limit order is valued at its own price, a market order at the mark.
            price = intent.price if intent.price is not None else inputs.marks.get(
                (intent.venue, intent.inst_id))
            unit = _unit_value(intent.venue, intent.inst_id, price, cfg, unknown)
            order_notional = intent.size * unit if unit is not None else None
            if order_notional is not None and order_notional > cfg.max_order_notional:
                reasons.append(
                    f"order notional {fmt_decimal(order_notional)} exceeds "
                    f"{fmt_decimal(cfg.max_order_notional)}"
                )
        scopes: list[tuple[str, Decimal | None, list[_Key]]] = [
            (f"strategy {intent.strategy_id}", cfg.max_strategy_notional,
             sorted({k for k in exposure.keys() if k[0] == intent.strategy_id} | {ikey})),
            ("global", cfg.max_global_notional, sorted(exposure.keys() | {ikey})),
        ]
        for label, limit, keys in scopes:
            if limit is None:
                continue
            before = _notional(exposure, keys, intent, False, inputs, cfg, unknown)
            after = _notional(exposure, keys, intent, True, inputs, cfg, unknown)
            if not unknown and after > limit and after > before:
                reasons.append(
                    f"{label} notional {fmt_decimal(after)} (with orders in flight) "
                    f"exceeds {fmt_decimal(limit)}"
                )
        for what in sorted(unknown):
            reasons.append(f"notional unknown: {what}")

    if cfg.max_daily_loss_per_strategy is not None or cfg.max_daily_loss_global is not None:
        if inputs.daily_pnl is None:
            reasons.append("daily P&L unknown: loss limits cannot be checked")
        else:
            own = inputs.daily_pnl.get(intent.strategy_id, _ZERO)
            limit = cfg.max_daily_loss_per_strategy
            if limit is not None and own <= -limit:
                reasons.append(
                    f"daily loss limit: strategy {intent.strategy_id} P&L today {fmt_decimal(own)} "
                    f"(limit -{fmt_decimal(limit)})"
                )
            total = sum(inputs.daily_pnl.values(), _ZERO)
            limit = cfg.max_daily_loss_global
            if limit is not None and total <= -limit:
                reasons.append(
                    f"global daily loss limit: P&L today {fmt_decimal(total)} (limit -{fmt_decimal(limit)})"
                )
    return reasons


def check(intent: OrderIntent, inputs: PreTradeInputs, cfg: RiskConfig) -> list[str]:
    """Reasons to refuse ``intent`` (empty = allowed): the duplicate-close guard for
    reduce-only intents, the exposure and loss limits for the others. Never raises."""
    if intent.reduce_only:
        return duplicate_close_reasons(intent, inputs)
    return limit_reasons(intent, inputs, cfg)
