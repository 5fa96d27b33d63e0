"""The book: positions valued at their marks, per position and per strategy. Pure, no I/O.

``value_positions`` turns the store's positions and the gateways' marks into
``PositionValue`` rows (every field of ``Position`` plus mark, mark age,
contract value, notional, unrealized and total P&L) and ``StrategyValue``
sums. The readers (``core.snapshot``) gather the inputs; the status table,
``tradetree positions``, the control API and ``/metrics`` all show these rows.

The valuation is the strategy hosts' own (``risk.pre_trade``), so what an
operator sees never disagrees with what the notional limits use:

- a mark is usable when it was received (``recv_ms``, our clock) at most
  ``max_mark_age_secs`` before ``now_ms`` (``core.marks.usable_marks``);
- one venue unit is worth ``mark * contract value``, the contract value being
  ``RiskConfig.contract_value(venue, inst_id)``; notional is
  ``|qty| * (mark * contract value)``.

The store's accounting (``core/lua/apply_fill.lua``) fixes the rest:
``realized_pnl`` is before fees and already carries the contract value,
``fees`` are quote-currency fees paid (negative for rebates; a base-currency
fee shrinks ``qty`` instead). So

    unrealized = (mark - avg_price) * qty * contract value   (qty signed: right for shorts)
    total      = realized_pnl + unrealized - fees

Unknown is never zero: a position with no usable mark, or whose contract
value is unknown, has ``None`` for mark-dependent values and says why in
``unvalued_reason``; a strategy with such a position has ``None`` totals,
``complete = False`` and the sums over what could be valued in ``*_known``.
A flat position needs no mark: its unrealized P&L and notional are zero.

Where the contract value comes from: the configured one
(``RiskConfig.contract_values``, what the notional limits use) and the one
the store recorded with the position's fills (the venue instrument's, what
``realized_pnl`` was computed with). Either alone is used; both, when they
differ, leave the position unvalued (a misconfigured limit must be seen, not
averaged away).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from tradetree.core.marks import Mark, usable_marks
from tradetree.core.types import Position

__all__ = [
    "DEFAULT_VALUATION",
    "PositionValue",
    "StrategyValue",
    "ValuationRules",
    "position_mark_keys",
    "strategy_values",
    "value_positions",
]

_ZERO = Decimal(0)
_FROZEN = ConfigDict(frozen=True, extra="forbid")
_POSITION_FIELDS = frozenset(Position.model_fields)

MarkKey = tuple[str, str]  # venue, inst_id


class ValuationRules(Protocol):
    """What values a position: ``RiskConfig`` is one (pass ``config.risk``)."""

    @property
    def max_mark_age_secs(self) -> float: ...

    def contract_value(self, venue: str, inst_id: str) -> Decimal | None: ...


class _NoConfiguredValues:
    """Rules when no risk configuration is at hand: ``RiskConfig()``'s mark age bound, no contract
    values configured (the ones the store recorded with the fills are then used)."""

    max_mark_age_secs = 30.0  # RiskConfig's default (tests/core/test_book.py keeps them equal)

    def contract_value(self, venue: str, inst_id: str) -> Decimal | None:
        return None


DEFAULT_VALUATION: ValuationRules = _NoConfiguredValues()


class PositionValue(Position):
    """One position as the store holds it (every ``Position`` field), valued at its mark.

    ``mark_price`` is None when no usable mark exists; ``mark_age_ms`` is the
    age of the last mark received (set for a stale one too, None when there is
    none; a mark stamped ahead of our clock is 0 old). ``notional``,
    ``unrealized_pnl`` and ``total_pnl`` are None when unknown, and
    ``unvalued_reason`` then says why (empty when valued).
    """

    contract_value: Decimal | None = None
    mark_price: Decimal | None = None
    mark_age_ms: int | None = None
    notional: Decimal | None = None
    unrealized_pnl: Decimal | None = None
    total_pnl: Decimal | None = None
    unvalued_reason: str = ""

    @property
    def valued(self) -> bool:
        return self.total_pnl is not None


_VALUE_FIELDS = frozenset(PositionValue.model_fields)


class StrategyValue(BaseModel):
    """One strategy's sums over its positions (every venue).

    ``unrealized_pnl``, ``total_pnl`` and ``notional`` are None unless every
    position of the strategy is valued (``complete``); the ``*_known`` sums
    are over the valued ones, and ``unvalued`` lists the others as
    ``venue:inst_id``.
    """

    model_config = _FROZEN

    strategy_id: str
    realized_pnl: Decimal = _ZERO
    fees: Decimal = _ZERO
    unrealized_pnl: Decimal | None = _ZERO
    total_pnl: Decimal | None = _ZERO
    notional: Decimal | None = _ZERO
    unrealized_pnl_known: Decimal = _ZERO
    total_pnl_known: Decimal = _ZERO
    notional_known: Decimal = _ZERO
    open_positions: int = 0
    unvalued: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.unvalued


def _position(p: Position | Mapping[str, Any]) -> Position:
    # A PositionValue, or a JSON dump of one, is revalued from its Position fields alone.
    if type(p) is Position:
        return p
    if isinstance(p, Position):
        return Position.model_validate(p.model_dump(include=set(_POSITION_FIELDS)))
    return Position.model_validate({k: v for k, v in p.items() if k in _POSITION_FIELDS})


def position_mark_keys(positions: Iterable[Position | Mapping[str, Any]]) -> set[MarkKey]:
    """The (venue, inst_id) of every position: the marks ``value_positions`` needs."""
    out = set()
    for p in positions:
        pos = _position(p)
        out.add((pos.venue, pos.inst_id))
    return out


def _contract_value(configured: Decimal | None, recorded: Decimal | None, where: str
                    ) -> tuple[Decimal | None, str]:
    if configured is not None and recorded is not None and configured != recorded:
        return None, (f"contract value of {where} unknown: configured {configured}, "
                      f"but its fills were applied with {recorded}")
    cv = configured if configured is not None else recorded
    if cv is None:
        return None, f"no contract value for {where} (configure risk.contract_values)"
    return cv, ""


def value_positions(
    positions: Iterable[Position | Mapping[str, Any]],
    marks: Mapping[MarkKey, Mark],
    *,
    now_ms: int,
    rules: ValuationRules = DEFAULT_VALUATION,
    recorded_contract_values: Mapping[MarkKey, Decimal] | None = None,
) -> list[PositionValue]:
    """Each position valued at its mark, sorted by strategy, venue, instrument.

    Args:
        positions: ``Position`` models or their JSON dumps.
        marks: the recorded marks, by (venue, inst_id) (``MarkBook.read``).
        now_ms: our clock; mark ages are taken at it.
        rules: the mark age bound and configured contract values (``RiskConfig``).
        recorded_contract_values: the contract value the store applied each
            instrument's fills with, by (venue, inst_id), where known.
    """
    recorded = recorded_contract_values or {}
    max_age_ms = int(rules.max_mark_age_secs * 1000)
    rows = [_position(p) for p in positions]
    prices, why_not = usable_marks(marks, {(p.venue, p.inst_id) for p in rows}, now_ms, max_age_ms)
    out = []
    for p in sorted(rows, key=lambda p: (p.strategy_id, p.venue, p.inst_id)):
        key = (p.venue, p.inst_id)
        where = f"{p.venue}:{p.inst_id}"
        mark = marks.get(key)
        price = prices.get(key)
        cv, cv_why = _contract_value(rules.contract_value(p.venue, p.inst_id), recorded.get(key), where)
        net = p.realized_pnl - p.fees
        values: dict[str, Any] = {}
        reason = ""
        if p.qty == 0:
            values = {"notional": _ZERO, "unrealized_pnl": _ZERO, "total_pnl": net}
        elif price is None:
            reason = f"no usable mark for {where}: {why_not[key]}"
        elif cv is None:
            reason = cv_why
        else:
            unrealized = (price - p.avg_price) * p.qty * cv
            values = {"notional": abs(p.qty) * (price * cv), "unrealized_pnl": unrealized,
                      "total_pnl": net + unrealized}
        out.append(PositionValue(
            **dict(p), contract_value=cv, mark_price=price,
            mark_age_ms=None if mark is None else max(0, now_ms - mark.recv_ms),
            unvalued_reason=reason, **values))
    return out


def strategy_values(rows: Iterable[PositionValue | Mapping[str, Any]]) -> dict[str, StrategyValue]:
    """Per-strategy sums of valued rows (``PositionValue`` or its JSON dump), by strategy id.

    A row without valuation fields (a plain ``Position`` dump) counts as
    unvalued unless it is flat.
    """
    acc: dict[str, dict[str, Any]] = {}
    for raw in rows:
        # Keys this version does not know are ignored: a newer writer's row still renders.
        r = raw if isinstance(raw, PositionValue) else PositionValue.model_validate(
            {k: v for k, v in raw.items() if k in _VALUE_FIELDS})
        if r.qty == 0 and r.total_pnl is None:  # a plain dump of a flat position: nothing to value
            r = r.model_copy(update={"notional": _ZERO, "unrealized_pnl": _ZERO,
                                     "total_pnl": r.realized_pnl - r.fees})
        a = acc.setdefault(r.strategy_id, {"realized_pnl": _ZERO, "fees": _ZERO, "unrealized_pnl_known": _ZERO,
                                           "total_pnl_known": _ZERO, "notional_known": _ZERO,
                                           "open_positions": 0, "unvalued": []})
        a["realized_pnl"] += r.realized_pnl
        a["fees"] += r.fees
        a["open_positions"] += r.qty != 0
        if r.total_pnl is None or r.unrealized_pnl is None or r.notional is None:
            a["unvalued"].append(f"{r.venue}:{r.inst_id}")
            continue
        a["unrealized_pnl_known"] += r.unrealized_pnl
        a["total_pnl_known"] += r.total_pnl
        a["notional_known"] += r.notional
    out = {}
    for sid, a in sorted(acc.items()):
        complete = not a["unvalued"]
        out[sid] = StrategyValue(
            strategy_id=sid, **{**a, "unvalued": tuple(sorted(set(a["unvalued"])))},
            unrealized_pnl=a["unrealized_pnl_known"] if complete else None,
            total_pnl=a["total_pnl_known"] if complete else None,
            notional=a["notional_known"] if complete else None,
        )
    return out
