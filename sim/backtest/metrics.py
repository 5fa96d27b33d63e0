"""Performance metrics of a run: from an equity curve and a list of fills.

Definitions (``e`` is the equity curve sampled at every bar close, starting
from the capital; ``r_t = e_t / e_{t-1} - 1``; ``N`` periods per year):

- net P&L = ``e[-1] - capital`` (fees paid, open positions marked at the last
  close); gross P&L = net P&L + fees.
- Sharpe = ``mean(r) / std(r, ddof=1) * sqrt(N)``; Sortino = ``mean(r) /
  sqrt(mean(min(r, 0)^2)) * sqrt(N)`` (target 0, over every period). Both
  ``None`` when undefined (fewer than two returns, or no dispersion /
  downside).
- max drawdown = the largest fall of ``e`` from its running peak, in quote
  currency and as a fraction of that peak.
- a round trip runs from a flat position to flat again (a flip closes one and
  opens the next); its P&L is realized P&L minus the fees of its fills (a
  flip's fill shares its fee pro rata). Win rate = round trips with P&L > 0 /
  round trips.
- turnover = traded notional / capital; exposure = the fraction of bars
  ending with a position, and the mean gross notional / capital.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal

import numpy as np

from tradetree.sim.backtest.runfolder import TradeRow

__all__ = ["Metrics", "RoundTrip", "round_trips", "sharpe_ratio", "sortino_ratio", "max_drawdown",
           "compute_metrics", "periods_per_year"]

_MS_PER_YEAR = 365.0 * 24 * 3600 * 1000
_ZERO = Decimal(0)


def periods_per_year(interval_ms: int) -> float:
    return _MS_PER_YEAR / interval_ms


def _returns(equity: np.ndarray) -> np.ndarray:
    e = np.asarray(equity, dtype=np.float64)
    if len(e) < 2:
        return np.zeros(0)
    prev = e[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(prev != 0, e[1:] / prev - 1.0, 0.0)
    return r


def sharpe_ratio(equity: np.ndarray, periods: float) -> float | None:
    r = _returns(equity)
    if len(r) < 2:
        return None
    sd = float(np.std(r, ddof=1))
    if not sd > 1e-15:
        return None
    return float(np.mean(r)) / sd * math.sqrt(periods)


def sortino_ratio(equity: np.ndarray, periods: float) -> float | None:
    r = _returns(equity)
    if len(r) < 2:
        return None
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
    if not downside > 1e-15:
        return None
    return float(np.mean(r)) / downside * math.sqrt(periods)


def max_drawdown(equity: np.ndarray) -> tuple[float, float]:
    """``(absolute, fraction of the peak)`` of the deepest drawdown (0, 0 when none)."""
    e = np.asarray(equity, dtype=np.float64)
    if len(e) == 0:
        return 0.0, 0.0
    peak = np.maximum.accumulate(e)
    dd = peak - e
    i = int(np.argmax(dd))
    absolute = float(dd[i])
    frac = absolute / float(peak[i]) if peak[i] > 0 else 0.0
    return absolute, frac


@dataclass(frozen=True, slots=True)
class RoundTrip:
    """From flat to flat on one instrument. ``side`` is the position's: +1 long, -1 short."""

    inst_id: str
    side: int
    entry_ts_ms: int
    exit_ts_ms: int
    max_qty: Decimal
    realized_pnl: Decimal
    fees: Decimal

    @property
    def net_pnl(self) -> Decimal:
        return self.realized_pnl - self.fees


