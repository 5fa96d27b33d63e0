"""Turn a stream of tickers into time bars (pure; used by the strategy host)."""

from __future__ import annotations

from decimal import Decimal

from tradetree.core.types import Bar, Ticker

__all__ = ["BarAggregator"]


class BarAggregator:
    """Aggregates ``Ticker.last`` into OHLC bars of ``interval_ms`` per instrument.

    A bar is emitted when the first ticker of a later interval arrives, so
    emitted bars are final. Tickers older than the open bar are ignored (a
    venue may repeat itself after a reconnect). Empty intervals emit nothing.
    """

    def __init__(self, interval_ms: int) -> None:
        if interval_ms <= 0:
            raise ValueError("interval_ms must be positive")
        self.interval_ms = interval_ms
        self._open: dict[tuple[str, str], dict] = {}

    def add(self, ticker: Ticker) -> list[Bar]:
        key = (ticker.venue, ticker.inst_id)
        start = ticker.ts_ms - ticker.ts_ms % self.interval_ms
        price: Decimal = ticker.last
        cur = self._open.get(key)
        if cur is not None and start < cur["ts_ms"]:
            return []
        if cur is not None and start == cur["ts_ms"]:
            cur["high"] = max(cur["high"], price)
            cur["low"] = min(cur["low"], price)
            cur["close"] = price
            return []
        done = []
        if cur is not None:
            done.append(Bar(venue=ticker.venue, inst_id=ticker.inst_id, interval_ms=self.interval_ms, **cur))
        self._open[key] = {"ts_ms": start, "open": price, "high": price, "low": price, "close": price}
        return done
