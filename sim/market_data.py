"""Market data for the simulator: generated prices, candle replay, candle aggregation.

Pure and deterministic: no I/O except reading a candle file, no wall clock.
Two sources share one interface (:class:`MarketSource`):

- :class:`GeneratedMarket`: a geometric random walk per instrument with Markov
  volatility regimes (calm / volatile) and Poisson jumps. Each instrument draws
  from its own seeded stream, so adding an instrument does not change the
  others' paths. A swap whose spot is also listed follows the spot price with a
  small mean-reverting basis (BTC-USDT-SWAP moves with BTC-USDT).
- :class:`CandleReplay`: replays OHLCV candles, turning each candle into four
  intra-bar price points (open, low/high in the candle's direction, close), so
  a limit order inside the bar's range fills.

Each step yields one :class:`MarketTick` per instrument, carrying the public
trades of the step; the matching engine fills resting orders from them.

Time is the source's own timeline (``now_ms``): it moves only in
:meth:`MarketSource.advance`. Whoever drives the source decides how it maps to
the wall clock.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import math
import random
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from pathlib import Path
from typing import Protocol

from tradetree.sim.config import SimInstrument

__all__ = [
    "PublicTrade",
    "MarketTick",
    "MarketSource",
    "GeneratorParams",
    "GeneratedMarket",
    "Candle",
    "load_candles",
    "load_candle_source",
    "CandleReplay",
    "CandleAggregator",
    "spot_of",
    "derive_seed",
]

_MS_PER_YEAR = 365.0 * 24 * 3600 * 1000
_ONE_MINUTE_MS = 60_000


@dataclass(frozen=True, slots=True)
class PublicTrade:
    """One public trade. ``side`` is the taker's side ("buy" or "sell")."""

    trade_id: str
    price: Decimal
    size: Decimal  # venue units: base for spot, contracts for swaps
    side: str
    ts_ms: int


@dataclass(frozen=True, slots=True)
class MarketTick:
    """One market step of one instrument: the new price and the trades that led there."""

    inst_id: str
    ts_ms: int
    price: Decimal
    volume: Decimal  # sum of the trades' sizes
    trades: tuple[PublicTrade, ...]


class MarketSource(Protocol):
    """What the matching engine's driver needs from a market data source."""

    @property
    def now_ms(self) -> int: ...

    @property
    def inst_ids(self) -> tuple[str, ...]: ...

    @property
    def frozen(self) -> bool: ...

    def freeze(self, frozen: bool = True) -> None: ...

    def last_price(self, inst_id: str) -> Decimal: ...

    def advance(self, dt_ms: int) -> list[MarketTick]:
        """Move time forward by ``dt_ms`` and return the ticks of that span, in time order."""
        ...


