"""Candle files as arrays: CSV, CSV.gz or Parquet in, :class:`CandleSeries` out.

The columns are the project's candle format (``/work/shared/data/README.md``):
``timestamp_ms, open, high, low, close, volume`` with ``timestamp_ms`` the
candle's **open** time in epoch milliseconds. ``ts_ms``, ``timestamp`` and
``open_time`` are accepted for the time column; a Parquet datetime column is
converted to milliseconds. Extra columns are ignored.

Prices are held as float64 arrays for the vectorised parts (metrics, equity);
:meth:`CandleSeries.decimals` gives the exact decimal of every value (the
shortest decimal that round-trips the float, i.e. the text of the CSV file),
which is what the strategy and the matching engine see.

:func:`load_candles_cached` keeps parsed files on disk (:class:`CandleCache`),
keyed by the file's sha256 and :data:`PARSER_VERSION`.

:func:`synthetic_candles` makes seeded test and benchmark data.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd

from tradetree.sim.market_data import Candle

__all__ = [
    "CandleSeries",
    "decimal_texts",
    "load_candle_series",
    "synthetic_candles",
    "align_series",
    "PARSER_VERSION",
    "CandleCache",
    "default_cache_dir",
    "file_digest",
    "load_candles_cached",
]

_TIME_COLUMNS = ("timestamp_ms", "ts_ms", "timestamp", "open_time")
_PRICE_COLUMNS = ("open", "high", "low", "close", "volume")


def decimal_texts(values: np.ndarray) -> list[str]:
    """The shortest decimal text that round-trips each float: the text a CSV file held, for any
    value with up to 15 significant digits. Every decimal the backtest makes of a float uses it."""
    return np.asarray(values, dtype=np.float64).astype(str).tolist()


@dataclass(frozen=True, eq=False)
class CandleSeries:
    """OHLCV candles sorted by open time, as numpy arrays of equal length.

    ``source`` says where they came from (a path, or a description of
    generated data). Construct with :func:`load_candle_series`,
    :func:`synthetic_candles` or :meth:`from_arrays` (which validates).
    """

    source: str
    ts_ms: np.ndarray  # int64, candle open time, strictly increasing
    open: np.ndarray  # float64
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    _decimals: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_arrays(cls, source: str, ts_ms, open_, high, low, close, volume) -> CandleSeries:
        """Validate and wrap arrays.

        Raises:
            ValueError: lengths differ, no rows, a value is not finite, a price
                is not positive, high/low do not bracket open/close, or the
                times are not strictly increasing.
        """
        ts = np.asarray(ts_ms, dtype=np.int64)
        cols = [np.asarray(c, dtype=np.float64) for c in (open_, high, low, close, volume)]
        if any(len(c) != len(ts) for c in cols):
            raise ValueError(f"{source}: columns have different lengths")
        if len(ts) == 0:
            raise ValueError(f"{source}: no candle rows")
        o, h, lo, c, v = cols
        bad = ~np.isfinite(np.stack(cols)).all(axis=0)
        bad |= (lo <= 0) | (v < 0)
        bad |= (h < np.maximum(o, c)) | (lo > np.minimum(o, c))
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"{source}: row {i} (ts {int(ts[i])}) is not a valid candle: open={o[i]} high={h[i]} "
                f"low={lo[i]} close={c[i]} volume={v[i]}"
            )
        steps = np.diff(ts)
        if (steps <= 0).any():
            i = int(np.argmax(steps <= 0)) + 1
            raise ValueError(f"{source}: timestamps not strictly increasing at row {i} (ts {int(ts[i])})")
        return cls(source, ts, o, h, lo, c, v)

    def __len__(self) -> int:
        return len(self.ts_ms)

    @property
    def interval_ms(self) -> int:
        """The candle length: the most common gap between open times (60 000 for one row)."""
        if len(self.ts_ms) < 2:
            return 60_000
        gaps, counts = np.unique(np.diff(self.ts_ms), return_counts=True)
        return int(gaps[np.argmax(counts)])

    @property
    def start_ms(self) -> int:
        return int(self.ts_ms[0])

    @property
    def end_ms(self) -> int:
        """Close time of the last candle."""
        return int(self.ts_ms[-1]) + self.interval_ms

    def slice(self, start: int, stop: int | None = None) -> CandleSeries:
        """Rows ``[start, stop)`` (Python slice semantics, at least one row).

        Raises:
            ValueError: the slice is empty.
        """
        sl = slice(start, stop)
        ts = self.ts_ms[sl]
        if len(ts) == 0:
            raise ValueError(f"{self.source}: empty slice [{start}:{stop}]")
        return CandleSeries(self.source, ts, self.open[sl], self.high[sl], self.low[sl], self.close[sl],
                            self.volume[sl])

    def take(self, rows: np.ndarray) -> CandleSeries:
        """The rows at the (sorted) indices ``rows``."""
        return CandleSeries.from_arrays(self.source, self.ts_ms[rows], self.open[rows], self.high[rows],
                                        self.low[rows], self.close[rows], self.volume[rows])

    def decimals(self) -> tuple[list[Decimal], ...]:
        """``(open, high, low, close, volume)`` as exact decimals (:func:`decimal_texts`; cached)."""
        cached = self._decimals.get("ohlcv")
        if cached is None:
            cached = tuple(
                list(map(Decimal, decimal_texts(col)))
                for col in (self.open, self.high, self.low, self.close, self.volume)
            )
            self._decimals["ohlcv"] = cached
        return cached

    def to_candles(self) -> list[Candle]:
        """The rows as the simulator's :class:`~sim.market_data.Candle` objects."""
        o, h, lo, c, v = self.decimals()
        return [Candle(int(t), o[i], h[i], lo[i], c[i], v[i]) for i, t in enumerate(self.ts_ms.tolist())]

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"timestamp_ms": self.ts_ms, "open": self.open, "high": self.high,
                             "low": self.low, "close": self.close, "volume": self.volume})


