"""Small incremental indicators for strategies: O(1) amortized per update.

The backtester feeds hundreds of thousands of bars through the same strategy
objects the live host runs, so every indicator here updates in constant time
(rolling windows use sliding sums or sliding centered moments) instead of
re-scanning its window. Sliding sums accumulate floating-point drift, so each
rolling indicator re-computes its state exactly from the window once every
``window`` updates: O(window) work every ``window`` updates, O(1) amortized,
and the error never grows with the length of the run. It also re-computes at
once when a sliding update cancels almost all of a second moment (an outlier
leaving a quiet window), where the sliding result would be mostly rounding.

All values are plain floats; an indicator that has not seen enough data yet
reports ``ready == False`` and ``None`` from its value accessors.
"""

from __future__ import annotations

import math
from collections import deque
from typing import SupportsFloat

__all__ = ["EMA", "SMA", "RollingStdev", "RollingOLS", "RealizedVol", "ATR"]

# A sliding update that leaves less than this fraction of a second moment has
# lost most of its significant digits to cancellation: re-compute exactly.
_CANCELLATION = 1e-6


class EMA:
    """Exponential moving average with ``alpha = 2 / (period + 1)``.

    Seeded with the first value; ``ready`` once ``period`` values were seen
    (before that the seed still dominates the average).

    Raises:
        ValueError: ``period < 1``.
    """

    __slots__ = ("period", "alpha", "count", "value")

    def __init__(self, period: int) -> None:
        if period < 1:
            raise ValueError("EMA period must be >= 1")
        self.period = period
        self.alpha = 2.0 / (period + 1)
        self.count = 0
        self.value: float | None = None

    @property
    def ready(self) -> bool:
        return self.count >= self.period

    def update(self, x: float) -> float:
        """Add one value; return the new average."""
        self.count += 1
        value = self.value
        if value is None:
            value = float(x)
        else:
            value += self.alpha * (x - value)
        self.value = value
        return value


class SMA:
    """Simple moving average of the last ``window`` values (sliding sum).

    Raises:
        ValueError: ``window < 1``.
    """

    __slots__ = ("window", "_values", "_sum", "_since_exact")

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError("SMA window must be >= 1")
        self.window = window
        self._values: deque[float] = deque(maxlen=window)
        self._sum = 0.0
        self._since_exact = 0

    @property
    def ready(self) -> bool:
        return len(self._values) == self.window

    @property
    def value(self) -> float | None:
        return self._sum / self.window if self.ready else None

    def update(self, x: float) -> float | None:
        """Add one value; return the average, or None until the window is full."""
        x = float(x)
        if len(self._values) == self.window:
            self._sum -= self._values[0]
        self._values.append(x)
        self._sum += x
        self._since_exact += 1
        if self._since_exact >= self.window:
            self._sum = math.fsum(self._values)
            self._since_exact = 0
        return self.value


class RollingStdev:
    """Mean and sample standard deviation of the last ``window`` values.

    Sliding Welford update (centered, so a large common offset such as a
    price level costs no precision), re-computed exactly every ``window``
    updates.

    Raises:
        ValueError: ``window < 2``.
    """

    __slots__ = ("window", "_values", "_mean", "_m2", "_since_exact")

    def __init__(self, window: int) -> None:
        if window < 2:
            raise ValueError("RollingStdev window must be >= 2")
        self.window = window
        self._values: deque[float] = deque(maxlen=window)
        self._mean = 0.0
        self._m2 = 0.0
        self._since_exact = 0

    @property
    def ready(self) -> bool:
        return len(self._values) == self.window

    @property
    def mean(self) -> float | None:
        return self._mean if self.ready else None

    @property
    def variance(self) -> float | None:
        """Sample variance (divides by ``window - 1``), or None until the window is full."""
        return max(self._m2, 0.0) / (self.window - 1) if self.ready else None

    @property
    def stdev(self) -> float | None:
        var = self.variance
        return None if var is None else math.sqrt(var)

    def update(self, x: float) -> None:
        x = float(x)
        if len(self._values) < self.window:
            self._values.append(x)
            n = len(self._values)
            d = x - self._mean
            self._mean += d / n
            self._m2 += d * (x - self._mean)
        else:
            old = self._values[0]
            self._values.append(x)  # maxlen drops ``old``
            d = x - old
            new_mean = self._mean + d / self.window
            before = self._m2
            self._m2 += d * ((x - new_mean) + (old - self._mean))
            self._mean = new_mean
            if self._m2 < _CANCELLATION * before:
                self._since_exact = self.window
        self._since_exact += 1
        if self._since_exact >= self.window:
            self._recompute()

    def _recompute(self) -> None:
        n = len(self._values)
        self._mean = math.fsum(self._values) / n
        self._m2 = math.fsum((v - self._mean) ** 2 for v in self._values)
        self._since_exact = 0


