"""The backtest's position truth: one strategy's positions, folded from its fills.

The same accounting as the Redis store's ``apply_fill.lua`` (per strategy,
venue and instrument): adding keeps the average entry price, reducing
realizes ``closed * contract_value * (price - avg) * sign``, a flip closes the
old side and opens the rest at the fill price; fees are summed apart. It
differs from the store only in number type: exact decimals here, doubles for
money there. The matching engine charges every fee in the quote/settle
currency, so there is no base-currency fee to fold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from tradetree.core import Position
from tradetree.sim.backtest._fast import unvalidated

__all__ = ["PositionLedger"]

_ZERO = Decimal(0)
_POSITION_FIELDS = set(Position.model_fields)


@dataclass(slots=True)
class _Pos:
    qty: Decimal = _ZERO
    avg: Decimal = _ZERO
    realized: Decimal = _ZERO
    fees: Decimal = _ZERO
    count: int = 0
    updated_ms: int = 0


class PositionLedger:
    """Positions of one strategy on one venue, keyed by instrument.

    ``quantities`` and ``positions()`` return snapshots that are replaced, not
    mutated, when a fill is applied, so callers may keep them.
    """

    def __init__(self, strategy_id: str, venue: str, contract_values: Mapping[str, Decimal]) -> None:
        self.strategy_id = strategy_id
        self.venue = venue
        self._cv = dict(contract_values)
        self._pos: dict[str, _Pos] = {}
        self.quantities: dict[str, Decimal] = {}
        self._positions: tuple[Position, ...] | None = ()
        self.realized_total = _ZERO
        self.fees_total = _ZERO

    def apply(self, inst_id: str, buy: bool, price: Decimal, size: Decimal, fee: Decimal, ts_ms: int) -> Decimal:
        """Fold one fill in; return the P&L it realized (before fees).

        Raises:
            KeyError: ``inst_id`` has no contract value.
        """
        cv = self._cv[inst_id]
        p = self._pos.get(inst_id)
        if p is None:
            p = self._pos[inst_id] = _Pos()
        q = p.qty
        delta = size if buy else -size
        nq = q + delta
        pnl = _ZERO
        if q == 0:
            p.avg = price
        elif (q > 0) == (delta > 0):
            p.avg = (abs(q) * p.avg + size * price) / abs(nq)
        else:
            closed = min(abs(q), size)
            pnl = closed * cv * (price - p.avg) * (1 if q > 0 else -1)
            if nq == 0:
                p.avg = _ZERO
            elif (nq > 0) != (q > 0):
                p.avg = price
        p.qty = nq
        p.realized += pnl
        p.fees += fee
        p.count += 1
        p.updated_ms = ts_ms
        self.realized_total += pnl
        self.fees_total += fee
        quantities = dict(self.quantities)
        quantities[inst_id] = nq
        self.quantities = quantities
        self._positions = None
        return pnl

    def qty(self, inst_id: str) -> Decimal:
        p = self._pos.get(inst_id)
        return p.qty if p is not None else _ZERO

    def avg_price(self, inst_id: str) -> Decimal:
        p = self._pos.get(inst_id)
        return p.avg if p is not None else _ZERO

    def positions(self) -> tuple[Position, ...]:
        """Every instrument traded so far, as the store's :class:`Position` (cached)."""
        positions = self._positions
        if positions is None:
            # Built without re-validation: every value is a Decimal/int/str this ledger computed.
            positions = self._positions = tuple([
                unvalidated(Position, {
                    "strategy_id": self.strategy_id, "venue": self.venue, "inst_id": inst_id, "qty": p.qty,
                    "avg_price": p.avg, "realized_pnl": p.realized, "fees": p.fees, "fill_count": p.count,
                    "updated_ms": p.updated_ms,
                }, _POSITION_FIELDS)
                for inst_id, p in self._pos.items()
            ])
        return positions
