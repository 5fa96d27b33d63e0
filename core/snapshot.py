"""The status snapshot of a tree, read from Redis alone, with the book valued at its marks.

It reads Redis only (plus the supervisor's view of actor health when given),
so the same view works from any process: the run loop, the CLI, the control
API (through the risk monitor) and the metrics exporter.

Redis failures raise ``StoreUnavailable`` / ``StoreError``.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from tradetree.core.book import (
    DEFAULT_VALUATION,
    PositionValue,
    StrategyValue,
    ValuationRules,
    position_mark_keys,
    strategy_values,
    value_positions,
)
from tradetree.core.clock import WallClock
from tradetree.core.marks import Mark, MarkBook
from tradetree.core.redis_calls import redis_call
from tradetree.core.store import RedisStore
from tradetree.core.text import as_text
from tradetree.core.types import Position, position_id

__all__ = ["collect_snapshot", "marks_view", "read_book", "valued_positions"]

MarkKey = tuple[str, str]


async def _recorded_contract_values(store: RedisStore, positions: list[Position]) -> dict[MarkKey, Decimal]:
    """The contract value ``apply_fill.lua`` stored with each open position's fills, by (venue, inst_id).

    ``Position`` does not carry it, so it is read from the position hashes here
    (the field the script writes beside ``qty_atoms``). Missing or garbled
    entries are left out: the position then needs a configured one.
    """
    open_ = [p for p in positions if p.qty != 0]
    if not open_:
        return {}
    pipe = store.client.pipeline(transaction=False)
    for p in open_:
        pipe.hget(store.keys.position(position_id(p.strategy_id, p.venue, p.inst_id)), "contract_value")
    replies = await redis_call(pipe.execute(), "reading the positions' contract values")
    out: dict[MarkKey, Decimal] = {}
    for p, raw in zip(open_, replies, strict=True):
        if raw is None:
            continue
        try:
            cv = Decimal(as_text(raw))
        except InvalidOperation:
            continue
        if cv.is_finite() and cv > 0:
            # Strategies share the venue's instrument: two different recorded values would be a
            # corrupted hash; the first one read is kept and the configured one still overrides.
            out.setdefault((p.venue, p.inst_id), cv)
    return out


async def read_book(
    store: RedisStore, rules: ValuationRules = DEFAULT_VALUATION, *, now_ms: int | None = None
) -> tuple[list[PositionValue], dict[str, StrategyValue], dict[MarkKey, Mark]]:
    """Every position valued at the gateways' marks: (rows, per-strategy sums, the marks read).

    ``rules`` is ``RiskConfig`` (``config.risk``) where the caller has it, so
    marks age and contract values are judged as the notional limits judge
    them; without it, ``RiskConfig``'s default mark age and the contract
    values recorded with the fills. ``now_ms`` defaults to the wall clock,
    taken after the reads (a mark must not look older than it is).

    Raises:
        StoreUnavailable, StoreError: Redis failed.
    """
    positions = await store.positions()
    marks = await MarkBook(store.client, store.namespace).read(position_mark_keys(positions))
    recorded = await _recorded_contract_values(store, positions)
    now = WallClock().now_ms() if now_ms is None else now_ms
    rows = value_positions(positions, marks, now_ms=now, rules=rules, recorded_contract_values=recorded)
    return rows, strategy_values(rows), marks


async def valued_positions(
    store: RedisStore, rules: ValuationRules = DEFAULT_VALUATION, *, now_ms: int | None = None
) -> list[dict[str, Any]]:
    """``read_book``'s rows as JSON-friendly dicts: every ``Position`` key plus the valuation's."""
    rows, _, _ = await read_book(store, rules, now_ms=now_ms)
    return [r.model_dump(mode="json") for r in rows]


def marks_view(marks: dict[MarkKey, Mark]) -> dict[str, dict[str, dict[str, Any]]]:
    """``venue -> inst_id -> {"price": text, "ts_ms", "recv_ms"}``."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (venue, inst_id), m in sorted(marks.items()):
        out.setdefault(venue, {})[inst_id] = {"price": str(m.price), "ts_ms": m.ts_ms, "recv_ms": m.recv_ms}
    return out


async def collect_snapshot(
    store: RedisStore, actor_health: dict[str, Any] | None = None, *,
    rules: ValuationRules = DEFAULT_VALUATION, now_ms: int | None = None,
) -> dict[str, Any]:
    """The tree's state in Redis, JSON-friendly.

    Keys: ``strategies``, ``positions`` (valued rows, see ``read_book``),
    ``strategy_pnl`` (strategy id -> ``StrategyValue`` as JSON), ``marks``
    (``marks_view``), ``fills_by_layer``, ``kill_flag``, ``heartbeats``,
    ``actors`` (``actor_health`` as given).

    Raises:
        StoreUnavailable, StoreError: Redis failed.
    """
    rows, sums, marks = await read_book(store, rules, now_ms=now_ms)
    return {
        "strategies": await store.strategy_states(),
        "positions": [r.model_dump(mode="json") for r in rows],
        "strategy_pnl": {sid: s.model_dump(mode="json") for sid, s in sums.items()},
        "marks": marks_view(marks),
        "fills_by_layer": await store.fill_layer_counts(),
        "kill_flag": await store.kill_flag(),
        "heartbeats": await store.heartbeats(),
        "actors": actor_health or {},
    }