def derive_seed(seed: int, name: str) -> int:
    """A stable per-name seed (Python's ``hash`` of a str changes between runs)."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def spot_of(inst_id: str) -> str | None:
    """``BTC-USDT-SWAP`` -> ``BTC-USDT``; ``None`` for an instrument that is not a swap."""
    return inst_id[: -len("-SWAP")] if inst_id.endswith("-SWAP") else None


def _on_tick(price: float, tick: Decimal) -> Decimal:
    ticks = max(1, round(price / float(tick)))
    return tick * ticks


def _lots(size: float, lot: Decimal) -> Decimal:
    return lot * max(1, int(size / float(lot)))


@dataclass(frozen=True, slots=True)
class GeneratorParams:
    """Shape of the generated market. Durations and rates are in market time."""

    calm_vol_multiplier: float = 1.0
    volatile_vol_multiplier: float = 3.0
    mean_calm_secs: float = 1800.0
    mean_volatile_secs: float = 300.0
    jump_rate_per_hour: float = 0.5
    jump_sigma: float = 0.01  # stdev of a jump's log-return
    basis_sigma: float = 0.0003  # stationary stdev of the swap basis (3 bp)
    basis_reversion_secs: float = 600.0
    trade_notional_per_sec: float = 20_000.0  # quote units traded per market second (calm)
    max_trades_per_step: int = 4


@dataclass(slots=True)
class _WalkState:
    log_price: float
    regime: str  # "calm" | "volatile"
    rng: random.Random
    basis: float = 0.0
    jumps: int = 0
    regime_switches: int = 0
    trade_seq: int = 0
    last: Decimal = Decimal(0)


class GeneratedMarket:
    """Seeded geometric random walk with volatility regimes and jumps.

    Deterministic: the same instruments, seed and sequence of ``advance`` calls
    give the same ticks. ``freeze(True)`` stops prices and trades (time still
    moves) to simulate stale market data.
    """

    def __init__(
        self,
        instruments: Sequence[SimInstrument],
        *,
        seed: int,
        start_ms: int,
        params: GeneratorParams | None = None,
    ) -> None:
        if not instruments:
            raise ValueError("GeneratedMarket needs at least one instrument")
        self._instruments = {i.inst_id: i for i in instruments}
        self._params = params or GeneratorParams()
        self._now_ms = start_ms
        self._frozen = False
        self._states: dict[str, _WalkState] = {}
        for inst in instruments:
            self._states[inst.inst_id] = _WalkState(
                log_price=math.log(float(inst.initial_price)),
                regime="calm",
                rng=random.Random(derive_seed(seed, inst.inst_id)),
                last=inst.initial_price,
            )
        # A swap follows its spot when both are listed; spots are stepped first.
        self._leader = {
            i.inst_id: spot_of(i.inst_id)
            for i in instruments
            if spot_of(i.inst_id) in self._instruments
        }
        self._order = [i for i in self._instruments if i not in self._leader] + [
            i for i in self._instruments if i in self._leader
        ]

    @property
    def now_ms(self) -> int:
        return self._now_ms

    @property
    def inst_ids(self) -> tuple[str, ...]:
        return tuple(self._instruments)

    @property
    def frozen(self) -> bool:
        return self._frozen

    def freeze(self, frozen: bool = True) -> None:
        self._frozen = frozen

    def last_price(self, inst_id: str) -> Decimal:
        return self._states[inst_id].last

    def regime(self, inst_id: str) -> str:
        """The current volatility regime ("calm" or "volatile") of ``inst_id``."""
        leader = self._leader.get(inst_id)
        return self._states[leader or inst_id].regime

    def stats(self, inst_id: str) -> dict[str, int]:
        """Counters for tests and diagnostics: jumps and regime switches so far."""
        st = self._states[inst_id]
        return {"jumps": st.jumps, "regime_switches": st.regime_switches}

    def advance(self, dt_ms: int) -> list[MarketTick]:
        """Advance by ``dt_ms`` (> 0) as one step; one tick per instrument unless frozen.

        Raises:
            ValueError: ``dt_ms`` is not positive.
        """
        if dt_ms <= 0:
            raise ValueError(f"dt_ms must be positive, got {dt_ms}")
        self._now_ms += dt_ms
        if self._frozen:
            return []
        ticks: dict[str, MarketTick] = {}
        for inst_id in self._order:
            ticks[inst_id] = self._step(inst_id, dt_ms)
        return [ticks[i] for i in self._instruments]

    def _step(self, inst_id: str, dt_ms: int) -> MarketTick:
        p = self._params
        inst = self._instruments[inst_id]
        st = self._states[inst_id]
        rng = st.rng
        prev = st.log_price
        leader = self._leader.get(inst_id)
        if leader is not None:
            lead = self._states[leader]
            # Ornstein-Uhlenbeck basis, exact discretisation.
            decay = math.exp(-dt_ms / 1000.0 / p.basis_reversion_secs)
            st.basis = st.basis * decay + p.basis_sigma * math.sqrt(1 - decay * decay) * rng.gauss(0, 1)
            st.log_price = lead.log_price + st.basis
            vol_mult = self._vol_mult(lead.regime)
        else:
            self._maybe_switch_regime(st, dt_ms)
            vol_mult = self._vol_mult(st.regime)
            sigma = inst.annual_volatility * vol_mult * math.sqrt(dt_ms / _MS_PER_YEAR)
            step = -0.5 * sigma * sigma + sigma * rng.gauss(0, 1)
            for _ in range(self._poisson(rng, p.jump_rate_per_hour * dt_ms / 3_600_000)):
                step += rng.gauss(0, p.jump_sigma)
                st.jumps += 1
            st.log_price += step
        sigma_step = inst.annual_volatility * vol_mult * math.sqrt(dt_ms / _MS_PER_YEAR)
        trades = self._trades(inst, st, prev, st.log_price, sigma_step, vol_mult, dt_ms)
        st.last = trades[-1].price
        volume = sum((t.size for t in trades), Decimal(0))
        return MarketTick(inst_id, self._now_ms, st.last, volume, trades)

    def _vol_mult(self, regime: str) -> float:
        p = self._params
        return p.volatile_vol_multiplier if regime == "volatile" else p.calm_vol_multiplier

    def _maybe_switch_regime(self, st: _WalkState, dt_ms: int) -> None:
        p = self._params
        mean_secs = p.mean_volatile_secs if st.regime == "volatile" else p.mean_calm_secs
        if st.rng.random() < 1 - math.exp(-dt_ms / 1000.0 / mean_secs):
            st.regime = "calm" if st.regime == "volatile" else "volatile"
            st.regime_switches += 1

    @staticmethod
    def _poisson(rng: random.Random, lam: float) -> int:
        # Knuth's method; lam is tiny per step, so this loops once or twice.
        limit, k, prod = math.exp(-lam), 0, rng.random()
        while prod > limit:
            k += 1
            prod *= rng.random()
        return k

    def _trades(
        self,
        inst: SimInstrument,
        st: _WalkState,
        log_from: float,
        log_to: float,
        sigma_step: float,
        vol_mult: float,
        dt_ms: int,
    ) -> tuple[PublicTrade, ...]:
        """Trades walking from the old price to the new one, with a little noise (wicks)."""
        p = self._params
        rng = st.rng
        n = 1 + rng.randrange(p.max_trades_per_step)
        price_now = math.exp(log_to)
        notional = p.trade_notional_per_sec * dt_ms / 1000.0 * vol_mult * rng.lognormvariate(0, 0.5)
        unit_value = price_now * float(inst.contract_value)
        weights = [rng.random() + 0.1 for _ in range(n)]
        total_w = sum(weights)
        trades = []
        prev_px = st.last
        for k in range(n):
            frac = (k + 1) / n
            log_px = log_from + (log_to - log_from) * frac
            if k < n - 1:
                log_px += 0.5 * sigma_step * rng.gauss(0, 1)
            px = _on_tick(math.exp(log_px), inst.tick_size)
            size = _lots(notional * weights[k] / total_w / unit_value, inst.lot_size)
            side = "buy" if px >= prev_px else "sell"
            st.trade_seq += 1
            trades.append(PublicTrade(str(st.trade_seq), px, size, side, self._now_ms))
            prev_px = px
        return tuple(trades)


@dataclass(frozen=True, slots=True)
class Candle:
    """An OHLCV candle; ``ts_ms`` is its open time; ``volume`` in venue units."""

    ts_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal


_CSV_COLUMNS = ("timestamp_ms", "open", "high", "low", "close", "volume")


def load_candles(path: str | Path) -> list[Candle]:
    """Read a candle CSV (``.csv`` or ``.csv.gz``) with a header row.

    Columns: ``timestamp_ms, open, high, low, close, volume`` (extra columns are
    ignored). Rows are returned sorted by time.

    Raises:
        ValueError: a column is missing, a value does not parse, a candle's
            high/low do not bracket its open/close, or the file has no rows.
        OSError: the file cannot be read.
    """
    path = Path(path)
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        raw = gzip.decompress(raw)
    reader = csv.DictReader(io.StringIO(raw.decode("utf-8")))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in _CSV_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; header is {header}")
    candles = []
    for line_no, row in enumerate(reader, start=2):
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        try:
            c = Candle(
                ts_ms=int(row["timestamp_ms"]),
                open=Decimal(row["open"]),
                high=Decimal(row["high"]),
                low=Decimal(row["low"]),
                close=Decimal(row["close"]),
                volume=Decimal(row["volume"]),
            )
        except (ValueError, InvalidOperation):
            raise ValueError(f"{path}:{line_no}: cannot parse candle row {row}") from None
        if not (c.low <= min(c.open, c.close) and c.high >= max(c.open, c.close) and c.low > 0):
            raise ValueError(f"{path}:{line_no}: high/low do not bracket open/close: {row}")
        candles.append(c)
    if not candles:
        raise ValueError(f"{path}: no candle rows")
    candles.sort(key=lambda c: c.ts_ms)
    return candles


def load_candle_source(path: str | Path, inst_ids: Iterable[str]) -> dict[str, list[Candle]]:
    """Candles per instrument from ``path``.

    A file drives every instrument with the same candles. A directory holds one
    ``<INST_ID>.csv`` or ``<INST_ID>.csv.gz`` per instrument; an instrument
    without a file is left out (a swap then follows its spot, see
    :class:`CandleReplay`).

    Raises:
        ValueError / OSError: as :func:`load_candles`.
    """
    path = Path(path)
    ids = list(inst_ids)
    if path.is_dir():
        out: dict[str, list[Candle]] = {}
        for inst_id in ids:
            for name in (f"{inst_id}.csv", f"{inst_id}.csv.gz"):
                if (path / name).exists():
                    out[inst_id] = load_candles(path / name)
                    break
        return out
    candles = load_candles(path)
    return {inst_id: candles for inst_id in ids}


@dataclass(frozen=True, slots=True)
class _Point:
    ts_ms: int
    price: Decimal
    size: Decimal


class CandleReplay:
    """Replays candles as intra-bar price points, one tick per point.

    Each candle becomes four points spaced a quarter of the bar apart: open,
    then low and high (low first for a rising candle, high first for a falling
    one), then close; each carries one public trade of a quarter of the bar's
    volume. Timestamps are shifted so the first candle opens at ``start_ms``
    (``None`` keeps the file's times). An instrument without candles follows
    its spot's candles (a swap on a spot). When the data runs out, prices stay
    at the last close and no ticks are produced (``exhausted`` turns true).

    Raises (constructor):
        ValueError: an instrument has no candles and no spot to follow.
    """

    def __init__(
        self,
        candles_by_inst: Mapping[str, Sequence[Candle]],
        instruments: Sequence[SimInstrument],
        *,
        start_ms: int | None = None,
    ) -> None:
        self._instruments = {i.inst_id: i for i in instruments}
        resolved: dict[str, Sequence[Candle]] = {}
        for inst_id in self._instruments:
            candles = candles_by_inst.get(inst_id) or candles_by_inst.get(spot_of(inst_id) or "")
            if not candles:
                raise ValueError(f"no candles to replay for {inst_id}")
            resolved[inst_id] = candles
        first = min(c[0].ts_ms for c in resolved.values())
        shift = 0 if start_ms is None else start_ms - first
        self._shift_ms = shift
        self._points: dict[str, list[_Point]] = {
            inst_id: self._to_points(candles, shift, self._instruments[inst_id])
            for inst_id, candles in resolved.items()
        }
        self._cursor = {inst_id: 0 for inst_id in self._instruments}
        self._last = {i: pts[0].price for i, pts in self._points.items()}
        self._prev = dict(self._last)
        self._now_ms = first + shift - 1
        self._frozen = False
        self._paused_ms = 0  # time spent frozen; the data resumes where it stopped
        self._trade_seq = 0

    @staticmethod
    def _to_points(candles: Sequence[Candle], shift: int, inst: SimInstrument) -> list[_Point]:
        points = []
        for i, c in enumerate(candles):
            if i + 1 < len(candles):
                interval = candles[i + 1].ts_ms - c.ts_ms
            elif i > 0:
                interval = c.ts_ms - candles[i - 1].ts_ms
            else:
                interval = _ONE_MINUTE_MS
            interval = max(interval, 4)
            mids = (c.low, c.high) if c.close >= c.open else (c.high, c.low)
            quarter = (c.volume / 4).quantize(inst.lot_size, rounding=ROUND_DOWN)
            size = max(quarter, inst.lot_size)
            for j, px in enumerate((c.open, *mids, c.close)):
                points.append(_Point(c.ts_ms + shift + j * interval // 4, px, size))
        return points

    @property
    def now_ms(self) -> int:
        return self._now_ms

    @property
    def inst_ids(self) -> tuple[str, ...]:
        return tuple(self._instruments)

    @property
    def shift_ms(self) -> int:
        """Venue time minus the file's time (before any freeze): subtract it to get the data's time."""
        return self._shift_ms

    @property
    def frozen(self) -> bool:
        return self._frozen

    @property
    def exhausted(self) -> bool:
        return all(self._cursor[i] >= len(p) for i, p in self._points.items())

    def freeze(self, frozen: bool = True) -> None:
        self._frozen = frozen

    def last_price(self, inst_id: str) -> Decimal:
        return self._last[inst_id]

    def advance(self, dt_ms: int) -> list[MarketTick]:
        """Advance by ``dt_ms`` (> 0); return a tick for every point now due, in time order.

        Raises:
            ValueError: ``dt_ms`` is not positive.
        """
        if dt_ms <= 0:
            raise ValueError(f"dt_ms must be positive, got {dt_ms}")
        self._now_ms += dt_ms
        if self._frozen:
            self._paused_ms += dt_ms
            return []
        data_now = self._now_ms - self._paused_ms
        ticks = []
        for inst_id, points in self._points.items():
            cur = self._cursor[inst_id]
            while cur < len(points) and points[cur].ts_ms <= data_now:
                pt = points[cur]
                ticks.append(self._tick(inst_id, pt))
                cur += 1
            self._cursor[inst_id] = cur
        ticks.sort(key=lambda t: t.ts_ms)
        return ticks

    def _tick(self, inst_id: str, pt: _Point) -> MarketTick:
        inst = self._instruments[inst_id]
        px = pt.price.quantize(inst.tick_size) if pt.price >= inst.tick_size else inst.tick_size
        side = "buy" if px >= self._prev[inst_id] else "sell"
        self._trade_seq += 1
        ts = pt.ts_ms + self._paused_ms
        trade = PublicTrade(str(self._trade_seq), px, pt.size, side, ts)
        self._prev[inst_id] = px
        self._last[inst_id] = px
        return MarketTick(inst_id, ts, px, pt.size, (trade,))


@dataclass(slots=True)
class _Bar:
    ts_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal  # venue units
    quote_volume: Decimal


@dataclass(frozen=True, slots=True)
class CandleRow:
    """An aggregated candle as served: ``confirmed`` is false while the bar is still open."""

    ts_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal  # venue units (base for spot, contracts for swaps)
    base_volume: Decimal
    quote_volume: Decimal
    confirmed: bool


class CandleAggregator:
    """Builds 1-minute candles from ticks and serves any multiple of a minute.

    Keeps the last ``max_bars`` one-minute bars per instrument. Bars are aligned
    to UTC epoch multiples of their length.
    """

    def __init__(self, instruments: Sequence[SimInstrument], *, max_bars: int = 2880) -> None:
        self._ctval = {i.inst_id: i.contract_value for i in instruments}
        self._spot = {i.inst_id: spot_of(i.inst_id) is None for i in instruments}
        self._bars: dict[str, deque[_Bar]] = {i.inst_id: deque(maxlen=max_bars) for i in instruments}

    def on_tick(self, tick: MarketTick) -> list[CandleRow]:
        """Fold ``tick`` in; return the 1m bars it closed (confirmed) followed by the open bar."""
        bars = self._bars.get(tick.inst_id)
        if bars is None:
            return []
        start = tick.ts_ms - tick.ts_ms % _ONE_MINUTE_MS
        closed = []
        unit = self._ctval[tick.inst_id]
        quote = sum((t.price * t.size * unit for t in tick.trades), Decimal(0))
        if bars and bars[-1].ts_ms >= start:
            bar = bars[-1]
            bar.high = max(bar.high, tick.price, *(t.price for t in tick.trades))
            bar.low = min(bar.low, tick.price, *(t.price for t in tick.trades))
            bar.close = tick.price
            bar.volume += tick.volume
            bar.quote_volume += quote
        else:
            if bars:
                closed.append(self._row(tick.inst_id, bars[-1], True))
            open_px = tick.trades[0].price if tick.trades else tick.price
            prices = [tick.price, *(t.price for t in tick.trades)]
            bars.append(_Bar(start, open_px, max(prices), min(prices), tick.price, tick.volume, quote))
        return [*closed, self._row(tick.inst_id, bars[-1], False)]

    def _row(self, inst_id: str, bar: _Bar, confirmed: bool) -> CandleRow:
        base = bar.volume if self._spot[inst_id] else bar.volume * self._ctval[inst_id]
        return CandleRow(
            bar.ts_ms, bar.open, bar.high, bar.low, bar.close, bar.volume, base, bar.quote_volume, confirmed
        )

    def candles(
        self,
        inst_id: str,
        *,
        bar_ms: int = _ONE_MINUTE_MS,
        limit: int = 100,
        after_ms: int | None = None,
        before_ms: int | None = None,
    ) -> list[CandleRow]:
        """Candles of ``bar_ms`` (a multiple of one minute), **newest first**.

        ``after_ms``: only bars opening strictly before it (OKX pagination
        ``after``); ``before_ms``: only bars opening strictly after it. The
        newest bar is unconfirmed while it is still forming.

        Raises:
            KeyError: unknown ``inst_id``.
            ValueError: ``bar_ms`` is not a positive multiple of one minute.
        """
        if bar_ms <= 0 or bar_ms % _ONE_MINUTE_MS:
            raise ValueError(f"bar_ms must be a positive multiple of 60000, got {bar_ms}")
        bars = self._bars[inst_id]
        grouped: list[_Bar] = []
        for b in bars:
            start = b.ts_ms - b.ts_ms % bar_ms
            if grouped and grouped[-1].ts_ms == start:
                g = grouped[-1]
                g.high, g.low, g.close = max(g.high, b.high), min(g.low, b.low), b.close
                g.volume += b.volume
                g.quote_volume += b.quote_volume
            else:
                grouped.append(_Bar(start, b.open, b.high, b.low, b.close, b.volume, b.quote_volume))
        rows = []
        last_index = len(grouped) - 1
        for idx in range(last_index, -1, -1):
            g = grouped[idx]
            if after_ms is not None and g.ts_ms >= after_ms:
                continue
            if before_ms is not None and g.ts_ms <= before_ms:
                break
            rows.append(self._row(inst_id, g, idx != last_index))
            if len(rows) >= limit:
                break
        return rows

    def stats_24h(self, inst_id: str) -> tuple[Decimal, Decimal, Decimal, Decimal, Decimal] | None:
        """``(open, high, low, volume, quote_volume)`` over the last 24h of bars, or None."""
        bars = self._bars[inst_id]
        if not bars:
            return None
        since = bars[-1].ts_ms - 24 * 3600 * 1000
        window = [b for b in bars if b.ts_ms > since]
        return (
            window[0].open,
            max(b.high for b in window),
            min(b.low for b in window),
            sum((b.volume for b in window), Decimal(0)),
            sum((b.quote_volume for b in window), Decimal(0)),
        )