def _time_column(frame: pd.DataFrame, path: Path) -> np.ndarray:
    for name in _TIME_COLUMNS:
        if name in frame.columns:
            col = frame[name]
            if pd.api.types.is_datetime64_any_dtype(col):
                values = col.dt.tz_localize(None) if getattr(col.dt, "tz", None) is not None else col
                return values.to_numpy(dtype="datetime64[ms]").astype(np.int64)
            if not pd.api.types.is_numeric_dtype(col):
                raise ValueError(f"{path}: time column {name!r} is neither epoch ms nor a datetime")
            return col.to_numpy(dtype=np.int64)
    raise ValueError(f"{path}: no time column (one of {list(_TIME_COLUMNS)}); columns are {list(frame.columns)}")


def load_candle_series(path: str | Path) -> CandleSeries:
    """Read candles from ``.csv``, ``.csv.gz`` or ``.parquet``; rows are sorted by time.

    Raises:
        OSError: the file cannot be read.
        ValueError: the format is unknown, a column is missing, a value does
            not parse, a row is not a valid candle, or two rows share a time.
    """
    path = Path(path)
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            frame = pd.read_parquet(path)
        elif name.endswith((".csv", ".csv.gz")):
            frame = pd.read_csv(path)
        else:
            raise ValueError(f"{path}: unknown candle file type (use .csv, .csv.gz or .parquet)")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot parse candles: {exc}") from None
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    if len(frame) == 0:
        raise ValueError(f"{path}: no candle rows")
    missing = [c for c in _PRICE_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; columns are {list(frame.columns)}")
    ts = _time_column(frame, path)
    try:
        cols = [pd.to_numeric(frame[c], errors="raise").to_numpy(dtype=np.float64) for c in _PRICE_COLUMNS]
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: a price or volume does not parse: {exc}") from None
    order = np.argsort(ts, kind="stable")
    ts = ts[order]
    dup = np.diff(ts) == 0
    if dup.any():
        i = int(np.argmax(dup)) + 1
        raise ValueError(f"{path}: two rows share the time {int(ts[i])}")
    return CandleSeries.from_arrays(str(path), ts, *(c[order] for c in cols))


# Bump when load_candle_series returns something else for the same file bytes: cached parses then miss.
PARSER_VERSION = 1
_CANDLE_ARRAYS = ("ts_ms", "open", "high", "low", "close", "volume")


def default_cache_dir() -> Path:
    """``$TRADETREE_CACHE_DIR``, else ``.tradetree/cache`` under the working directory."""
    return Path(os.environ.get("TRADETREE_CACHE_DIR") or Path(".tradetree") / "cache")


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


class CandleCache:
    """Parsed candle files on disk, one ``candles-<key>.npz`` per file content under ``root``.

    An entry holds its key and a checksum of its arrays; a read that finds no entry, an unreadable
    one, another key or a checksum that does not match returns ``None`` (the caller parses the file
    again and :meth:`put` overwrites it). Writes go through a temporary file and ``os.replace``, so a
    reader never sees half an entry. Only the ``keep`` most recently used entries are kept (an entry
    is about the size of the uncompressed arrays, 6 x 8 bytes per candle); deleting ``root`` (or
    ``--no-cache`` on the command line) is always safe.
    """

    def __init__(self, root: str | Path | None = None, *, keep: int = 8) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.keep = keep
        self.hits = 0
        self.misses = 0
        self.rejected = 0  # entries found but not trusted (corrupt or stale)

    def file(self, key: str) -> Path:
        return self.root / f"candles-{key[:40]}.npz"

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        path = self.file(key)
        if not path.exists():
            self.misses += 1
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {name: z[name] for name in z.files}
            stored_key, stored_sum = arrays.pop("__key__").tolist(), arrays.pop("__checksum__").tolist()
            if stored_key != key or stored_sum != _checksum(arrays) or any(n not in arrays for n in _CANDLE_ARRAYS):
                raise ValueError("key, checksum or columns do not match")
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            self.rejected += 1
            self.misses += 1
            return None
        self.hits += 1
        try:
            os.utime(path)  # most recently used: the last to be evicted
        except OSError:
            pass  # a read-only cache still serves
        return arrays

    def put(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        payload = dict(arrays, __key__=np.array(key), __checksum__=np.array(_checksum(arrays)))
        buf = io.BytesIO()
        np.savez(buf, **payload)  # type: ignore[arg-type]
        path = self.file(key)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, path)
        entries = sorted(self.root.glob("candles-*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[self.keep:]:
            old.unlink(missing_ok=True)


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes and :data:`PARSER_VERSION`: the candle cache key."""
    h = hashlib.sha256(f"candles v{PARSER_VERSION}".encode())
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_candles_cached(path: str | Path, cache: CandleCache | None) -> CandleSeries:
    """:func:`load_candle_series`, with the parsed arrays cached by the file's sha256.

    A hit is validated again as the parser would (``CandleSeries.from_arrays``), so a cache entry
    can only save the parsing, never change what is loaded.

    Raises:
        OSError, ValueError: as ``load_candle_series``.
    """
    if cache is None:
        return load_candle_series(path)
    key = file_digest(path)
    arrays = cache.get(key)
    if arrays is not None:
        return CandleSeries.from_arrays(str(Path(path)), *(arrays[name] for name in _CANDLE_ARRAYS))
    series = load_candle_series(path)
    cache.put(key, {name: getattr(series, name) for name in _CANDLE_ARRAYS})
    return series


def align_series(series: dict[str, CandleSeries]) -> dict[str, CandleSeries]:
    """Keep only the open times every series has (an inner join), so bars line up.

    Raises:
        ValueError: the series share no open time.
    """
    if len(series) <= 1:
        return dict(series)
    common = None
    for s in series.values():
        common = s.ts_ms if common is None else np.intersect1d(common, s.ts_ms, assume_unique=True)
    if common is None or len(common) == 0:
        raise ValueError("the candle series share no timestamp")
    out = {}
    for inst, s in series.items():
        if len(s) == len(common):
            out[inst] = s
        else:
            out[inst] = s.take(np.searchsorted(s.ts_ms, common))
    return out


def synthetic_candles(
    n_bars: int,
    *,
    seed: int,
    start_ms: int = 1_700_000_040_000,  # 2023-11-14 22:14 UTC, a whole minute
    interval_ms: int = 60_000,
    start_price: float = 30_000.0,
    annual_vol: float = 0.6,
    tick: float = 0.01,
    mean_volume: float = 10.0,
) -> CandleSeries:
    """Seeded random-walk candles: the same arguments always give the same series.

    Each candle is four log-normal sub-steps from the previous close (its
    high and low are the extremes of that path), prices on the ``tick``
    grid, volume log-normal around ``mean_volume`` with 5 decimals.

    Raises:
        ValueError: ``n_bars < 1`` or a non-positive price parameter.
    """
    if n_bars < 1:
        raise ValueError("n_bars must be at least 1")
    if start_price <= 0 or tick <= 0 or interval_ms <= 0:
        raise ValueError("start_price, tick and interval_ms must be positive")
    rng = np.random.default_rng(seed)
    sigma = annual_vol * np.sqrt(interval_ms / 4 / (365.0 * 24 * 3600 * 1000))
    steps = rng.normal(-0.5 * sigma * sigma, sigma, size=(n_bars, 4))
    log_path = np.log(start_price) + np.cumsum(steps.ravel()).reshape(n_bars, 4)
    prev_close = np.concatenate([[np.log(start_price)], log_path[:-1, 3]])
    path = np.exp(np.column_stack([prev_close, log_path]))
    path = np.maximum(np.round(path / tick) * tick, tick)
    digits = max(0, int(-np.floor(np.log10(tick)) + 0.5)) if tick < 1 else 0
    path = np.round(path, digits)
    open_ = path[:, 0]
    close = path[:, 4]
    high = path.max(axis=1)
    low = path.min(axis=1)
    volume = np.round(rng.lognormal(np.log(mean_volume), 0.5, size=n_bars), 5)
    ts = start_ms + interval_ms * np.arange(n_bars, dtype=np.int64)
    return CandleSeries.from_arrays(f"synthetic(n={n_bars}, seed={seed})", ts, open_, high, low, close, volume)
