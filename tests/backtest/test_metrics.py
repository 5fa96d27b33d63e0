"""Metrics on crafted equity curves and trade lists."""

from __future__ import annotations

import math
from decimal import Decimal as D

import numpy as np
import pytest

from tradetree.sim.backtest.metrics import compute_metrics, max_drawdown, round_trips, sharpe_ratio, sortino_ratio
from tradetree.sim.backtest.runfolder import TradeRow


def trade(ts, side, price, size, fee="0", inst="X"):
    return TradeRow(ts, inst, side, D(str(price)), D(str(size)), D(fee), "USDT", "taker", f"c{ts}", "s", "v", str(ts))


def test_max_drawdown_absolute_and_relative():
    assert max_drawdown(np.array([100, 110, 99, 120, 108])) == pytest.approx((12.0, 12 / 120))
    assert max_drawdown(np.array([100, 101, 102])) == (0.0, 0.0)


def test_sharpe_and_sortino_by_hand():
    e = np.array([100.0, 101.0, 99.99, 101.9898, 101.9898])
    r = e[1:] / e[:-1] - 1
    expect_sharpe = r.mean() / r.std(ddof=1) * math.sqrt(252)
    expect_sortino = r.mean() / math.sqrt(np.mean(np.minimum(r, 0) ** 2)) * math.sqrt(252)
    assert sharpe_ratio(e, 252) == pytest.approx(expect_sharpe)
    assert sortino_ratio(e, 252) == pytest.approx(expect_sortino)


def test_undefined_ratios_are_none():
    flat = np.array([100.0, 100.0, 100.0])
    assert sharpe_ratio(flat, 252) is None and sortino_ratio(flat, 252) is None
    rising = np.array([100.0, 101.0, 102.0, 104.0])
    assert sortino_ratio(rising, 252) is None  # no downside
    assert sharpe_ratio(np.array([100.0, 101.0]), 252) is None


def test_round_trips_with_scale_in_partial_exit_and_flip():
    trades = [
        trade(1, "buy", 100, 1, "0.1"),
        trade(2, "buy", 110, 1, "0.1"),   # avg 105
        trade(3, "sell", 120, 1, "0.1"),  # +15 realized, still long 1
        trade(4, "sell", 90, 3, "0.3"),   # closes 1 at 90 (-15) and flips short 2 at 90
        trade(5, "buy", 80, 2, "0.2"),    # short closed: +20
    ]
    trips = round_trips(trades, {"X": D(1)})
    assert len(trips) == 2
    first, second = trips
    assert (first.side, first.entry_ts_ms, first.exit_ts_ms, first.max_qty) == (1, 1, 4, D(2))
    assert first.realized_pnl == D(0) and first.fees == D("0.1") + D("0.1") + D("0.1") + D("0.1")
    assert (second.side, second.realized_pnl, second.fees) == (-1, D(20), D("0.2") + D("0.2"))


def test_compute_metrics_on_a_crafted_run():
    trades = [trade(1, "buy", 100, 2, "0.2"), trade(2, "sell", 110, 2, "0.22"),
              trade(3, "buy", 105, 1, "0.1"), trade(4, "sell", 100, 1, "0.1")]
    equity = np.array([1000.0, 1019.58, 1019.58, 1014.38])
    m, trips = compute_metrics(
        equity=equity, bar_close_ms=np.array([60_000, 120_000, 180_000, 240_000]), capital=1000.0,
        interval_ms=60_000, trades=trades, orders=4, contract_values={"X": D(1)},
        gross_notional=np.array([200.0, 0.0, 105.0, 0.0]))
    assert m.net_pnl == pytest.approx(14.38)
    assert m.fees == pytest.approx(0.62) and m.gross_pnl == pytest.approx(15.0)
    assert (m.round_trips, m.win_rate) == (2, 0.5)
    assert m.profit_factor == pytest.approx((20 - 0.42) / (5 + 0.2))
    assert m.traded_notional == pytest.approx(200 + 220 + 105 + 100)
    assert m.turnover == pytest.approx(0.625)
    assert m.exposure_time == 0.5
    assert m.max_drawdown == pytest.approx(5.2)
    assert m.bars == 4 and m.start_ms == 0 and m.end_ms == 240_000
