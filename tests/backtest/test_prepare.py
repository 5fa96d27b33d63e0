"""Vectorised preparation is exact; the candle-file cache is checked before it is trusted."""

from __future__ import annotations

import gc
import os
from decimal import Decimal

import numpy as np
import pytest

from tests.backtest.conftest import mean_reversion_config
from tradetree.sim.backtest._fast import BarDecimal, bar_decimals_of_texts, bar_decimals_of_ticks
from tradetree.sim.backtest.config import BacktestConfig, FillRule
from tradetree.sim.backtest.data import (
    CandleCache,
    file_digest,
    load_candle_series,
    load_candles_cached,
    synthetic_candles,
)
from tradetree.sim.backtest.engine import Backtester, clear_bar_tables, prepare_data
from tradetree.sim.backtest.prepare import (
    bar_groups,
    emit_table,
    grid_exponent,
    grid_ticks,
    market_key,
    prepare_market,
    tick_decimal,
    ticks_to_float,
)
from tradetree.sim.backtest.runfolder import trades_csv_text


def _reference(values: np.ndarray, tick: Decimal) -> list[Decimal]:
    """The per-value rule the arrays replace: the CSV decimal, quantized, one tick at least."""
    out = []
    for text in np.asarray(values, dtype=np.float64).astype(str).tolist():
        d = Decimal(text)
        out.append(d.quantize(tick) if d >= tick else tick)
    return out


@pytest.mark.parametrize("tick", ["0.01", "0.1", "0.5", "1", "0.0001", "0.05"])
def test_grid_ticks_equal_decimal_quantize_including_exact_halves(tick):
    tick_d = Decimal(tick)
    rng = np.random.default_rng(3)
    values = np.concatenate([
        *(rng.uniform(0.001, 200_000, 700).round(digits) for digits in range(7)),
        [1.005, 1.015, 2.675, 0.125, 0.375, 2.5, 3.5, 0.05, 0.15, 0.25, 105573.735, 0.00001, 0.004, 0.5, 1e-9],
    ])
    exp = grid_exponent(tick_d)
    got = grid_ticks(values, tick_d)
    want = _reference(values, tick_d)
    assert [tick_decimal(int(t), exp) for t in got] == want
    # same digits and exponent, not only the same value: the text is what the trade files print
    assert [str(tick_decimal(int(t), exp)) for t in got] == [str(d) for d in want]
    assert ticks_to_float(got, exp).tolist() == [float(d) for d in want]


def test_half_even_cases_go_through_decimal():
    ticks = grid_ticks(np.array([1.015, 1.025, 0.125]), Decimal("0.01"))
    assert ticks.tolist() == [102, 102, 12]  # Decimal('1.015') -> 1.02, '1.025' -> 1.02, '0.125' -> 0.12


def test_bar_decimals_carry_their_float_and_text():
    ticks = [10557373, 5, 100]
    out = bar_decimals_of_ticks(ticks, -2, ticks_to_float(np.array(ticks), -2).tolist())
    assert [str(d) for d in out] == ["105573.73", "0.05", "1.00"]
    assert all(isinstance(d, BarDecimal) for d in out)
    assert [float(d) for d in out] == [float(Decimal(str(d))) for d in out]
    texts = bar_decimals_of_texts(["10.82647", "1e-05"], [10.82647, 1e-05])
    assert texts == [Decimal("10.82647"), Decimal("0.00001")] and float(texts[1]) == 1e-05
    assert [str(d) for d in bar_decimals_of_ticks([12], 1, [120.0])] == [str(Decimal(12).scaleb(1))]


def test_bar_groups_and_emit_tables():
    ts = np.array([0, 60, 120, 180, 300, 360], dtype=np.int64) * 1000
    group_of, starts = bar_groups(ts, 120_000)
    assert group_of.tolist() == [0, 0, 1, 1, 2, 3] and starts.tolist() == [0, 2, 4, 5]
    # next tick: a bar is final at the first point of the next bar; the last bar never is
    assert emit_table(group_of, True).tolist() == [-1, -1, 0, -1, 1, 2]
    # at the close: final at its own last candle, the last one included
    assert emit_table(group_of, False).tolist() == [-1, 0, -1, 1, 2, 3]


