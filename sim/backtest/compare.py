"""Divergence report: match two runs trade by trade and explain their P&L difference.

Two run folders (:mod:`sim.backtest.runfolder`: backtest vs paper, paper vs
live, ...) are compared at the level of **executions**: the fills of one
client order id summed (size, VWAP, fees, first fill time). Executions of the
same instrument and side are paired in time order when they are at most
``tolerance_ms`` apart (each is paired with the nearest unpaired one, and
pairs never cross); a pair's common size is matched, what is left of the
larger one counts as missed (only in A) or extra (only in B).

**P&L** of a run is valued at one mark price ``M`` per instrument (the same for
both runs): ``sum(sign * size * contract_value * (M - price)) - fees``. The
difference ``P&L(B) - P&L(A)`` splits exactly into:

- **fill price**: for matched size, ``sign * q * cv * ((pA - refA) - (pB - refB))``:
  how much better or worse each run filled than the market at its own fill time;
- **timing**: for matched size, ``sign * q * cv * (refA - refB)``: what the
  market moved between the two fill times;
- **missed / extra trades**: ``- sign * q * cv * (M - pA)`` for A's unmatched
  size, ``+ sign * q * cv * (M - pB)`` for B's;
- **fees**: ``fees(A) - fees(B)``.

``ref`` is the market price at a fill's time, from the candles given as
reference data (the replay path of :mod:`sim.backtest.book_model`: the last
of the open / low-high / close points at or before that time). Without
reference data timing cannot be told apart from fill price: it is reported as
0 and the whole matched-price difference is under fill price.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import numpy as np

from tradetree.risk import fmt_decimal
from tradetree.sim.backtest.data import CandleSeries
from tradetree.sim.backtest.runfolder import TradeRow, read_run_meta, read_trades_csv
from tradetree.sim.config import default_instruments
from tradetree.sim.market_data import spot_of

__all__ = [
    "RunData",
    "Execution",
    "MatchedPair",
    "Divergence",
    "ReferencePrices",
    "load_run",
    "executions",
    "compare_runs",
    "render_markdown",
    "write_comparison",
]

_ZERO = Decimal(0)
DEFAULT_TOLERANCE_MS = 120_000


@dataclass(frozen=True)
class RunData:
    """A run folder in memory."""

    path: str
    meta: dict
    trades: list[TradeRow]

    @property
    def label(self) -> str:
        return f"{self.meta.get('kind', 'run')}:{Path(self.path).name}"

    def contract_value(self, inst_id: str) -> Decimal:
        cvs = self.meta.get("contract_values") or {}
        if inst_id in cvs:
            return Decimal(str(cvs[inst_id]))
        for inst in default_instruments():
            if inst.inst_id == inst_id:
                return inst.contract_value
        return Decimal(1)


def load_run(path: str | Path) -> RunData:
    """Read ``run.json`` and ``trades.csv`` of a run folder.

    Raises:
        OSError: a file is missing or unreadable.
        ValueError: a file does not parse.
    """
    path = Path(path)
    return RunData(str(path), read_run_meta(path / "run.json"), read_trades_csv(path / "trades.csv"))


@dataclass(frozen=True, slots=True)
class Execution:
    """The fills of one order, summed."""

    key: str  # client order id (or the trade id of a fill without one)
    inst_id: str
    side: str
    sign: int
    ts_ms: int  # first fill
    size: Decimal
    price: Decimal  # VWAP
    fee: Decimal
    fills: int


def executions(trades: Sequence[TradeRow]) -> list[Execution]:
    """Group fills by client order id (a fill without one stands alone); ordered by first fill time."""
    groups: dict[str, list[TradeRow]] = {}
    for t in trades:
        key = t.client_order_id or f"trade:{t.venue}:{t.inst_id}:{t.trade_id}"
        groups.setdefault(key, []).append(t)
    out = []
    for key, rows in groups.items():
        size = sum((r.size for r in rows), _ZERO)
        notional = sum((r.size * r.price for r in rows), _ZERO)
        first = min(rows, key=lambda r: r.ts_ms)
        out.append(Execution(key, first.inst_id, first.side, first.sign, first.ts_ms, size,
                             notional / size if size else first.price, sum((r.fee for r in rows), _ZERO), len(rows)))
    out.sort(key=lambda e: (e.ts_ms, e.key))
    return out


class ReferencePrices:
    """Market price at any time, from candles (last replay point at or before the time)."""

    def __init__(self, series_by_inst: Mapping[str, CandleSeries]) -> None:
        self._points: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for inst, s in series_by_inst.items():
            n = len(s)
            if n > 1:
                spacing = np.append(np.diff(s.ts_ms), s.ts_ms[-1] - s.ts_ms[-2])
            else:
                spacing = np.full(1, 60_000, dtype=np.int64)
            spacing = np.maximum(spacing, 4)
            rising = s.close >= s.open
            mid1 = np.where(rising, s.low, s.high)
            mid2 = np.where(rising, s.high, s.low)
            times = np.stack([s.ts_ms + j * spacing // 4 for j in range(4)], axis=1).ravel()
            prices = np.stack([s.open, mid1, mid2, s.close], axis=1).ravel()
            self._points[inst] = (times, prices)

    def _series(self, inst_id: str) -> tuple[np.ndarray, np.ndarray] | None:
        return self._points.get(inst_id) or self._points.get(spot_of(inst_id) or "") or (
            next(iter(self._points.values())) if len(self._points) == 1 else None)

    def price(self, inst_id: str, ts_ms: int) -> Decimal | None:
        pts = self._series(inst_id)
        if pts is None:
            return None
        times, prices = pts
        k = int(np.searchsorted(times, ts_ms, side="right")) - 1
        if k < 0:
            return None
        return Decimal(repr(float(prices[k])))

    def last(self, inst_id: str) -> Decimal | None:
        pts = self._series(inst_id)
        return None if pts is None else Decimal(repr(float(pts[1][-1])))


@dataclass(frozen=True, slots=True)
class MatchedPair:
    a: Execution
    b: Execution
    size: Decimal  # matched size
    fill_price: Decimal
    timing: Decimal

    @property
    def lag_ms(self) -> int:
        return self.b.ts_ms - self.a.ts_ms


@dataclass(frozen=True)
class Divergence:
    """``P&L(B) - P&L(A)`` split into buckets that add up to it exactly (see the module doc)."""

    run_a: str
    run_b: str
    marks: dict[str, Decimal]
    mark_source: str
    pnl_a: Decimal
    pnl_b: Decimal
    fill_price: Decimal
    timing: Decimal
    missed: Decimal  # A's trades B did not make (and A's unmatched size)
    extra: Decimal  # B's trades A did not make
    fees: Decimal
    timing_separated: bool
    tolerance_ms: int
    pairs: list[MatchedPair] = field(default_factory=list)
    only_a: list[tuple[Execution, Decimal]] = field(default_factory=list)  # (execution, unmatched size)
    only_b: list[tuple[Execution, Decimal]] = field(default_factory=list)

    @property
    def difference(self) -> Decimal:
        return self.pnl_b - self.pnl_a

    @property
    def missed_or_extra(self) -> Decimal:
        return self.missed + self.extra

    def buckets(self) -> dict[str, Decimal]:
        return {"fill_price": self.fill_price, "timing": self.timing, "missed_or_extra": self.missed_or_extra,
                "fees": self.fees}

    def summary(self) -> dict:
        lags = [p.lag_ms for p in self.pairs]
        return {
            "run_a": self.run_a, "run_b": self.run_b,
            "pnl_a": fmt_decimal(self.pnl_a), "pnl_b": fmt_decimal(self.pnl_b),
            "difference": fmt_decimal(self.difference),
            "fill_price": fmt_decimal(self.fill_price), "timing": fmt_decimal(self.timing),
            "missed": fmt_decimal(self.missed), "extra": fmt_decimal(self.extra),
            "missed_or_extra": fmt_decimal(self.missed_or_extra), "fees": fmt_decimal(self.fees),
            "timing_separated": self.timing_separated, "tolerance_ms": self.tolerance_ms,
            "marks": {k: fmt_decimal(v) for k, v in self.marks.items()}, "mark_source": self.mark_source,
            "matched": len(self.pairs), "only_a": len(self.only_a), "only_b": len(self.only_b),
            "mean_lag_ms": float(np.mean(lags)) if lags else None,
            "max_abs_lag_ms": int(max(abs(x) for x in lags)) if lags else None,
        }


def _pair_up(a_list: list[Execution], b_list: list[Execution], tolerance_ms: int) -> list[tuple[int, int]]:
    """Index pairs, monotone in time, each A with its nearest free B within the tolerance."""
    pairs = []
    start = 0
    for ia, a in enumerate(a_list):
        best, best_d = None, None
        for jb in range(start, len(b_list)):
            b = b_list[jb]
            if b.ts_ms > a.ts_ms + tolerance_ms:
                break
            if b.ts_ms < a.ts_ms - tolerance_ms:
                continue
            d = abs(b.ts_ms - a.ts_ms)
            if best_d is None or d < best_d:
                best, best_d = jb, d
        if best is not None:
            pairs.append((ia, best))
            start = best + 1
    return pairs


def _marks(a: RunData, b: RunData, reference: ReferencePrices | None,
           marks: Mapping[str, Decimal] | None) -> tuple[dict[str, Decimal], str]:
    insts = sorted({t.inst_id for t in (*a.trades, *b.trades)})
    out: dict[str, Decimal] = {}
    sources = set()
    for inst in insts:
        if marks and inst in marks:
            out[inst] = Decimal(marks[inst])
            sources.add("given")
            continue
        last = reference.last(inst) if reference is not None else None
        if last is not None:
            out[inst] = last
            sources.add("reference data (last close)")
            continue
        latest = max((t for t in (*a.trades, *b.trades) if t.inst_id == inst), key=lambda t: t.ts_ms)
        out[inst] = latest.price
        sources.add("latest trade price of either run")
    return out, ", ".join(sorted(sources)) or "none"


def compare_runs(
    a: RunData,
    b: RunData,
    *,
    tolerance_ms: int = DEFAULT_TOLERANCE_MS,
    reference: ReferencePrices | None = None,
    marks: Mapping[str, Decimal] | None = None,
) -> Divergence:
    """Match ``b`` against ``a`` and split ``P&L(b) - P&L(a)`` (see the module doc).

    Raises:
        ValueError: ``tolerance_ms`` is negative.
    """
    if tolerance_ms < 0:
        raise ValueError("tolerance_ms must not be negative")
    mark, mark_source = _marks(a, b, reference, marks)
    ex_a, ex_b = executions(a.trades), executions(b.trades)
    by_key_a: dict[tuple[str, str], list[Execution]] = defaultdict(list)
    by_key_b: dict[tuple[str, str], list[Execution]] = defaultdict(list)
    for e in ex_a:
        by_key_a[(e.inst_id, e.side)].append(e)
    for e in ex_b:
        by_key_b[(e.inst_id, e.side)].append(e)

    def cv(inst: str) -> Decimal:
        return a.contract_value(inst)

    def value(e: Execution, size: Decimal) -> Decimal:
        return e.sign * size * cv(e.inst_id) * (mark[e.inst_id] - e.price)

    pnl_a = sum((value(e, e.size) for e in ex_a), _ZERO) - sum((e.fee for e in ex_a), _ZERO)
    pnl_b = sum((value(e, e.size) for e in ex_b), _ZERO) - sum((e.fee for e in ex_b), _ZERO)
    pairs: list[MatchedPair] = []
    only_a: list[tuple[Execution, Decimal]] = []
    only_b: list[tuple[Execution, Decimal]] = []
    fill_price = timing = missed = extra = _ZERO
    separated = reference is not None
    for key in sorted(set(by_key_a) | set(by_key_b)):
        la, lb = by_key_a.get(key, []), by_key_b.get(key, [])
        matched = _pair_up(la, lb, tolerance_ms)
        paired_a = {i for i, _ in matched}
        paired_b = {j for _, j in matched}
        for ia, jb in matched:
            ea, eb = la[ia], lb[jb]
            q = min(ea.size, eb.size)
            scale = ea.sign * q * cv(ea.inst_id)
            ref_a = reference.price(ea.inst_id, ea.ts_ms) if reference is not None else None
            ref_b = reference.price(eb.inst_id, eb.ts_ms) if reference is not None else None
            if ref_a is not None and ref_b is not None:
                t = scale * (ref_a - ref_b)
            else:
                t = _ZERO
                separated = False
            f = scale * (ea.price - eb.price) - t
            fill_price += f
            timing += t
            pairs.append(MatchedPair(ea, eb, q, f, t))
            if ea.size > q:
                only_a.append((ea, ea.size - q))
                missed -= value(ea, ea.size - q)
            if eb.size > q:
                only_b.append((eb, eb.size - q))
                extra += value(eb, eb.size - q)
        for i, ea in enumerate(la):
            if i not in paired_a:
                only_a.append((ea, ea.size))
                missed -= value(ea, ea.size)
        for j, eb in enumerate(lb):
            if j not in paired_b:
                only_b.append((eb, eb.size))
                extra += value(eb, eb.size)
    fees = sum((e.fee for e in ex_a), _ZERO) - sum((e.fee for e in ex_b), _ZERO)
    pairs.sort(key=lambda p: (p.a.ts_ms, p.a.key))
    only_a.sort(key=lambda x: (x[0].ts_ms, x[0].key))
    only_b.sort(key=lambda x: (x[0].ts_ms, x[0].key))
    return Divergence(
        run_a=a.label, run_b=b.label, marks=mark, mark_source=mark_source, pnl_a=pnl_a, pnl_b=pnl_b,
        fill_price=fill_price, timing=timing, missed=missed, extra=extra, fees=fees,
        timing_separated=separated, tolerance_ms=tolerance_ms, pairs=pairs, only_a=only_a, only_b=only_b,
    )


def _money(x: Decimal) -> str:
    return f"{float(x):,.4f}"


def render_markdown(div: Divergence, *, rows: int = 20) -> str:
    """The report as Markdown: the split, counts, the largest matched differences, unmatched trades."""
    s = div.summary()
    lines = [
        f"# Divergence: {div.run_a} (A) vs {div.run_b} (B)",
        "",
        f"Marks ({div.mark_source}): " + ", ".join(f"{k} {fmt_decimal(v)}" for k, v in div.marks.items()),
        "",
        "| | quote |",
        "|---|---:|",
        f"| P&L A | {_money(div.pnl_a)} |",
        f"| P&L B | {_money(div.pnl_b)} |",
        f"| **difference B - A** | **{_money(div.difference)}** |",
        f"| fill price | {_money(div.fill_price)} |",
        f"| timing | {_money(div.timing)}{'' if div.timing_separated else ' (not separable without reference data)'} |",
        f"| missed trades (in A only) | {_money(div.missed)} |",
        f"| extra trades (in B only) | {_money(div.extra)} |",
        f"| fees | {_money(div.fees)} |",
        "",
        f"Executions matched: {s['matched']} (tolerance {div.tolerance_ms} ms, mean lag B - A "
        f"{s['mean_lag_ms'] if s['mean_lag_ms'] is not None else 'n/a'} ms, max |lag| "
        f"{s['max_abs_lag_ms'] if s['max_abs_lag_ms'] is not None else 'n/a'} ms); only in A: {s['only_a']}; "
        f"only in B: {s['only_b']}.",
        "",
    ]
    worst = sorted(div.pairs, key=lambda p: abs(p.fill_price + p.timing), reverse=True)[:rows]
    if worst:
        lines += ["## Largest matched differences", "",
                  "| instrument | side | A time | B time | A price | B price | size | fill price | timing |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for p in worst:
            lines.append(f"| {p.a.inst_id} | {p.a.side} | {p.a.ts_ms} | {p.b.ts_ms} | {fmt_decimal(p.a.price)} | "
                         f"{fmt_decimal(p.b.price)} | {fmt_decimal(p.size)} | {_money(p.fill_price)} | "
                         f"{_money(p.timing)} |")
        lines.append("")
    for title, items in (("Only in A (missed by B)", div.only_a), ("Only in B (extra)", div.only_b)):
        if items:
            lines += [f"## {title}: {len(items)}", "", "| instrument | side | time | price | size |",
                      "|---|---|---:|---:|---:|"]
            for e, size in items[:rows]:
                lines.append(f"| {e.inst_id} | {e.side} | {e.ts_ms} | {fmt_decimal(e.price)} | {fmt_decimal(size)} |")
            lines.append("")
    return "\n".join(lines)


def write_comparison(div: Divergence, out_dir: str | Path) -> Path:
    """Write ``compare.md``, ``compare.json`` and ``matches.csv`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text(render_markdown(div), encoding="utf-8")
    (out / "compare.json").write_text(json.dumps(div.summary(), indent=2) + "\n", encoding="utf-8")
    with (out / "matches.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["kind", "inst_id", "side", "a_ts_ms", "b_ts_ms", "a_price", "b_price", "size", "fill_price",
                    "timing"])
        for p in div.pairs:
            w.writerow(["matched", p.a.inst_id, p.a.side, p.a.ts_ms, p.b.ts_ms, fmt_decimal(p.a.price),
                        fmt_decimal(p.b.price), fmt_decimal(p.size), fmt_decimal(p.fill_price),
                        fmt_decimal(p.timing)])
        for e, size in div.only_a:
            w.writerow(["only_a", e.inst_id, e.side, e.ts_ms, "", fmt_decimal(e.price), "", fmt_decimal(size), "", ""])
        for e, size in div.only_b:
            w.writerow(["only_b", e.inst_id, e.side, "", e.ts_ms, "", fmt_decimal(e.price), fmt_decimal(size), "", ""])
    return out
