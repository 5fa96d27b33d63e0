"""Candle files in (CSV, CSV.gz, Parquet), validated; seeded synthetic candles."""

from __future__ import annotations

import gzip
from decimal import Decimal

import numpy as np
import pytest

from tradetree.sim.backtest.data import CandleSeries, align_series, load_candle_series, synthetic_candles

CSV = """timestamp_ms,open,high,low,close,volume
1700000060000,100.5,101.25,100.0,101.0,3.5
1700000000000,100.0,100.75,99.5,100.5,2.25
1700000120000,101.0,101.0,100.1,100.2,0.00001
"""


def test_csv_gz_and_parquet_read_the_same(tmp_path):
    plain = tmp_path / "c.csv"
    plain.write_text(CSV)
    gz = tmp_path / "c.csv.gz"
    gz.write_bytes(gzip.compress(CSV.encode()))
    a, b = load_candle_series(plain), load_candle_series(gz)
    pq = tmp_path / "c.parquet"
    a.to_frame().to_parquet(pq)
    c = load_candle_series(pq)
    for s in (a, b, c):
        assert s.ts_ms.tolist() == [1700000000000, 1700000060000, 1700000120000]  # sorted
        assert s.interval_ms == 60_000
    o, h, lo, cl, v = c.decimals()
    assert (o[1], h[1], lo[2], v[2]) == (Decimal("100.5"), Decimal("101.25"), Decimal("100.1"), Decimal("0.00001"))


def test_parquet_datetime_time_column(tmp_path):
    frame = load_candle_series_frame()
    frame["timestamp"] = frame.pop("timestamp_ms").astype("datetime64[ms]")
    path = tmp_path / "d.parquet"
    frame.to_parquet(path)
    assert load_candle_series(path).ts_ms.tolist() == [1700000000000, 1700000060000]


def load_candle_series_frame():
    import pandas as pd

    return pd.DataFrame({"timestamp_ms": [1700000000000, 1700000060000], "open": [1.0, 2.0], "high": [2.0, 2.0],
                         "low": [1.0, 1.5], "close": [2.0, 1.5], "volume": [1.0, 1.0]})


@pytest.mark.parametrize("text, message", [
    ("timestamp_ms,open,high,low,close\n1,1,1,1,1\n", "missing column"),
    ("timestamp_ms,open,high,low,close,volume\n1,1,0.5,1,1,1\n", "not a valid candle"),
    ("timestamp_ms,open,high,low,close,volume\n1,1,1,1,1,1\n1,1,1,1,1,1\n", "share the time"),
    ("timestamp_ms,open,high,low,close,volume\n1,x,1,1,1,1\n", "does not parse"),
    ("timestamp_ms,open,high,low,close,volume\n", "no candle rows"),
])
def test_bad_files_are_refused_with_the_reason(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_candle_series(path)


def test_unknown_extension_is_refused(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("{}")
    with pytest.raises(ValueError, match="unknown candle file type"):
        load_candle_series(path)


def test_synthetic_candles_are_seeded_valid_and_on_the_tick_grid():
    a = synthetic_candles(1000, seed=5)
    b = synthetic_candles(1000, seed=5)
    c = synthetic_candles(1000, seed=6)
    assert np.array_equal(a.close, b.close) and not np.array_equal(a.close, c.close)
    assert (a.high >= np.maximum(a.open, a.close)).all() and (a.low <= np.minimum(a.open, a.close)).all()
    assert all(d.as_tuple().exponent >= -2 for d in a.decimals()[3])
    assert a.open[1] == a.close[0]


def test_align_keeps_common_times_only():
    a = synthetic_candles(10, seed=1)
    b = CandleSeries.from_arrays("b", a.ts_ms[::2], a.open[::2], a.high[::2], a.low[::2], a.close[::2],
                                 a.volume[::2])
    aligned = align_series({"A": a, "B": b})
    assert aligned["A"].ts_ms.tolist() == b.ts_ms.tolist() == aligned["B"].ts_ms.tolist()
    assert aligned["A"].close.tolist() == a.close[::2].tolist()