def test_prepared_market_decision_times_and_key():
    s = synthetic_candles(50, seed=2)
    ticks = {"BTC-USDT": Decimal("0.1")}
    m = prepare_market({"BTC-USDT": s}, ticks, 60_000, False)
    assert m.decision_ms.tolist() == (s.ts_ms + 3 * 60_000 // 4).tolist()
    assert m.key == market_key({"BTC-USDT": s}, ticks, 60_000, False)
    assert m.key != market_key({"BTC-USDT": s}, ticks, 60_000, True)
    assert m.key != market_key({"BTC-USDT": s}, {"BTC-USDT": Decimal("0.01")}, 60_000, False)
    assert m.key != market_key({"BTC-USDT": s.slice(1)}, ticks, 60_000, False)
    with pytest.raises(ValueError):
        prepare_market({"BTC-USDT": s}, ticks, 0, False)


def _run(candles, **kwargs):
    clear_bar_tables()
    config = BacktestConfig(seed=5, **kwargs.pop("config", {}))
    return Backtester(mean_reversion_config(), candles, config, **kwargs).run()


@pytest.mark.parametrize("rule", [FillRule.NEXT_TICK, FillRule.SIGNAL_CLOSE])
def test_a_shared_preparation_gives_the_same_trades(candles, rule):
    baseline = trades_csv_text(_run(candles, config={"fill_rule": rule}).trades)
    assert baseline.count("\n") > 5  # it trades, so the comparison means something
    shared = prepare_data(mean_reversion_config(), candles, BacktestConfig(fill_rule=rule))
    again = _run(candles, config={"fill_rule": rule}, prepared=shared)
    assert trades_csv_text(again.trades) == baseline


def test_a_preparation_of_other_data_is_not_used(candles):
    other = prepare_data(mean_reversion_config(), candles.slice(0, 300), BacktestConfig(seed=5))
    bt = Backtester(mean_reversion_config(), candles, BacktestConfig(seed=5), prepared=other)
    assert bt.prepared is not other and len(bt.prepared.emit) == len(candles)
    assert any("prepared=" in note for note in bt.notes)  # so a caller (a sweep) can tell
    shared = prepare_data(mean_reversion_config(), candles, BacktestConfig(seed=5))
    used = Backtester(mean_reversion_config(), candles, BacktestConfig(seed=5), prepared=shared)
    assert used.prepared is shared and not any("prepared=" in note for note in used.notes)


def _candle_file(tmp_path, seed=4):
    path = tmp_path / f"c{seed}.csv"
    synthetic_candles(40, seed=seed).to_frame().to_csv(path, index=False)
    return path


def _entry(root):
    files = list(root.glob("candles-*.npz"))
    assert len(files) == 1
    return files[0]


def test_a_corrupt_cache_entry_is_parsed_again_not_trusted(tmp_path):
    path = _candle_file(tmp_path)
    load_candles_cached(path, CandleCache(tmp_path / "cache"))
    entry = _entry(tmp_path / "cache")
    entry.write_bytes(entry.read_bytes()[:200])  # truncated
    again = CandleCache(tmp_path / "cache")
    assert np.array_equal(load_candles_cached(path, again).close, load_candle_series(path).close)
    assert again.rejected == 1 and again.hits == 0
    fresh = CandleCache(tmp_path / "cache")  # the parse rewrote the entry
    load_candles_cached(path, fresh)
    assert fresh.hits == 1


def test_an_edited_cache_entry_fails_its_checksum(tmp_path):
    path = _candle_file(tmp_path)
    load_candles_cached(path, CandleCache(tmp_path / "cache"))
    entry = _entry(tmp_path / "cache")
    with np.load(entry) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["close"] = arrays["close"].copy()
    arrays["close"][10] = arrays["high"][10]  # a plausible but wrong candle
    np.savez(entry, **arrays)
    key = str(arrays["__key__"])
    fresh = CandleCache(tmp_path / "cache")
    assert fresh.get(key) is None and fresh.rejected == 1


def test_a_stale_entry_under_another_key_is_not_used(tmp_path):
    cache = CandleCache(tmp_path / "cache")
    a, b = file_digest(_candle_file(tmp_path, 1)), file_digest(_candle_file(tmp_path, 2))
    series = synthetic_candles(40, seed=1)
    cache.put(a, {name: getattr(series, name) for name in ("ts_ms", "open", "high", "low", "close", "volume")})
    cache.file(a).rename(cache.file(b))
    assert cache.get(b) is None and cache.rejected == 1


def test_candle_files_are_cached_by_content(tmp_path):
    series = synthetic_candles(40, seed=4)
    path = tmp_path / "c.csv"
    series.to_frame().to_csv(path, index=False)
    cache = CandleCache(tmp_path / "cache")
    a = load_candles_cached(path, cache)
    b = load_candles_cached(path, cache)
    assert (cache.misses, cache.hits) == (1, 1)
    direct = load_candle_series(path)
    for col in ("ts_ms", "open", "high", "low", "close", "volume"):
        assert np.array_equal(getattr(a, col), getattr(direct, col))
        assert np.array_equal(getattr(b, col), getattr(direct, col))
    synthetic_candles(40, seed=5).to_frame().to_csv(path, index=False)  # the file changes: a new key
    c = load_candles_cached(path, cache)
    assert np.array_equal(c.close, load_candle_series(path).close) and cache.misses == 2


def test_the_candle_cache_keeps_only_the_most_recently_used_entries(tmp_path):
    cache = CandleCache(tmp_path / "cache", keep=2)
    paths = [_candle_file(tmp_path, seed) for seed in (1, 2, 3)]
    load_candles_cached(paths[0], cache)
    load_candles_cached(paths[1], cache)
    os.utime(cache.file(file_digest(paths[1])), (1, 1))  # long unused
    load_candles_cached(paths[0], cache)  # a hit refreshes its entry
    load_candles_cached(paths[2], cache)  # a third entry evicts the least recently used
    assert sorted(p.name for p in (tmp_path / "cache").glob("candles-*.npz")) == sorted(
        cache.file(file_digest(p)).name for p in (paths[0], paths[2]))


def test_bar_tables_freeze_what_they_built_instead_of_a_full_collection(candles, monkeypatch):
    clear_bar_tables()

    def full_collection(*args):
        raise AssertionError("a full collection walks the whole heap per table")

    monkeypatch.setattr(gc, "collect", full_collection)
    frozen = gc.get_freeze_count()
    Backtester(mean_reversion_config(), candles, BacktestConfig(seed=5))
    assert gc.isenabled() and gc.get_freeze_count() > frozen
