"""Backtest preparation as arrays: the market path, the bar table and the per-candle tables, vectorised.

What the backtester used to build value by value (a ``Decimal`` per price, four
``quantize`` calls per candle, Python loops for the bar groups and the emit and
decision-time tables) is computed here with numpy, prices as **integer ticks**
of the instrument's price quantum (``10 ** tick_size.exponent``, the quantum
``Decimal.quantize(tick_size)`` rounds to). The result is exact, not close:

- a price's decimal is the shortest decimal that round-trips its float (the
  CSV text, :meth:`CandleSeries.decimals`); ``rint(x * 10**k)`` equals its
  half-even rounding whenever the scaled value is not within rounding error of
  a half, and the few that are (``1.005`` at 0.01) are rounded by ``Decimal``
  itself (:func:`grid_ticks`);
- a tick count ``t`` turns back into the very ``Decimal`` ``quantize`` gives
  (same digits, same exponent: :func:`tick_decimal`) and into the very float
  ``float(Decimal)`` gives (``t / 10**k`` is one correctly rounded division of
  two exact doubles).

:class:`PreparedMarket` holds only arrays and numbers, so it pickles compactly
and goes into Ray's object store (sweeps read it zero-copy). Its ``key`` is a
hash of the candles and of every setting that shapes it, so a preparation
handed to a run (``prepared=``) is used only by a run of the same inputs.
It is not cached on disk: computing it costs less than reading it back.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from tradetree.sim.backtest.data import CandleSeries, decimal_texts

__all__ = [
    "POINTS_PER_CANDLE",
    "PathArrays",
    "PreparedMarket",
    "grid_exponent",
    "grid_ticks",
    "tick_decimal",
    "ticks_to_float",
    "prepare_path",
    "bar_groups",
    "emit_table",
    "market_key",
    "prepare_market",
]

POINTS_PER_CANDLE = 4
_AMBIGUOUS = 1e-6  # scaled values this close to a half are rounded by Decimal, not by rint
_EXACT_LIMIT = float(1 << 40)  # above this many quanta, float scaling error may reach the tolerance


def grid_exponent(tick: Decimal) -> int:
    """The exponent ``Decimal.quantize(tick)`` rounds to (``-2`` for ``0.01`` and for ``0.05``)."""
    exp = tick.as_tuple().exponent
    if not isinstance(exp, int):
        raise ValueError(f"tick size {tick} is not a finite number")
    return exp


def grid_ticks(values: np.ndarray, tick: Decimal) -> np.ndarray:
    """``values`` on ``tick``'s grid as integer quanta: ``Decimal(str(x)).quantize(tick)``, or ``tick`` below it.

    Exact for every finite positive value (see the module doc); int64.
    """
    exp = grid_exponent(tick)
    x = np.asarray(values, dtype=np.float64)
    tick_quanta = int(tick.scaleb(-exp))
    scaled = x * 10.0 ** -exp if exp <= 0 else x / 10.0 ** exp
    out = np.rint(scaled)
    ambiguous = (np.abs(np.abs(scaled - out) - 0.5) < _AMBIGUOUS) | (np.abs(scaled) >= _EXACT_LIMIT)
    ticks = out.astype(np.int64)
    if ambiguous.any():
        idx = np.flatnonzero(ambiguous)
        ticks[idx] = [int(Decimal(t).quantize(tick).scaleb(-exp)) for t in decimal_texts(x[idx])]
    below = x < float(tick)  # x < float(tick) exactly when the decimal of x is below tick (rounding is monotone)
    ticks[below] = tick_quanta
    return ticks


def tick_decimal(ticks: int, exp: int) -> Decimal:
    """The ``Decimal`` ``quantize`` gives for ``ticks`` quanta of ``10 ** exp``: same digits, same exponent."""
    return Decimal(ticks).scaleb(exp)


def ticks_to_float(ticks: np.ndarray, exp: int) -> np.ndarray:
    """``float(tick_decimal(t, exp))`` for every ``t``: one correctly rounded operation on exact doubles."""
    t = np.asarray(ticks, dtype=np.float64)
    return t / 10.0 ** -exp if exp <= 0 else t * 10.0 ** exp


@dataclass(frozen=True, eq=False)
class PathArrays:
    """One instrument's market path: four points per candle (see ``book_model``), as arrays.

    ``points[4 * i + j]`` is point ``j`` of candle ``i`` in quanta of ``10 ** exp``;
    ``point_ms`` its time; ``volume`` the candle volumes (the series' floats: their decimals are made
    where one is read).
    """

    inst_id: str
    exp: int
    ts_ms: np.ndarray  # int64, candle open times
    interval_ms: np.ndarray  # int64, the spacing each candle's points use (at least POINTS_PER_CANDLE)
    points: np.ndarray  # int64, n * 4
    point_ms: np.ndarray  # int64, n * 4
    rising: np.ndarray  # bool: close >= open (low first)
    first_open_text: str  # the first raw open: the very first trade's side compares against it
    volume: np.ndarray  # float64


def prepare_path(series: CandleSeries, inst_id: str, tick: Decimal) -> PathArrays:
    """The market path of ``series`` on ``tick``'s grid (``CandleReplay``'s rule, point for point)."""
    exp = grid_exponent(tick)
    ts = np.asarray(series.ts_ms, dtype=np.int64)
    n = len(ts)
    if n == 1:
        interval = np.array([60_000], dtype=np.int64)
    else:
        gaps = np.diff(ts)
        interval = np.append(gaps, gaps[-1])
    interval = np.maximum(interval, POINTS_PER_CANDLE)
    o, h, lo, c = (grid_ticks(col, tick) for col in (series.open, series.high, series.low, series.close))
    rising = series.close >= series.open  # compares the raw values, as the decimals would (exact floats)
    points = np.empty((n, POINTS_PER_CANDLE), dtype=np.int64)
    points[:, 0] = o
    points[:, 1] = np.where(rising, lo, h)
    points[:, 2] = np.where(rising, h, lo)
    points[:, 3] = c
    offsets = np.arange(POINTS_PER_CANDLE, dtype=np.int64)
    point_ms = ts[:, None] + offsets[None, :] * interval[:, None] // POINTS_PER_CANDLE
    return PathArrays(
        inst_id=inst_id, exp=exp, ts_ms=ts, interval_ms=interval, points=points.ravel(),
        point_ms=point_ms.ravel(), rising=np.asarray(rising, dtype=bool),
        first_open_text=decimal_texts(series.open[:1])[0],
        volume=np.asarray(series.volume, dtype=np.float64),
    )


def bar_groups(ts_ms: np.ndarray, bar_ms: int) -> tuple[np.ndarray, np.ndarray]:
    """``(group_of, starts)``: the bar of every candle (0, 1, ...) and each bar's first candle."""
    bucket = np.asarray(ts_ms, dtype=np.int64) // bar_ms
    new = np.ones(len(bucket), dtype=bool)
    new[1:] = bucket[1:] != bucket[:-1]
    return np.cumsum(new) - 1, np.flatnonzero(new)


