"""Seeded synthetic candles with known volatility regimes, for tests and demos.

Per-bar volatility is ``regime_vol[regime] * exp(intraday_amplitude * sin(2π
· time of day))``: a hidden Markov chain of regimes (mean stay
``mean_regime_bars``) times an intraday cycle. Each bar is a Brownian path of
``substeps`` steps, so high and low behave like real ranges. Optionally an
order book snapshot at each bar close carries an imbalance that shifts the
next bar's drift by ``orderbook_signal`` · imbalance · σ, a planted direction
signal that only order book features can see.

The same arguments and seed always give the same frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["SyntheticMarket", "generate_regime_candles"]

_DAY_MS = 86_400_000


@dataclass(frozen=True)
class SyntheticMarket:
    """Generated data and the truth behind it.

    ``vol_per_bar[i]`` is the standard deviation of bar ``i``'s log return;
    ``regime[i]`` the index into ``regime_vols``; ``orderbook`` is ``None``
    unless asked for.
    """

    candles: pd.DataFrame
    regime: np.ndarray
    vol_per_bar: np.ndarray
    orderbook: pd.DataFrame | None


def generate_regime_candles(
    n_bars: int,
    *,
    seed: int,
    interval_ms: int = 900_000,
    start_ms: int = 1_699_920_000_000,
    regime_vols: tuple[float, ...] = (0.002, 0.006),
    mean_regime_bars: float = 400.0,
    intraday_amplitude: float = 0.5,
    substeps: int = 12,
    start_price: float = 30_000.0,
    base_volume: float = 100.0,
    with_orderbook: bool = False,
    orderbook_signal: float = 0.0,
) -> SyntheticMarket:
    """Generate ``n_bars`` candles (and optionally one book snapshot per bar close).

    Raises:
        ValueError: ``n_bars < 2``, ``substeps < 1``, or a non-positive volatility.
    """
    if n_bars < 2 or substeps < 1:
        raise ValueError("need n_bars >= 2 and substeps >= 1")
    if any(v <= 0 for v in regime_vols) or mean_regime_bars < 1:
        raise ValueError("regime volatilities must be > 0 and mean_regime_bars >= 1")
    rng = np.random.default_rng(seed)

    switch = rng.random(n_bars) < 1.0 / mean_regime_bars
    regime = np.empty(n_bars, dtype=np.int64)
    current = int(rng.integers(len(regime_vols)))
    for i in range(n_bars):
        if switch[i] and len(regime_vols) > 1:
            current = (current + int(rng.integers(1, len(regime_vols)))) % len(regime_vols)
        regime[i] = current

    ts = start_ms + interval_ms * np.arange(n_bars, dtype=np.int64)
    time_of_day = (ts % _DAY_MS) / _DAY_MS
    vol = np.asarray(regime_vols)[regime] * np.exp(intraday_amplitude * np.sin(2 * np.pi * time_of_day))

    imbalance = np.clip(rng.normal(0.0, 0.45, n_bars), -0.95, 0.95)
    drift = np.zeros(n_bars)
    if with_orderbook:
        # The snapshot at bar i's close tilts bar i+1.
        drift[1:] = orderbook_signal * imbalance[:-1] * vol[1:]

    steps = rng.normal(0.0, 1.0, (n_bars, substeps)) * (vol / np.sqrt(substeps))[:, None]
    steps += (drift / substeps)[:, None]
    path = np.cumsum(steps, axis=1)  # log price relative to the bar's open
    bar_returns = path[:, -1]
    log_open = np.log(start_price) + np.concatenate([[0.0], np.cumsum(bar_returns)[:-1]])
    log_high = log_open + np.maximum(path.max(axis=1), 0.0)
    log_low = log_open + np.minimum(path.min(axis=1), 0.0)
    log_close = log_open + bar_returns

    volume = base_volume * (vol / np.mean(vol)) * rng.lognormal(0.0, 0.3, n_bars)
    candles = pd.DataFrame(
        {
            "timestamp_ms": ts,
            "open": np.exp(log_open),
            "high": np.exp(log_high),
            "low": np.exp(log_low),
            "close": np.exp(log_close),
            "volume": volume,
        }
    )
    # exp() of the bracketing logs can round a hair inside open/close: restore the bracket.
    candles["high"] = candles[["open", "high", "close"]].max(axis=1)
    candles["low"] = candles[["open", "low", "close"]].min(axis=1)

    orderbook = None
    if with_orderbook:
        mid = candles["close"].to_numpy()
        half_spread = mid * (0.5e-4 + 0.05 * vol)
        depth = 10.0 * rng.lognormal(0.0, 0.2, n_bars)
        orderbook = pd.DataFrame(
            {
                "timestamp_ms": ts + interval_ms,  # taken at the bar's close
                "bid_price": mid - half_spread,
                "bid_size": depth * (1 + imbalance),
                "ask_price": mid + half_spread,
                "ask_size": depth * (1 - imbalance),
            }
        )
    return SyntheticMarket(candles=candles, regime=regime, vol_per_bar=vol, orderbook=orderbook)
