"""Export a paper or live run from the Redis audit stream into a run folder.

The audit stream holds every fill as first applied (whichever layer
delivered it), with the strategy and order it was attributed to; a fill
counts once however often it was delivered. ``export_run_from_redis`` keeps
one strategy's fills and writes ``trades.csv`` and ``run.json``
(:mod:`sim.backtest.runfolder`), so the run can be compared with a backtest
of the same period (``tradetree compare``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path

from tradetree.core import RedisStore
from tradetree.risk import fmt_decimal
from tradetree.sim.backtest.runfolder import TradeRow, write_run_meta, write_trades_csv
from tradetree.sim.config import default_instruments

__all__ = ["export_run_from_redis"]


def _contract_value(inst_id: str, given: Mapping[str, Decimal]) -> Decimal:
    if inst_id in given:
        return Decimal(given[inst_id])
    for inst in default_instruments():
        if inst.inst_id == inst_id:
            return inst.contract_value
    return Decimal(1)


async def export_run_from_redis(
    store: RedisStore,
    strategy_id: str,
    out_dir: str | Path,
    *,
    kind: str = "paper",
    venue: str | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    contract_values: Mapping[str, Decimal] | None = None,
) -> Path:
    """Write the fills ``strategy_id`` made (optionally on one ``venue``, with
    ``since_ms <= ts_ms < until_ms``) as a run folder in ``out_dir``; return it.

    Rows are in fill time order (the stream's order among equal times). The
    client order id is the one the fill was attributed to. Contract values
    come from ``contract_values``, else the simulator's instrument list, else 1.

    Raises:
        StoreUnavailable / StoreError: Redis could not be read.
        OSError: the folder cannot be written.
    """
    entries = await store.audit_entries()
    rows: list[TradeRow] = []
    layers: Counter[str] = Counter()
    for e in entries:
        f = e.fill
        if e.strategy_id != strategy_id or (venue is not None and f.venue != venue):
            continue
        if (since_ms is not None and f.ts_ms < since_ms) or (until_ms is not None and f.ts_ms >= until_ms):
            continue
        layers[f.layer.value] += 1
        rows.append(TradeRow(
            ts_ms=f.ts_ms, inst_id=f.inst_id, side=f.side.value, price=f.price, size=f.size, fee=f.fee,
            fee_ccy=f.fee_ccy, liquidity=f.liquidity.value if f.liquidity is not None else "",
            client_order_id=e.attributed_order_id or f.client_order_id or "", strategy_id=e.strategy_id,
            venue=f.venue, trade_id=f.trade_id,
        ))
    rows.sort(key=lambda r: r.ts_ms)  # stable: equal times keep the stream's order
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_trades_csv(rows, out / "trades.csv")
    insts = sorted({r.inst_id for r in rows})
    write_run_meta(out / "run.json", {
        "kind": kind,
        "strategy_id": strategy_id,
        "venue": venue if venue is not None else ",".join(sorted({r.venue for r in rows})),
        "symbols": insts,
        "contract_values": {i: fmt_decimal(_contract_value(i, contract_values or {})) for i in insts},
        "start_ms": rows[0].ts_ms if rows else since_ms,
        "end_ms": rows[-1].ts_ms if rows else until_ms,
        "exported_from": f"redis namespace {store.namespace} audit stream",
        "fills_by_layer": dict(sorted(layers.items())),
    })
    return out
