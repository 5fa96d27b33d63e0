"""Features from candles (and optionally other assets' candles and order book snapshots).

``build_features`` is the one function that makes features, for training,
evaluation and serving alike. Row ``t`` uses only what is known at the close
of bar ``t``: candles up to ``t``, other assets' bars with open time up to
bar ``t``'s, and the last order book snapshot taken at or before bar ``t``'s
close. Every rolling statistic is window-local (``ml.rolling``), so a row is
bit-for-bit the same whether it is computed over years of history or over
the last ``spec.warmup_bars`` bars, as serving does.

Features (windows in bars, from ``FeatureSpec``):

- ``ret_{w}``: log return over ``w`` bars.
- ``log_rv_cc_{w}``, ``log_rv_pk_{w}``, ``log_rv_gk_{w}``: ln per-bar realized
  volatility, close-to-close, Parkinson and Garman–Klass.
- ``range_{w}``: mean ln(high / low).
- ``volume_z``: z-score of ln(1 + volume) against its last ``volume_window_bars`` bars.
- ``tod_sin``, ``tod_cos``, ``day_of_week``: UTC time of the bar's open.
- ``x_{asset}_ret_{w}``, ``x_{asset}_log_rv_cc_{w}``: the same for each cross asset.
- ``ob_imbalance`` ((bid - ask size) / total), ``ob_spread_bps``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tradetree.ml.config import FeatureSpec
from tradetree.ml.data import infer_interval_ms
from tradetree.ml.errors import DataError, FeatureUnavailable, InsufficientHistory
from tradetree.ml.rolling import log_returns, log_vol_from_var, rolling_mean, rolling_std

__all__ = ["FeatureInputs", "feature_names", "build_features", "latest_feature_row"]

_DAY_MS = 86_400_000
_LN2 = math.log(2.0)


@dataclass(frozen=True)
class FeatureInputs:
    """Everything features are built from: the primary candles plus optional extras.

    ``cross`` maps an asset name from ``FeatureSpec.cross_assets`` to its
    candle frame; ``orderbook`` is a snapshot frame (see ``ml.data``).
    """

    candles: pd.DataFrame
    cross: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    orderbook: pd.DataFrame | None = None

    def until_bar(self, index: int, interval_ms: int) -> FeatureInputs:
        """What was known at the close of bar ``index``: all inputs cut there."""
        last_open_ms = int(self.candles["timestamp_ms"].iloc[index])
        return self.tail_until(last_open_ms, interval_ms, n_bars=None)

    def tail_until(self, last_open_ms: int, interval_ms: int, *, n_bars: int | None) -> FeatureInputs:
        """Inputs cut at the close of the bar opening at ``last_open_ms``, keeping the last ``n_bars``."""

        def cut(frame: pd.DataFrame, limit_ms: int) -> pd.DataFrame:
            kept = frame[frame["timestamp_ms"].to_numpy() <= limit_ms]
            if n_bars is not None:
                kept = kept.iloc[-n_bars:]
            return kept.reset_index(drop=True)

        return FeatureInputs(
            candles=cut(self.candles, last_open_ms),
            cross={name: cut(frame, last_open_ms) for name, frame in self.cross.items()},
            orderbook=None if self.orderbook is None else cut(self.orderbook, last_open_ms + interval_ms),
        )


def feature_names(spec: FeatureSpec) -> list[str]:
    """The feature columns ``build_features`` returns for ``spec``, in order."""
    names = [f"ret_{w}" for w in spec.return_windows_bars]
    for w in spec.vol_windows_bars:
        names += [f"log_rv_cc_{w}", f"log_rv_pk_{w}", f"log_rv_gk_{w}"]
    names += [f"range_{w}" for w in spec.range_windows_bars]
    names.append("volume_z")
    if spec.time_of_day:
        names += ["tod_sin", "tod_cos", "day_of_week"]
    for asset in spec.cross_assets:
        names += [f"x_{asset}_ret_{w}" for w in spec.cross_return_windows_bars]
        names += [f"x_{asset}_log_rv_cc_{w}" for w in spec.cross_vol_windows_bars]
    if spec.orderbook:
        names += ["ob_imbalance", "ob_spread_bps"]
    return names


def _window_return(close: np.ndarray, w: int) -> np.ndarray:
    out = np.full(close.shape, np.nan)
    out[w:] = np.log(close[w:] / close[:-w])
    return out


def _candle_features(candles: pd.DataFrame, spec: FeatureSpec) -> dict[str, np.ndarray]:
    o, h, low, c, v = (candles[k].to_numpy(dtype=np.float64) for k in ("open", "high", "low", "close", "volume"))
    r = log_returns(c)
    hl = np.log(h / low)
    co = np.log(c / o)
    parkinson = hl * hl / (4.0 * _LN2)
    garman_klass = 0.5 * hl * hl - (2.0 * _LN2 - 1.0) * co * co
    cols: dict[str, np.ndarray] = {}
    for w in spec.return_windows_bars:
        cols[f"ret_{w}"] = _window_return(c, w)
    for w in spec.vol_windows_bars:
        cols[f"log_rv_cc_{w}"] = log_vol_from_var(rolling_mean(r * r, w))
        cols[f"log_rv_pk_{w}"] = log_vol_from_var(rolling_mean(parkinson, w))
        cols[f"log_rv_gk_{w}"] = log_vol_from_var(rolling_mean(garman_klass, w))
    for w in spec.range_windows_bars:
        cols[f"range_{w}"] = rolling_mean(hl, w)
    lv = np.log1p(v)
    mean, std = rolling_mean(lv, spec.volume_window_bars), rolling_std(lv, spec.volume_window_bars)
    with np.errstate(invalid="ignore", divide="ignore"):
        # A window of identical volumes has no spread: call the bar ordinary (z = 0).
        cols["volume_z"] = np.where(std > 0, (lv - mean) / std, np.where(np.isnan(std), np.nan, 0.0))
    if spec.time_of_day:
        ts = candles["timestamp_ms"].to_numpy(dtype=np.int64)
        phase = 2.0 * np.pi * (ts % _DAY_MS) / _DAY_MS
        cols["tod_sin"], cols["tod_cos"] = np.sin(phase), np.cos(phase)
        cols["day_of_week"] = ((ts // _DAY_MS + 3) % 7).astype(np.float64)  # 1970-01-01 was a Thursday
    return cols


def _cross_features(
    candles: pd.DataFrame, asset: str, other: pd.DataFrame, spec: FeatureSpec
) -> dict[str, np.ndarray]:
    c = other["close"].to_numpy(dtype=np.float64)
    r = log_returns(c)
    own = {f"x_{asset}_ret_{w}": _window_return(c, w) for w in spec.cross_return_windows_bars}
    own |= {f"x_{asset}_log_rv_cc_{w}": log_vol_from_var(rolling_mean(r * r, w)) for w in spec.cross_vol_windows_bars}
    # Align on the bar open time: the other asset's bar t closes when ours does.
    frame = pd.DataFrame(own, index=other["timestamp_ms"].to_numpy(dtype=np.int64))
    aligned = frame.reindex(candles["timestamp_ms"].to_numpy(dtype=np.int64))
    return {k: aligned[k].to_numpy() for k in own}


def _orderbook_features(
    candles: pd.DataFrame, book: pd.DataFrame, interval_ms: int, spec: FeatureSpec
) -> dict[str, np.ndarray]:
    close_ms = candles["timestamp_ms"].to_numpy(dtype=np.int64) + interval_ms
    snap_ms = book["timestamp_ms"].to_numpy(dtype=np.int64)
    # Last snapshot taken at or before each bar's close, if fresh enough.
    idx = np.searchsorted(snap_ms, close_ms, side="right") - 1
    valid = idx >= 0
    safe = np.where(valid, idx, 0)
    valid &= (close_ms - snap_ms[safe]) <= spec.orderbook_max_age_ms
    bid_sz, ask_sz = book["bid_size"].to_numpy()[safe], book["ask_size"].to_numpy()[safe]
    bid_px, ask_px = book["bid_price"].to_numpy()[safe], book["ask_price"].to_numpy()[safe]
    total = bid_sz + ask_sz
    with np.errstate(invalid="ignore", divide="ignore"):
        imbalance = np.where(total > 0, (bid_sz - ask_sz) / total, 0.0)
        spread_bps = (ask_px - bid_px) / ((ask_px + bid_px) / 2.0) * 1e4
    return {
        "ob_imbalance": np.where(valid, imbalance, np.nan),
        "ob_spread_bps": np.where(valid, spread_bps, np.nan),
    }


def build_features(
    inputs: FeatureInputs | pd.DataFrame, spec: FeatureSpec, *, interval_ms: int | None = None
) -> pd.DataFrame:
    """Feature frame for every bar of ``inputs.candles`` (same row order, index 0..n-1).

    Rows without enough history hold NaN. ``interval_ms`` (the bar interval)
    defaults to the one inferred from the candles; pass it when serving on a
    short window.

    Raises:
        DataError: ``spec`` asks for a cross asset or order book that ``inputs`` lacks.
    """
    if isinstance(inputs, pd.DataFrame):
        inputs = FeatureInputs(candles=inputs)
    candles = inputs.candles
    cols = _candle_features(candles, spec)
    for asset in spec.cross_assets:
        if asset not in inputs.cross:
            raise DataError(f"features need cross asset {asset!r}; got {sorted(inputs.cross)}")
        cols |= _cross_features(candles, asset, inputs.cross[asset], spec)
    if spec.orderbook:
        if inputs.orderbook is None:
            raise DataError("features need order book snapshots (spec.orderbook is set)")
        if interval_ms is None:
            interval_ms = infer_interval_ms(candles)
        cols |= _orderbook_features(candles, inputs.orderbook, interval_ms, spec)
    names = feature_names(spec)
    return pd.DataFrame({n: cols[n] for n in names}, index=candles.index)


def latest_feature_row(
    inputs: FeatureInputs | pd.DataFrame, spec: FeatureSpec, *, interval_ms: int
) -> pd.DataFrame:
    """The feature row of the last bar of ``inputs.candles``, computed from its last
    ``spec.warmup_bars`` bars only (the serving path). A one-row frame.

    Raises:
        InsufficientHistory: fewer than ``spec.warmup_bars`` candles.
        FeatureUnavailable: a feature of that row is NaN (e.g. the cross asset
            has no bar at that time, or the book snapshot is stale).
        DataError: as ``build_features``.
    """
    if isinstance(inputs, pd.DataFrame):
        inputs = FeatureInputs(candles=inputs)
    n = len(inputs.candles)
    if n < spec.warmup_bars:
        raise InsufficientHistory(f"features need {spec.warmup_bars} bars of history, got {n}")
    last_open_ms = int(inputs.candles["timestamp_ms"].iloc[-1])
    window = inputs.tail_until(last_open_ms, interval_ms, n_bars=spec.warmup_bars)
    row = build_features(window, spec, interval_ms=interval_ms).iloc[[-1]].reset_index(drop=True)
    missing = [c for c in row.columns if pd.isna(row[c].iloc[0])]
    if missing:
        raise FeatureUnavailable(f"bar {last_open_ms}: features unavailable: {missing}")
    return row
