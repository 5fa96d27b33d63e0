"""Injectable clocks, so logic can run in wall time (paper, live) or simulated time (tests, backtests)."""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "WallClock", "ManualClock"]


class Clock(Protocol):
    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (for intervals and timeouts)."""
        ...


class WallClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to. For tests and simulated time."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self._ms = start_ms
        self._mono = 0.0

    def now_ms(self) -> int:
        return self._ms

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._ms += int(round(seconds * 1000))
        self._mono += seconds

    def set_ms(self, ms: int) -> None:
        if ms < self._ms:
            raise ValueError("a clock cannot go backwards")
        self._mono += (ms - self._ms) / 1000
        self._ms = ms
