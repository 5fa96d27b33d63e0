"""The strategy's bars, built from prepared arrays, and kept for reuse within a process.

Bars are the one part of preparation that stays object by object: strategies
get :class:`~core.types.Bar` models with decimal prices. They are built once
per prepared market (:func:`bar_tables`), with one
:class:`~sim.backtest._fast.BarDecimal` per distinct price shared between
bars, and the last few tables are kept: a sweep worker runs many variants on
one window, and bars are immutable.
"""

from __future__ import annotations

import gc
from collections import OrderedDict
from decimal import Decimal

import numpy as np

from tradetree.core import Bar
from tradetree.sim.backtest._fast import (
    SET_DICT,
    SET_EXTRA,
    SET_FIELDS_SET,
    SET_PRIVATE,
    bar_decimal,
    bar_decimals_of_texts,
    bar_decimals_of_ticks,
)
from tradetree.sim.backtest.data import decimal_texts
from tradetree.sim.backtest.prepare import POINTS_PER_CANDLE, PathArrays, PreparedMarket, ticks_to_float

__all__ = ["BarTable", "bar_tables", "clear_bar_tables"]

_BAR_FIELDS = set(Bar.model_fields)


class BarTable:
    """The strategy's bars of one instrument: candles grouped into ``bar_ms`` bars, on the tick grid.

    The :class:`Bar` objects are built here, while preparing (like a data loader would), not on the
    run's hot path; they are immutable, so the run hands out the same objects. Their prices and
    volume are :class:`~sim.backtest._fast.BarDecimal`: decimals whose ``float()`` is precomputed,
    made from the prepared integer ticks once per distinct price and shared between bars.
    """

    def __init__(self, path: PathArrays, starts: np.ndarray, bar_ms: int, venue: str) -> None:
        n = len(path.ts_ms)
        pts = path.points.reshape(n, POINTS_PER_CANDLE)
        lows, highs = np.minimum(pts[:, 1], pts[:, 2]), np.maximum(pts[:, 1], pts[:, 2])
        ends = np.append(starts[1:], n) - 1
        opens, closes = pts[starts, 0], pts[ends, 3]
        bar_highs, bar_lows = np.maximum.reduceat(highs, starts), np.minimum.reduceat(lows, starts)
        first_ts = path.ts_ms[starts]
        bar_ts = (first_ts - first_ts % bar_ms).tolist()
        # One BarDecimal per distinct price, shared: a 1m BTC file repeats each price about twice.
        uniq, inverse = np.unique(np.concatenate([opens, bar_highs, bar_lows, closes]), return_inverse=True)
        prices = bar_decimals_of_ticks(uniq.tolist(), path.exp, ticks_to_float(uniq, path.exp).tolist())
        m = len(starts)
        o, h, lo, c = (list(map(prices.__getitem__, inverse[k * m:(k + 1) * m].tolist())) for k in range(4))
        texts = decimal_texts(path.volume)
        if m == n:
            v = bar_decimals_of_texts(texts, path.volume.tolist())
        else:  # exact decimal sums in candle order, as the per-candle loop added them
            v = []
            for s0, e0 in zip(starts.tolist(), ends.tolist()):
                total = Decimal(texts[s0])
                for t in texts[s0 + 1:e0 + 1]:
                    total = total + Decimal(t)
                v.append(bar_decimal(total))
        new, set_dict, set_fields, set_extra, set_private = (
            object.__new__, SET_DICT, SET_FIELDS_SET, SET_EXTRA, SET_PRIVATE)
        inst_id = path.inst_id
        bars: list[Bar] = []
        for t, bo, bh, bl, bc, bv in zip(bar_ts, o, h, lo, c, v):
            bar = new(Bar)  # sim.backtest._fast.unvalidated, inlined
            set_dict(bar, {"venue": venue, "inst_id": inst_id, "ts_ms": t, "interval_ms": bar_ms,
                           "open": bo, "high": bh, "low": bl, "close": bc, "volume": bv})
            set_fields(bar, _BAR_FIELDS)
            set_extra(bar, None)
            set_private(bar, None)
            bars.append(bar)
        self.bars = bars

    def bar(self, b: int) -> Bar:
        return self.bars[b]


# The bar tables of the last few prepared markets in this process. Bars are immutable and cost more
# to build than anything else left in preparation; a sweep worker runs many variants on one window.
_BAR_TABLES: OrderedDict[tuple[str, int, str], BarTable] = OrderedDict()
_BAR_TABLES_KEPT = 4


def bar_tables(market: PreparedMarket, venue: str) -> list[BarTable]:
    """The bar table of every instrument of ``market``: kept ones reused, the others built.

    Hundreds of thousands of container objects in a row trigger the cyclic collector again and again
    over a growing heap (half the cost of building them); they form no cycles. So the collector is
    paused once around all the tables, and what was built is then frozen (``gc.freeze``: moved to the
    permanent generation, which collections skip) rather than settled by a full collection, which walks
    the whole heap once per call. Left in the young generation, the bars would be walked by the first
    collection after the run's loop, inside the timed run.

    Caveat of ``gc.freeze``: everything alive at that moment is frozen too, and a reference cycle among
    it is never collected (``gc.unfreeze()`` hands them back). Reference counting still frees acyclic
    objects, so a table dropped from the few kept here is freed as usual.
    """
    tables: list[BarTable] = []
    built = False
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i, path in enumerate(market.paths):
            key = (market.key, i, venue)
            table = _BAR_TABLES.get(key)
            if table is None:
                table = _BAR_TABLES[key] = BarTable(path, market.bar_starts, market.bar_ms, venue)
                built = True
            _BAR_TABLES.move_to_end(key)
            tables.append(table)
        while len(_BAR_TABLES) > _BAR_TABLES_KEPT:
            _BAR_TABLES.popitem(last=False)
    finally:
        if gc_was_enabled:
            if built:
                gc.freeze()
            gc.enable()
    return tables


def clear_bar_tables() -> None:
    """Forget the bar tables kept for reuse (benchmarks call it to time a cold preparation)."""
    _BAR_TABLES.clear()
