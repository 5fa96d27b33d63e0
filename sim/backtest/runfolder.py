"""The run folder: one format for backtest, paper and live runs, so any two can be compared.

A run folder holds at least:

- ``run.json``: ``{"format": "tradetree-run/1", "kind": "backtest" | "paper" |
  "live", "strategy_id", "venue", "symbols", "contract_values": {inst_id:
  "0.01"}, "start_ms", "end_ms", ...}`` (more keys are allowed; readers ignore
  what they do not know).
- ``trades.csv``: one row per fill, in execution order, with the columns of
  :data:`TRADE_COLUMNS`. Decimals are written in plain notation without
  trailing zeros; times are epoch milliseconds (venue time).

The backtester writes more (orders, equity, metrics, a report); the Redis
exporter (:mod:`sim.backtest.export`) writes just these two files.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, NamedTuple

from tradetree.risk import fmt_decimal

__all__ = [
    "RUN_FORMAT",
    "TRADE_COLUMNS",
    "TradeRow",
    "trades_csv_text",
    "write_trades_csv",
    "read_trades_csv",
    "write_run_meta",
    "read_run_meta",
]

RUN_FORMAT = "tradetree-run/1"
TRADE_COLUMNS = (
    "ts_ms", "inst_id", "side", "price", "size", "fee", "fee_ccy", "liquidity",
    "client_order_id", "strategy_id", "venue", "trade_id",
)


class TradeRow(NamedTuple):
    """One fill of a run. ``fee`` is positive when paid; ``liquidity`` is ``maker``,
    ``taker`` or empty when unknown. (A named tuple: immutable, and cheap to make on the
    backtester's order path.)"""

    ts_ms: int
    inst_id: str
    side: str  # "buy" | "sell"
    price: Decimal
    size: Decimal
    fee: Decimal
    fee_ccy: str
    liquidity: str
    client_order_id: str
    strategy_id: str
    venue: str
    trade_id: str

    @property
    def sign(self) -> int:
        return 1 if self.side == "buy" else -1

    def as_strings(self) -> list[str]:
        return [
            str(self.ts_ms), self.inst_id, self.side, fmt_decimal(self.price), fmt_decimal(self.size),
            fmt_decimal(self.fee), self.fee_ccy, self.liquidity, self.client_order_id, self.strategy_id,
            self.venue, self.trade_id,
        ]


def trades_csv_text(rows: Iterable[TradeRow]) -> str:
    """The trades CSV as text (``\\n`` line ends, header first): the bytes compared for reproducibility."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(TRADE_COLUMNS)
    for row in rows:
        writer.writerow(row.as_strings())
    return buf.getvalue()


def write_trades_csv(rows: Iterable[TradeRow], path: str | Path) -> Path:
    path = Path(path)
    path.write_text(trades_csv_text(rows), encoding="utf-8")
    return path


def read_trades_csv(path: str | Path) -> list[TradeRow]:
    """Read a trades CSV written by :func:`write_trades_csv` (or by hand with the same columns).

    Raises:
        OSError: the file cannot be read.
        ValueError: a column is missing or a row does not parse (the message
            names the file and line).
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in TRADE_COLUMNS if c not in header]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}")
        rows = []
        for line_no, raw in enumerate(reader, start=2):
            try:
                side = raw["side"].strip().lower()
                if side not in ("buy", "sell"):
                    raise ValueError(f"side {raw['side']!r}")
                rows.append(TradeRow(
                    ts_ms=int(raw["ts_ms"]), inst_id=raw["inst_id"], side=side, price=Decimal(raw["price"]),
                    size=Decimal(raw["size"]), fee=Decimal(raw["fee"] or "0"), fee_ccy=raw["fee_ccy"],
                    liquidity=raw["liquidity"], client_order_id=raw["client_order_id"],
                    strategy_id=raw["strategy_id"], venue=raw["venue"], trade_id=raw["trade_id"],
                ))
            except (ValueError, InvalidOperation, TypeError) as exc:
                raise ValueError(f"{path}:{line_no}: cannot parse trade row: {exc}") from None
    return rows


def write_run_meta(path: str | Path, meta: Mapping[str, Any]) -> Path:
    """Write ``run.json`` (``format`` is set to :data:`RUN_FORMAT`)."""
    path = Path(path)
    path.write_text(json.dumps({"format": RUN_FORMAT, **meta}, indent=2, sort_keys=True, default=str) + "\n",
                    encoding="utf-8")
    return path


def read_run_meta(path: str | Path) -> dict[str, Any]:
    """Read ``run.json``.

    Raises:
        OSError: unreadable. ValueError: not JSON, or another format.
    """
    path = Path(path)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != RUN_FORMAT:
        raise ValueError(f"{path}: not a {RUN_FORMAT} run description")
    return meta