def emit_table(group_of: np.ndarray, next_tick: bool) -> np.ndarray:
    """``emit[i]``: the bar that becomes final at candle ``i``'s decision point, or -1.

    With the next-tick rule a bar is final at the first point of the next bar's first candle (so
    the last bar never is); otherwise at the close of its own last candle.
    """
    g = np.asarray(group_of, dtype=np.int64)
    emit = np.full(len(g), -1, dtype=np.int64)
    if next_tick:
        change = np.flatnonzero(g[1:] != g[:-1]) + 1
        emit[change] = g[change - 1]
    else:
        last = np.ones(len(g), dtype=bool)
        last[:-1] = g[1:] != g[:-1]
        emit[last] = g[last]
    return emit


@dataclass(frozen=True, eq=False)
class PreparedMarket:
    """Everything the backtester prepares from candles, as arrays: safe to share and reuse.

    ``paths`` one per symbol in the strategy's order; the bar table (``group_of``, ``bar_starts``)
    and the per-candle tables (``emit``, ``decision_ms``) are the first symbol's, as the run uses.
    ``key`` is :func:`market_key` of the inputs it was made from.
    """

    key: str
    paths: tuple[PathArrays, ...]
    bar_ms: int
    group_of: np.ndarray
    bar_starts: np.ndarray
    emit: np.ndarray
    decision_ms: np.ndarray
    phase: int


def _series_digest(series: CandleSeries) -> str:
    h = hashlib.sha256()
    for col in (series.ts_ms, series.open, series.high, series.low, series.close, series.volume):
        h.update(np.ascontiguousarray(col).tobytes())
    return h.hexdigest()


def market_key(series: dict[str, CandleSeries], ticks: dict[str, Decimal], bar_ms: int, next_tick: bool) -> str:
    """The identity of a preparation: the candles' bytes, each instrument's tick, the bar length, the rule."""
    h = hashlib.sha256(f"bar_ms={bar_ms} next_tick={next_tick}".encode())
    for inst_id, s in series.items():
        h.update(f"|{inst_id}|{ticks[inst_id]}|{len(s)}|".encode())
        h.update(_series_digest(s).encode())
    return h.hexdigest()


def prepare_market(series: dict[str, CandleSeries], ticks: dict[str, Decimal], bar_ms: int,
                   next_tick: bool) -> PreparedMarket:
    """Prepare aligned ``series`` (one per instrument, strategy order) for a run with ``bar_ms`` bars.

    Raises:
        ValueError: ``bar_ms`` is not positive.
    """
    if bar_ms <= 0:
        raise ValueError(f"bar_ms must be positive, not {bar_ms}")
    paths = tuple(prepare_path(s, inst_id, ticks[inst_id]) for inst_id, s in series.items())
    first = paths[0]
    group_of, starts = bar_groups(first.ts_ms, bar_ms)
    phase = 0 if next_tick else POINTS_PER_CANDLE - 1
    decision = first.point_ms.reshape(-1, POINTS_PER_CANDLE)[:, phase].copy()
    return PreparedMarket(key=market_key(series, ticks, bar_ms, next_tick), paths=paths, bar_ms=bar_ms,
                          group_of=group_of, bar_starts=starts, emit=emit_table(group_of, next_tick),
                          decision_ms=decision, phase=phase)
