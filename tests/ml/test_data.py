import gzip

import ccxt
import numpy as np
import pandas as pd
import pytest

from tradetree.core.clock import ManualClock
from tradetree.core.errors import VenueRateLimited, VenueUnavailable
from tradetree.ml.data import (
    cache_path_for,
    fetch_ohlcv_cached,
    frames_sha256,
    infer_interval_ms,
    load_candles,
    parquet_available,
    save_candles,
    timeframe_to_ms,
    validate_candles,
)
from tradetree.ml.errors import DataError, MissingDependency
from tradetree.ml.synthetic import generate_regime_candles

MINUTE = 60_000
T0 = 1_700_000_040_000 - (1_700_000_040_000 % MINUTE)


def test_csv_gz_round_trip_and_hash(tmp_path):
    candles = generate_regime_candles(50, seed=1).candles
    path = tmp_path / "btc.csv.gz"
    save_candles(candles, path)
    with gzip.open(path, "rt") as fh:
        assert fh.readline().strip() == "timestamp_ms,open,high,low,close,volume"
    loaded = load_candles(path)
    pd.testing.assert_frame_equal(loaded, validate_candles(candles))
    assert frames_sha256({"c": loaded}) == frames_sha256({"c": candles})
    changed = loaded.copy()
    changed.loc[10, "close"] = changed.loc[10, "close"] * 1.0000001
    assert frames_sha256({"c": changed}) != frames_sha256({"c": loaded})


def test_parquet_needs_pyarrow(tmp_path):
    candles = generate_regime_candles(20, seed=1).candles
    if parquet_available():
        save_candles(candles, tmp_path / "c.parquet")
        pd.testing.assert_frame_equal(load_candles(tmp_path / "c.parquet"), validate_candles(candles))
    else:
        with pytest.raises(MissingDependency, match="pyarrow"):
            save_candles(candles, tmp_path / "c.parquet")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: f.drop(columns=["volume"]), "missing columns"),
        (lambda f: f.iloc[[0, 2, 1, 3]], "strictly increase"),
        (lambda f: f.assign(high=f["low"] * 0.99), "high <"),
        (lambda f: f.assign(close=-f["close"]), "prices must be"),
        (lambda f: f.assign(volume=-1.0), "volume"),
    ],
)
def test_malformed_candles_are_rejected(change, message):
    frame = generate_regime_candles(10, seed=1).candles
    with pytest.raises(DataError, match=message):
        validate_candles(change(frame))


def test_timeframes_and_interval():
    assert timeframe_to_ms("1m") == MINUTE and timeframe_to_ms("4h") == 4 * 3_600_000
    with pytest.raises(DataError):
        timeframe_to_ms("1x")
    frame = pd.DataFrame({"timestamp_ms": [0, 60, 120, 300, 360]})
    assert infer_interval_ms(frame) == 60


class FakeExchange:
    """ccxt's fetch_ohlcv contract over a fixed list of 1m bars; can fail on a given call."""

    id = "fakex"

    def __init__(self, n_bars: int, *, fail_on_call: int | None = None, error: Exception | None = None):
        self.bars = [[T0 + i * MINUTE, 100.0 + i, 101.0 + i, 99.0 + i, 100.5 + i, 1.0] for i in range(n_bars)]
        self.calls: list[tuple[int, int]] = []
        self.fail_on_call, self.error = fail_on_call, error

    def fetch_ohlcv(self, symbol, timeframe, since=None, limit=None):
        self.calls.append((since, limit))
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise self.error
        return [b for b in self.bars if b[0] >= since][:limit]


class AsyncFakeExchange(FakeExchange):
    async def fetch_ohlcv(self, symbol, timeframe, since=None, limit=None):
        return FakeExchange.fetch_ohlcv(self, symbol, timeframe, since, limit)


async def test_fetch_paginates_caches_and_skips_the_forming_bar(tmp_path):
    ex = FakeExchange(25)
    path = tmp_path / "cache.csv.gz"
    # the clock sits inside bar 24: it is still forming and must not be cached
    clock = ManualClock(start_ms=T0 + 24 * MINUTE + 30_000)
    frame = await fetch_ohlcv_cached(ex, "BTC/USDT", "1m", since_ms=T0, cache_path=path, page_limit=10, clock=clock)
    assert len(frame) == 24 and frame["timestamp_ms"].iloc[-1] == T0 + 23 * MINUTE
    assert [since for since, _ in ex.calls] == [T0, T0 + 10 * MINUTE, T0 + 20 * MINUTE]
    pd.testing.assert_frame_equal(load_candles(path), frame)


async def test_fetch_resumes_from_the_cache_after_a_failure(tmp_path):
    path = tmp_path / "cache.csv.gz"
    clock = ManualClock(start_ms=T0 + 40 * MINUTE)
    failing = FakeExchange(40, fail_on_call=3, error=ccxt.RequestTimeout("timed out"))
    with pytest.raises(VenueUnavailable):
        await fetch_ohlcv_cached(failing, "BTC/USDT", "1m", since_ms=T0, cache_path=path, page_limit=10, clock=clock)
    assert len(load_candles(path)) == 20  # the two pages fetched before the failure are kept

    ex = AsyncFakeExchange(40)
    frame = await fetch_ohlcv_cached(ex, "BTC/USDT", "1m", since_ms=T0, cache_path=path, page_limit=10, clock=clock)
    assert ex.calls[0][0] == T0 + 20 * MINUTE  # resumed one bar after the last cached one
    assert len(frame) == 40 and (np.diff(frame["timestamp_ms"]) == MINUTE).all()


async def test_rate_limit_is_translated(tmp_path):
    ex = FakeExchange(5, fail_on_call=1, error=ccxt.RateLimitExceeded("slow down"))
    with pytest.raises(VenueRateLimited) as info:
        await fetch_ohlcv_cached(ex, "BTC/USDT", "1m", since_ms=T0, cache_path=tmp_path / "c.csv",
                                 clock=ManualClock(start_ms=T0 + 5 * MINUTE))
    assert info.value.venue == "fakex"


async def test_off_grid_bars_are_refused(tmp_path):
    ex = FakeExchange(5)
    ex.bars[3][0] += 1
    with pytest.raises(DataError, match="grid"):
        await fetch_ohlcv_cached(ex, "BTC/USDT", "1m", since_ms=T0, cache_path=tmp_path / "c.csv",
                                 clock=ManualClock(start_ms=T0 + 5 * MINUTE))


def test_cache_path_names_the_market(tmp_path):
    path = cache_path_for(tmp_path, "okx", "BTC/USDT:USDT", "1m")
    assert path.name.startswith("okx_BTC-USDT-USDT_1m.")
    assert path.suffix == (".parquet" if parquet_available() else ".gz")
