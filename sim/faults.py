"""Fault injection for the simulator: the settings, and the decisions made from them.

:class:`FaultInjector` is shared between the server's event loop and test code
running in other threads: settings are an immutable :class:`FaultSettings`
swapped atomically under a lock, and every decision (``rest_fault_for``) reads
one consistent snapshot. ``cut_ws()`` calls the listeners the server
registered; the server makes its listener thread-safe.

Faults (see okx_protocol.md section 8):

- ``drop_fill_records``: ``orders`` pushes keep state/accFillSz/avgPx but carry
  ``tradeId:""``, ``fillSz:"0"``, ``fillPx:""`` (the incident); the ``fills``
  channel is silent; REST trade history still has the fills.
- ``drop_order_updates``: no ``orders`` channel pushes at all.
- ``cut_ws()``: close every WS connection now (code 4000).
- ``rest_error_rate`` with ``rest_error_kind``: a fraction of REST calls (under
  ``rest_error_paths`` prefixes, all ``/api/v5`` paths when empty) fail:
  ``5xx`` = HTTP 503 with an HTML body; ``429`` = HTTP 429 + ``code 50011``;
  ``timeout`` = sleep ``rest_timeout_secs`` then HTTP 504 (with
  ``rest_timeout_after_processing`` the request is carried out first, so an
  order is placed although the client sees a timeout).
- ``reject_orders``: every new order is rejected with ``sCode 51008``.
- ``freeze_market_data``: prices stop and nothing is pushed on public channels.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["FaultSettings", "FaultInjector", "RestErrorKind"]

RestErrorKind = Literal["5xx", "429", "timeout"]


class FaultSettings(BaseModel):
    """Every fault switch; the defaults are a healthy venue."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    drop_fill_records: bool = False
    drop_order_updates: bool = False
    rest_error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    rest_error_kind: RestErrorKind = "5xx"
    rest_error_paths: tuple[str, ...] = ()  # path prefixes, e.g. "/api/v5/trade"; empty = all
    rest_timeout_secs: float = Field(default=15.0, ge=0.0)
    rest_timeout_after_processing: bool = False
    reject_orders: bool = False
    freeze_market_data: bool = False


class FaultInjector:
    """Thread-safe fault state plus a seeded RNG for probabilistic faults."""

    def __init__(self, seed: int = 1) -> None:
        self._lock = threading.Lock()
        self._settings = FaultSettings()
        self._rng = random.Random(seed)
        self._cut_listeners: list[Callable[[], None]] = []
        self._change_listeners: list[Callable[[FaultSettings], None]] = []

    @property
    def settings(self) -> FaultSettings:
        """The current settings (an immutable snapshot)."""
        with self._lock:
            return self._settings

    def update(self, **changes: Any) -> FaultSettings:
        """Change some settings, keep the rest; returns the new settings.

        Raises:
            pydantic.ValidationError: an unknown setting or an invalid value
                (nothing is changed then).
        """
        with self._lock:
            merged = {**self._settings.model_dump(), **changes}
            self._settings = FaultSettings.model_validate(merged)
            new = self._settings
            listeners = list(self._change_listeners)
        for listener in listeners:
            listener(new)
        return new

    def clear(self, name: str) -> FaultSettings:
        """Reset one setting to its healthy default.

        Raises:
            KeyError: ``name`` is not a setting.
        """
        if name not in FaultSettings.model_fields:
            raise KeyError(name)
        return self.update(**{name: FaultSettings.model_fields[name].default})

    def clear_all(self) -> FaultSettings:
        """Back to a healthy venue."""
        with self._lock:
            self._settings = FaultSettings()
            new = self._settings
            listeners = list(self._change_listeners)
        for listener in listeners:
            listener(new)
        return new

    # Convenience setters, named after the faults.
    def set_drop_fill_records(self, on: bool = True) -> None:
        self.update(drop_fill_records=on)

    def set_drop_order_updates(self, on: bool = True) -> None:
        self.update(drop_order_updates=on)

    def set_reject_orders(self, on: bool = True) -> None:
        self.update(reject_orders=on)

    def set_freeze_market_data(self, on: bool = True) -> None:
        self.update(freeze_market_data=on)

    def set_rest_errors(self, rate: float, kind: RestErrorKind = "5xx", paths: tuple[str, ...] = ()) -> None:
        self.update(rest_error_rate=rate, rest_error_kind=kind, rest_error_paths=tuple(paths))

    def cut_ws(self) -> None:
        """Close every WS connection of the server(s) listening, now."""
        with self._lock:
            listeners = list(self._cut_listeners)
        for listener in listeners:
            listener()

    def add_cut_listener(self, listener: Callable[[], None]) -> None:
        """Register a callable run by :meth:`cut_ws` (from the caller's thread)."""
        with self._lock:
            self._cut_listeners.append(listener)

    def remove_cut_listener(self, listener: Callable[[], None]) -> None:
        with self._lock:
            if listener in self._cut_listeners:
                self._cut_listeners.remove(listener)

    def add_change_listener(self, listener: Callable[[FaultSettings], None]) -> None:
        """Register a callable run with the new settings after every change."""
        with self._lock:
            self._change_listeners.append(listener)

    def rest_fault_for(self, path: str) -> RestErrorKind | None:
        """Decide whether this REST request fails, and how (None = serve it)."""
        with self._lock:
            s = self._settings
            if s.rest_error_rate <= 0:
                return None
            if s.rest_error_paths and not any(path.startswith(p) for p in s.rest_error_paths):
                return None
            if self._rng.random() >= s.rest_error_rate:
                return None
            return s.rest_error_kind