def round_trips(trades: Sequence[TradeRow], contract_values: Mapping[str, Decimal]) -> list[RoundTrip]:
    """Closed round trips of ``trades`` (in time order), per instrument; an open one is left out.

    Raises:
        KeyError: an instrument has no contract value.
    """
    out: list[RoundTrip] = []
    state: dict[str, dict] = {}
    for t in trades:
        cv = contract_values[t.inst_id]
        st = state.setdefault(t.inst_id, {"qty": _ZERO, "avg": _ZERO, "trip": None})
        qty, size, px = st["qty"], t.size, t.price
        delta = size * t.sign
        if qty == 0 or (qty > 0) == (delta > 0):
            if st["trip"] is None:
                st["trip"] = {"side": t.sign, "entry": t.ts_ms, "pnl": _ZERO, "fees": _ZERO, "max": _ZERO}
            st["avg"] = px if qty == 0 else (abs(qty) * st["avg"] + size * px) / abs(qty + delta)
            st["qty"] = qty + delta
            st["trip"]["fees"] += t.fee
            st["trip"]["max"] = max(st["trip"]["max"], abs(st["qty"]))
            continue
        closed = min(abs(qty), size)
        trip = st["trip"]
        trip["pnl"] += closed * cv * (px - st["avg"]) * (1 if qty > 0 else -1)
        trip["fees"] += t.fee * closed / size
        new_qty = qty + delta
        if new_qty == 0 or (new_qty > 0) != (qty > 0):
            out.append(RoundTrip(t.inst_id, trip["side"], trip["entry"], t.ts_ms, trip["max"], trip["pnl"],
                                 trip["fees"]))
            st["trip"] = None
            st["avg"] = _ZERO
            if new_qty != 0:  # flipped: the rest opens a new trip at this price
                st["trip"] = {"side": t.sign, "entry": t.ts_ms, "pnl": _ZERO,
                              "fees": t.fee * (size - closed) / size, "max": abs(new_qty)}
                st["avg"] = px
        st["qty"] = new_qty
    return out


@dataclass(frozen=True)
class Metrics:
    """The headline numbers of a run (see the module doc for definitions). Money in quote currency."""

    bars: int
    start_ms: int
    end_ms: int
    capital: float
    final_equity: float
    net_pnl: float
    gross_pnl: float
    fees: float
    return_pct: float
    sharpe: float | None
    sortino: float | None
    max_drawdown: float
    max_drawdown_pct: float
    fills: int
    orders: int
    round_trips: int
    win_rate: float | None
    avg_round_trip_pnl: float | None
    profit_factor: float | None
    traded_notional: float
    turnover: float
    exposure_time: float
    avg_gross_exposure: float

    def as_dict(self) -> dict:
        return asdict(self)


def compute_metrics(
    *,
    equity: np.ndarray,
    bar_close_ms: np.ndarray,
    capital: float,
    interval_ms: int,
    trades: Sequence[TradeRow],
    orders: int,
    contract_values: Mapping[str, Decimal],
    gross_notional: np.ndarray,
) -> tuple[Metrics, list[RoundTrip]]:
    """Metrics of one run.

    ``equity`` and ``gross_notional`` (|position| x price x contract value
    summed over instruments) are sampled at ``bar_close_ms``; ``equity``
    does not include the starting point, which is ``capital``.
    """
    e = np.concatenate([[capital], np.asarray(equity, dtype=np.float64)])
    periods = periods_per_year(interval_ms)
    trips = round_trips(trades, contract_values)
    fees = float(sum((t.fee for t in trades), _ZERO))
    traded = float(sum((t.price * t.size * contract_values[t.inst_id] for t in trades), _ZERO))
    dd_abs, dd_frac = max_drawdown(e)
    wins = [t for t in trips if t.net_pnl > 0]
    gains = float(sum((t.net_pnl for t in wins), _ZERO))
    losses = -float(sum((t.net_pnl for t in trips if t.net_pnl < 0), _ZERO))
    net = float(e[-1] - capital)
    gn = np.asarray(gross_notional, dtype=np.float64)
    metrics = Metrics(
        bars=len(equity),
        start_ms=int(bar_close_ms[0]) - interval_ms if len(bar_close_ms) else 0,
        end_ms=int(bar_close_ms[-1]) if len(bar_close_ms) else 0,
        capital=capital,
        final_equity=float(e[-1]),
        net_pnl=net,
        gross_pnl=net + fees,
        fees=fees,
        return_pct=100.0 * net / capital if capital else 0.0,
        sharpe=sharpe_ratio(e, periods),
        sortino=sortino_ratio(e, periods),
        max_drawdown=dd_abs,
        max_drawdown_pct=100.0 * dd_frac,
        fills=len(trades),
        orders=orders,
        round_trips=len(trips),
        win_rate=len(wins) / len(trips) if trips else None,
        avg_round_trip_pnl=float(sum((t.net_pnl for t in trips), _ZERO)) / len(trips) if trips else None,
        profit_factor=(gains / losses) if losses > 0 else None,
        traded_notional=traded,
        turnover=traded / capital if capital else 0.0,
        exposure_time=float(np.mean(gn > 0)) if len(gn) else 0.0,
        avg_gross_exposure=float(np.mean(gn)) / capital if len(gn) and capital else 0.0,
    )
    return metrics, trips
