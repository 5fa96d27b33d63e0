"""Candle and order book data: load, validate, hash, and download with ccxt into a cache.

A candle frame is a pandas DataFrame with columns ``timestamp_ms`` (bar open
time, UTC epoch ms, int64, strictly increasing) and float64 ``open, high, low,
close, volume``, indexed 0..n-1. An order book snapshot frame has
``timestamp_ms, bid_price, bid_size, ask_price, ask_size`` (sizes may be the
depth summed over several levels).

Parquet needs ``pyarrow``, an optional dependency: without it ``.parquet``
paths raise ``MissingDependency`` and the ccxt cache is written as
``.csv.gz`` instead. CSV (plain or gzipped) always works.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tradetree.core import (
    Clock,
    VenueAuthError,
    VenueError,
    VenueProtocolError,
    VenueRateLimited,
    VenueUnavailable,
    WallClock,
)
from tradetree.ml.errors import DataError, MissingDependency

__all__ = [
    "CANDLE_COLUMNS",
    "ORDERBOOK_COLUMNS",
    "parquet_available",
    "validate_candles",
    "load_candles",
    "save_candles",
    "validate_orderbook",
    "load_orderbook_snapshots",
    "infer_interval_ms",
    "timeframe_to_ms",
    "frames_sha256",
    "cache_path_for",
    "fetch_ohlcv_cached",
]

log = logging.getLogger(__name__)

CANDLE_COLUMNS = ("timestamp_ms", "open", "high", "low", "close", "volume")
ORDERBOOK_COLUMNS = ("timestamp_ms", "bid_price", "bid_size", "ask_price", "ask_size")


def parquet_available() -> bool:
    """True when pandas can read and write Parquet here (pyarrow is importable)."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def _require_parquet(path: Path) -> None:
    if not parquet_available():
        raise MissingDependency(
            f"{path}: reading or writing Parquet needs pyarrow, which is not installed; "
            "use .csv / .csv.gz or add pyarrow to the environment"
        )


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def _read_table(path: Path) -> pd.DataFrame:
    if _is_parquet(path):
        _require_parquet(path)
        return pd.read_parquet(path)
    try:
        return pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None


def _write_table_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write to a temporary sibling then rename, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if _is_parquet(path):
        _require_parquet(path)
        frame.to_parquet(tmp, index=False)
    else:
        compression = "gzip" if path.name.endswith(".gz") else None
        frame.to_csv(tmp, index=False, compression=compression)
    os.replace(tmp, path)


