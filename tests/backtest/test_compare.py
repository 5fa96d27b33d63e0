"""Divergence report: matching and an exact split of a crafted P&L difference."""

from __future__ import annotations

from decimal import Decimal as D

import numpy as np

from tradetree.sim.backtest.compare import (
    ReferencePrices,
    RunData,
    compare_runs,
    load_run,
    render_markdown,
    write_comparison,
)
from tradetree.sim.backtest.config import BacktestConfig
from tradetree.sim.backtest.data import CandleSeries
from tradetree.sim.backtest.engine import run_backtest
from tradetree.sim.backtest.report import write_run
from tradetree.sim.backtest.runfolder import TradeRow


def row(ts, side, price, size, fee, coid):
    return TradeRow(ts, "X", side, D(str(price)), D(str(size)), D(fee), "USDT", "taker", coid, "s", "v", coid)


def runs(shift_ms: int = 1_000) -> tuple[RunData, RunData]:
    a = [row(0, "buy", 100, 1, "0.1", "a1"), row(60_000, "sell", 110, 1, "0.11", "a2"),
         row(180_000, "buy", 105, 2, "0.2", "a3")]
    b = [row(0 + shift_ms, "buy", 101, 1, "0.2", "b1"), row(60_000 + shift_ms, "sell", 109, 1, "0.2", "b2"),
         row(180_000 + shift_ms, "buy", 104, 1, "0.1", "b3"), row(300_000, "sell", 107, 1, "0.1", "b4")]
    meta = {"kind": "test", "contract_values": {"X": "1"}}
    return RunData("A", meta, a), RunData("B", meta, b)


def test_crafted_difference_splits_exactly_into_its_causes():
    a, b = runs()
    div = compare_runs(a, b, marks={"X": D(108)})
    assert (div.pnl_a, div.pnl_b) == (D("15.59"), D("10.4"))
    assert div.difference == D("-5.19")
    assert div.fill_price == D(-1)  # -1 (buy dearer) -1 (sell cheaper) +1 (buy cheaper)
    assert div.timing == 0 and not div.timing_separated
    assert div.missed == D(-3)  # B bought only 1 of A's 2 at 105, worth 3 at the mark
    assert div.extra == D(-1)  # B's extra short from 107, marked at 108
    assert div.fees == D("-0.19")
    assert sum(div.buckets().values()) == div.difference
    assert (len(div.pairs), len(div.only_a), len(div.only_b)) == (3, 1, 1)
    assert [p.lag_ms for p in div.pairs] == [1_000, 1_000, 1_000]


def test_reference_data_separates_timing_from_fill_price():
    a, b = runs(shift_ms=20_000)
    # candle 0 rises 100 -> 99 (low at 15 s) -> 102 (high at 30 s) -> 101: A fills at 0 s (ref 100),
    # B 20 s later (ref 99)
    ts = np.arange(6, dtype=np.int64) * 60_000
    series = CandleSeries.from_arrays("ref", ts, [100, 110, 106, 105, 107, 108], [102, 111, 107, 106, 108, 108],
                                      [99, 109, 105, 104, 106, 107], [101, 110, 106, 105, 107, 108], [1] * 6)
    div = compare_runs(a, b, reference=ReferencePrices({"X": series}), marks={"X": D(108)})
    first = div.pairs[0]
    assert first.timing == D(1)  # the market was 1 lower when B bought
    assert first.fill_price == D(-2)  # B paid 2 over its market, A paid its market
    assert div.timing_separated
    assert sum(div.buckets().values()) == div.difference == D("-5.19")


def test_tolerance_decides_what_is_matched():
    a, b = runs(shift_ms=1_000)
    div = compare_runs(a, b, tolerance_ms=500, marks={"X": D(108)})
    assert div.pairs == [] and len(div.only_a) == 3 and len(div.only_b) == 4
    assert sum(div.buckets().values()) == div.difference


def test_a_backtest_compared_with_itself_has_no_difference(tmp_path, candles, mr_config):
    result = run_backtest(mr_config, candles, BacktestConfig())
    a = write_run(result, tmp_path / "a", plots=False)
    b = write_run(result, tmp_path / "b", plots=False)
    div = compare_runs(load_run(a), load_run(b))
    assert div.difference == 0 and not div.only_a and not div.only_b
    assert len(div.pairs) == len({t.client_order_id for t in result.trades})
    out = write_comparison(div, tmp_path / "cmp")
    assert (out / "compare.json").exists() and "difference B - A" in (out / "compare.md").read_text()
    assert "Divergence" in render_markdown(div)