class RollingOLS:
    """Least-squares fit ``y = alpha + beta * x`` over the last ``window`` pairs.

    Keeps sliding centered co-moments, re-computed exactly every ``window``
    updates. ``beta`` is None until the window is full or while ``x`` has no
    variance in it (the fit is undefined then).

    Raises:
        ValueError: ``window < 3`` (a residual error needs two degrees of freedom).
    """

    __slots__ = ("window", "_pairs", "_mx", "_my", "_cxx", "_cyy", "_cxy", "_since_exact")

    def __init__(self, window: int) -> None:
        if window < 3:
            raise ValueError("RollingOLS window must be >= 3")
        self.window = window
        self._pairs: deque[tuple[float, float]] = deque()
        self._mx = self._my = 0.0
        self._cxx = self._cyy = self._cxy = 0.0
        self._since_exact = 0

    @property
    def ready(self) -> bool:
        return len(self._pairs) == self.window and self.beta is not None

    def _add(self, x: float, y: float) -> None:
        self._pairs.append((x, y))
        n = len(self._pairs)
        dx = x - self._mx
        dy = y - self._my
        self._mx += dx / n
        self._my += dy / n
        self._cxx += dx * (x - self._mx)
        self._cyy += dy * (y - self._my)
        self._cxy += dx * (y - self._my)

    def _remove_oldest(self) -> None:
        x, y = self._pairs.popleft()
        n = len(self._pairs)  # after removal
        if n == 0:
            self._mx = self._my = self._cxx = self._cyy = self._cxy = 0.0
            return
        mx_new = self._mx - (x - self._mx) / n
        my_new = self._my - (y - self._my) / n
        self._cxx -= (x - mx_new) * (x - self._mx)
        self._cyy -= (y - my_new) * (y - self._my)
        self._cxy -= (x - mx_new) * (y - self._my)
        self._mx, self._my = mx_new, my_new

    def update(self, x: float, y: float) -> None:
        cxx_before, cyy_before = self._cxx, self._cyy
        if len(self._pairs) == self.window:
            self._remove_oldest()
        self._add(float(x), float(y))
        self._since_exact += 1
        if self._cxx < _CANCELLATION * cxx_before or self._cyy < _CANCELLATION * cyy_before:
            self._since_exact = self.window
        if self._since_exact >= self.window:
            self._recompute()

    def _recompute(self) -> None:
        n = len(self._pairs)
        self._mx = math.fsum(p[0] for p in self._pairs) / n
        self._my = math.fsum(p[1] for p in self._pairs) / n
        self._cxx = math.fsum((p[0] - self._mx) ** 2 for p in self._pairs)
        self._cyy = math.fsum((p[1] - self._my) ** 2 for p in self._pairs)
        self._cxy = math.fsum((p[0] - self._mx) * (p[1] - self._my) for p in self._pairs)
        self._since_exact = 0

    @property
    def beta(self) -> float | None:
        if len(self._pairs) < self.window:
            return None
        # x "has no variance" when its spread is below float resolution at its level
        resolution = 1e-12 * max(1.0, abs(self._mx))
        if self._cxx <= self.window * resolution * resolution:
            return None
        return self._cxy / self._cxx

    @property
    def alpha(self) -> float | None:
        beta = self.beta
        return None if beta is None else self._my - beta * self._mx

    def residual(self, x: float, y: float) -> float | None:
        """``y - (alpha + beta * x)`` under the current fit."""
        beta = self.beta
        if beta is None:
            return None
        return (y - self._my) - beta * (x - self._mx)

    @property
    def residual_stdev(self) -> float | None:
        """Standard error of the regression: ``sqrt(SSR / (window - 2))``."""
        beta = self.beta
        if beta is None:
            return None
        ssr = max(self._cyy - beta * self._cxy, 0.0)
        return math.sqrt(ssr / (self.window - 2))


class RealizedVol:
    """Per-bar realized volatility: sample stdev of the last ``window`` log returns.

    Fed closes; the first close only sets the reference price. A fraction per
    bar (0.002 = 0.2 %), the unit every strategy here uses for volatility.

    Raises:
        ValueError: ``window < 2``; ``update`` with a close that is not positive.
    """

    __slots__ = ("window", "_stdev", "_last_close")

    def __init__(self, window: int) -> None:
        self.window = window
        self._stdev = RollingStdev(window)
        self._last_close: float | None = None

    @property
    def ready(self) -> bool:
        return self._stdev.ready

    @property
    def value(self) -> float | None:
        return self._stdev.stdev

    def update(self, close: float) -> float | None:
        """Add one close; return the vol, or None until ``window`` returns were seen."""
        close = float(close)
        if not close > 0:
            raise ValueError(f"close must be positive, got {close}")
        if self._last_close is not None:
            self._stdev.update(math.log(close / self._last_close))
        self._last_close = close
        return self.value


class ATR:
    """Average true range with Wilder's smoothing over ``period`` bars.

    True range is ``max(high - low, |high - prev close|, |low - prev close|)``
    (just ``high - low`` on the first bar). The first value is the mean of the
    first ``period`` true ranges; then ``atr = (atr * (period - 1) + tr) / period``.

    Raises:
        ValueError: ``period < 1``.
    """

    __slots__ = ("period", "count", "_sum", "_prev_close", "value")

    def __init__(self, period: int) -> None:
        if period < 1:
            raise ValueError("ATR period must be >= 1")
        self.period = period
        self.count = 0
        self._sum = 0.0
        self._prev_close: float | None = None
        self.value: float | None = None

    @property
    def ready(self) -> bool:
        return self.value is not None

    def update(self, high: SupportsFloat, low: SupportsFloat, close: SupportsFloat) -> float | None:
        h, lo, c = float(high), float(low), float(close)
        tr = h - lo
        if self._prev_close is not None:
            tr = max(tr, abs(h - self._prev_close), abs(lo - self._prev_close))
        self._prev_close = c
        self.count += 1
        if self.value is None:
            self._sum += tr
            if self.count == self.period:
                self.value = self._sum / self.period
        else:
            self.value = (self.value * (self.period - 1) + tr) / self.period
        return self.value