def validate_candles(frame: pd.DataFrame, *, source: str = "candles") -> pd.DataFrame:
    """Return ``frame`` normalised to a candle frame, or raise.

    Columns are reduced to ``CANDLE_COLUMNS`` with canonical dtypes and the
    index reset to 0..n-1.

    Raises:
        DataError: a column is missing, timestamps are not strictly increasing,
            a price is not positive or finite, high/low do not bracket
            open/close, or volume is negative. The message names the first bad row.
    """
    missing = [c for c in CANDLE_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{source}: missing columns {missing} (need {list(CANDLE_COLUMNS)})")
    out = pd.DataFrame(
        {
            "timestamp_ms": frame["timestamp_ms"].to_numpy(dtype=np.int64),
            **{c: frame[c].to_numpy(dtype=np.float64) for c in CANDLE_COLUMNS[1:]},
        }
    )
    ts = out["timestamp_ms"].to_numpy()
    if len(ts) > 1:
        bad = np.flatnonzero(np.diff(ts) <= 0)
        if bad.size:
            i = int(bad[0]) + 1
            raise DataError(
                f"{source}: timestamps must strictly increase; row {i} has {ts[i]} after {ts[i - 1]}"
            )
    prices = out[["open", "high", "low", "close"]].to_numpy()
    checks = [
        (~np.isfinite(prices).all(axis=1) | (prices <= 0).any(axis=1), "prices must be finite and > 0"),
        (out["high"].to_numpy() < np.maximum(out["open"], out["close"]).to_numpy(), "high < max(open, close)"),
        (out["low"].to_numpy() > np.minimum(out["open"], out["close"]).to_numpy(), "low > min(open, close)"),
        (~np.isfinite(out["volume"].to_numpy()) | (out["volume"].to_numpy() < 0), "volume must be finite and >= 0"),
    ]
    for mask, rule in checks:
        if mask.any():
            i = int(np.flatnonzero(mask)[0])
            raise DataError(f"{source}: row {i} (timestamp_ms={ts[i]}): {rule}")
    return out


def load_candles(path: str | Path) -> pd.DataFrame:
    """Read a candle file (``.csv``, ``.csv.gz``, or ``.parquet`` when pyarrow is installed).

    Raises:
        DataError: unreadable or malformed (see ``validate_candles``).
        MissingDependency: a Parquet file without pyarrow.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    return validate_candles(_read_table(path), source=str(path))


def save_candles(frame: pd.DataFrame, path: str | Path) -> None:
    """Validate and write a candle frame atomically (format from the file suffix)."""
    _write_table_atomic(validate_candles(frame), Path(path))


def validate_orderbook(frame: pd.DataFrame, *, source: str = "orderbook") -> pd.DataFrame:
    """Return ``frame`` normalised to an order book snapshot frame, or raise ``DataError``.

    Raises:
        DataError: a column is missing, timestamps do not strictly increase,
            a price is not positive, the book is crossed (bid >= ask), or a
            size is negative.
    """
    missing = [c for c in ORDERBOOK_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{source}: missing columns {missing} (need {list(ORDERBOOK_COLUMNS)})")
    out = pd.DataFrame(
        {
            "timestamp_ms": frame["timestamp_ms"].to_numpy(dtype=np.int64),
            **{c: frame[c].to_numpy(dtype=np.float64) for c in ORDERBOOK_COLUMNS[1:]},
        }
    )
    ts = out["timestamp_ms"].to_numpy()
    if len(ts) > 1 and (np.diff(ts) <= 0).any():
        raise DataError(f"{source}: timestamps must strictly increase")
    bid, ask = out["bid_price"].to_numpy(), out["ask_price"].to_numpy()
    if (bid <= 0).any() or (ask <= bid).any():
        raise DataError(f"{source}: prices must be > 0 and bid < ask")
    if (out["bid_size"] < 0).any() or (out["ask_size"] < 0).any():
        raise DataError(f"{source}: sizes must be >= 0")
    return out


def load_orderbook_snapshots(path: str | Path) -> pd.DataFrame:
    """Read order book snapshots (CSV, or Parquet with pyarrow). See ``validate_orderbook``."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    return validate_orderbook(_read_table(path), source=str(path))


def infer_interval_ms(candles: pd.DataFrame) -> int:
    """The bar interval: the most common gap between consecutive timestamps.

    Raises:
        DataError: fewer than two bars.
    """
    ts = candles["timestamp_ms"].to_numpy(dtype=np.int64)
    if len(ts) < 2:
        raise DataError("need at least two bars to infer the bar interval")
    values, counts = np.unique(np.diff(ts), return_counts=True)
    return int(values[np.argmax(counts)])


_TIMEFRAME = re.compile(r"^(\d+)([smhdwM])$")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000, "M": 2_592_000_000}


def timeframe_to_ms(timeframe: str) -> int:
    """``"1m" -> 60000``, ``"4h" -> 14400000`` (ccxt spelling; ``M`` is 30 days).

    Raises:
        DataError: not a ccxt timeframe.
    """
    m = _TIMEFRAME.match(timeframe)
    if not m or int(m.group(1)) <= 0:
        raise DataError(f"not a timeframe: {timeframe!r} (expected e.g. 1m, 5m, 1h, 1d)")
    return int(m.group(1)) * _UNIT_MS[m.group(2)]


def frames_sha256(frames: Mapping[str, pd.DataFrame | None]) -> str:
    """sha256 over named frames' column names, dtypes and values, in name order.

    The same data always gives the same digest, whatever file it came from.
    ``None`` entries are skipped.
    """
    digest = hashlib.sha256()
    for name in sorted(frames):
        frame = frames[name]
        if frame is None:
            continue
        digest.update(f"<{name}:{len(frame)}>".encode())
        for col in frame.columns:
            arr = np.ascontiguousarray(frame[col].to_numpy())
            digest.update(f"{col}:{arr.dtype.str};".encode())
            digest.update(arr.tobytes())
    return digest.hexdigest()


def cache_path_for(cache_dir: str | Path, exchange_id: str, symbol: str, timeframe: str) -> Path:
    """Where ``fetch_ohlcv_cached`` keeps one market's candles: Parquet if possible, else CSV.gz."""
    safe = re.sub(r"[^A-Za-z0-9]+", "-", symbol).strip("-")
    suffix = ".parquet" if parquet_available() else ".csv.gz"
    return Path(cache_dir) / f"{exchange_id}_{safe}_{timeframe}{suffix}"


def _translate_ccxt_error(exc: Exception, venue: str) -> VenueError:
    import ccxt

    message = f"fetch_ohlcv failed: {type(exc).__name__}: {exc}"
    if isinstance(exc, (ccxt.RateLimitExceeded, ccxt.DDoSProtection)):
        return VenueRateLimited(message, venue=venue)
    if isinstance(exc, ccxt.AuthenticationError):
        return VenueAuthError(message, venue=venue)
    if isinstance(exc, ccxt.NetworkError):
        return VenueUnavailable(message, venue=venue)
    return VenueProtocolError(message, venue=venue)


def _rows_to_frame(rows: Iterable[Any]) -> pd.DataFrame:
    rows = list(rows)
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=np.int64 if c == "timestamp_ms" else np.float64) for c in CANDLE_COLUMNS})
    arr = np.asarray([r[:6] for r in rows], dtype=object)
    frame = pd.DataFrame(arr, columns=list(CANDLE_COLUMNS))
    frame["volume"] = frame["volume"].fillna(0.0)
    return frame


async def fetch_ohlcv_cached(
    exchange: Any,
    symbol: str,
    timeframe: str,
    *,
    since_ms: int,
    cache_path: str | Path,
    until_ms: int | None = None,
    page_limit: int = 1000,
    max_pages: int | None = None,
    clock: Clock | None = None,
) -> pd.DataFrame:
    """Download candles with ccxt ``fetch_ohlcv``, page by page, into a cache file.

    Resumable: when ``cache_path`` already holds candles, fetching starts one
    bar after the last cached one (``since_ms`` only matters for an empty
    cache). The cache is rewritten atomically after every page, so an
    interrupted download loses at most the page in flight. Only closed bars
    are stored (open time + interval <= ``until_ms``, default now), so a
    still-forming candle is never cached as final.

    ``exchange`` is any object with ccxt's ``fetch_ohlcv(symbol, timeframe,
    since, limit)``, sync or async (``ccxt`` or ``ccxt.async_support``).

    Returns:
        The whole cached candle frame (old and new bars).

    Raises:
        VenueRateLimited, VenueAuthError, VenueUnavailable, VenueProtocolError:
            the exchange call failed (translated from ccxt); pages already
            fetched stay cached.
        DataError: the exchange returned malformed or out-of-grid candles, or
            the existing cache is malformed.
        MissingDependency: a ``.parquet`` cache path without pyarrow.
    """
    cache_path = Path(cache_path)
    interval_ms = timeframe_to_ms(timeframe)
    now_ms = (clock or WallClock()).now_ms()
    until_ms = now_ms if until_ms is None else min(until_ms, now_ms)
    venue = str(getattr(exchange, "id", "exchange"))

    cached = load_candles(cache_path) if cache_path.exists() else validate_candles(_rows_to_frame([]))
    start_ms = int(cached["timestamp_ms"].iloc[-1]) + interval_ms if len(cached) else int(since_ms)
    pages = 0
    while start_ms + interval_ms <= until_ms and (max_pages is None or pages < max_pages):
        try:
            result = exchange.fetch_ohlcv(symbol, timeframe, since=start_ms, limit=page_limit)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            import ccxt

            if isinstance(exc, ccxt.BaseError):
                raise _translate_ccxt_error(exc, venue) from exc
            raise
        pages += 1
        page = validate_candles(_rows_to_frame(result or []), source=f"{venue} {symbol} {timeframe} page")
        ts = page["timestamp_ms"].to_numpy()
        # Every bar must sit on the grid of the bars already cached (or of this page).
        anchor = int(cached["timestamp_ms"].iloc[-1]) if len(cached) else (int(ts[0]) if len(ts) else 0)
        off_grid = (ts - anchor) % interval_ms != 0
        if off_grid.any():
            raise DataError(
                f"{venue} {symbol} {timeframe}: bar at {int(ts[off_grid][0])} is off the "
                f"{interval_ms} ms grid through {anchor}"
            )
        page = page[(ts >= start_ms) & (ts + interval_ms <= until_ms)]
        if page.empty:
            break  # nothing new (end of history, or only the forming bar)
        cached = validate_candles(pd.concat([cached, page], ignore_index=True), source=str(cache_path))
        _write_table_atomic(cached, cache_path)
        start_ms = int(page["timestamp_ms"].iloc[-1]) + interval_ms
        log.info("cached %d %s %s bars up to %d in %s", len(page), symbol, timeframe, start_ms, cache_path)
    return cached
