"""What the fill reconciler's loops share: one venue's connections, memory and effects.

Each loop (``reconciler_loops``, ``reconciler_canary``) reads its snapshot
through this context, calls its decision in ``execution`` and carries out the
actions with the effects here (alert, pause, heartbeat). The context holds no
decision of its own.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Protocol

from tradetree.adapters.okx import VenueOrderReport
from tradetree.core import (
    ActorNotFound,
    Clock,
    ControlState,
    Fill,
    FillLayer,
    Instrument,
    Order,
    RedisStore,
    StoreError,
    VenueConfig,
)
from tradetree.execution import (
    DriftDetector,
    DriftOutcome,
    FillHealthMonitor,
    PollOutcome,
    ReconcilerConfig,
    fills_flowing_problems,
)

__all__ = ["AlertSink", "RestApi", "ReconcilerContext"]

log = logging.getLogger(__name__)

# An alert sink: ``alert(severity, key, title, text)``, sync or async (AlerterActor.alert's shape).
AlertSink = Callable[[str, str, str, str], "Awaitable[None] | None"]


class RestApi(Protocol):
    """The part of ``OkxRestClient`` the reconciler uses (a test can wrap it)."""

    async def load_instruments(self) -> list[Instrument]: ...
    async def create_order(self, order: Order) -> str: ...
    async def fetch_order(self, order: Order) -> VenueOrderReport: ...
    async def fetch_fills(self, inst_id: str, since_ms: int | None = None,
                          layer: FillLayer = FillLayer.POLL) -> list[Fill]: ...
    async def fetch_positions(self) -> dict[str, Decimal]: ...
    async def close(self) -> None: ...


def _counters() -> dict[str, int]:
    return {
        "poll_cycles": 0, "poll_cycles_ok": 0, "poll_cycles_failed": 0,
        "fills_applied_poll": 0, "fills_duplicate_poll": 0,
        "fills_applied_health": 0, "fills_duplicate_health": 0,
        "orders_updated": 0, "orders_untracked": 0, "orders_rejected_never_reached": 0,
        "anomalies": 0, "health_checks": 0, "health_checks_failed": 0, "targeted_fetches": 0,
        "targeted_fetch_failures": 0, "venue_pauses": 0, "drift_checks": 0, "drift_checks_failed": 0,
        "drift_confirmed": 0, "alerts": 0, "alert_failures": 0, "loop_crashes": 0,
        "poll_failure_alerts": 0, "venue_resumes": 0,
        "canary_runs": 0, "canary_ws": 0, "canary_not_ws": 0, "canary_incomplete": 0, "canary_failed": 0,
        "canary_orders_sent": 0, "canary_leftovers_closed": 0,
    }


class ReconcilerContext:
    """One venue's reconciler state shared by its loops. ``store``, ``control`` and ``rest``
    are set when the reconciler opens them; ``parts()`` refuses before that."""

    def __init__(self, venue: VenueConfig, config: ReconcilerConfig, clock: Clock,
                 alert_sink: AlertSink | None) -> None:
        self.venue = venue
        self.name = venue.name
        self.component = f"reconciler:{venue.name}"
        self.config = config
        self.clock = clock
        self.alert_sink = alert_sink
        self.store: RedisStore | None = None
        self.control: ControlState | None = None
        self.rest: RestApi | None = None
        self.instruments: dict[str, Instrument] = {}
        self.counters = _counters()
        self.last_errors: dict[str, str] = {}
        self.monitor = FillHealthMonitor(
            venue.name, gap_alert_secs=config.fill_gap_alert_secs, recurrence_count=config.gap_recurrence_count,
            recurrence_window_secs=config.gap_recurrence_window_secs, ws_flow_window_secs=config.ws_flow_window_secs,
        )
        self.detector = DriftDetector(venue.name, tolerance=config.drift_tolerance)
        self.last_poll: PollOutcome | None = None
        self.last_poll_ok_ms: int | None = None
        self.last_drift: DriftOutcome | None = None
        self.last_drift_ok_ms: int | None = None
        self.last_health_ok_ms: int | None = None

    def parts(self) -> tuple[RedisStore, ControlState, RestApi]:
        if self.store is None or self.control is None or self.rest is None:
            raise RuntimeError(f"{self.component}: not started")
        return self.store, self.control, self.rest

    async def ensure_instruments(self) -> None:
        if self.instruments:
            return
        _, _, rest = self.parts()
        # Updated in place: the reconciler and the loops hold this one dict.
        self.instruments.update({i.inst_id: i for i in await rest.load_instruments()})

    async def alert(self, severity: str, key: str, title: str, text: str) -> None:
        """Send an alert; never raises (a broken alerter must not stop a check)."""
        self.counters["alerts"] += 1
        full_key = f"{self.name}:{key}"
        logger = log.error if severity == "critical" else log.warning if severity == "warning" else log.info
        logger("%s: ALERT [%s] %s: %s", self.component, severity, title, text)
        if self.alert_sink is None:
            return
        try:
            result = self.alert_sink(severity, full_key, title, text)
            if inspect.isawaitable(result):
                await result
        except ActorNotFound:  # the alerter is not up (yet, or being restarted): logged above, no failure
            log.info("%s: no alerter; alert %s logged only", self.component, full_key)
        except Exception as exc:
            self.counters["alert_failures"] += 1
            log.warning("%s: alert sink failed: %s", self.component, exc)

    async def pause_venue(self, reason: str, source: str) -> None:
        """Pause the venue as ``source`` and alert. Raises StoreError: the pause was not written."""
        _, control, _ = self.parts()
        self.counters["venue_pauses"] += 1
        try:
            await control.pause_venue(self.name, reason, self.clock.now_ms(), source=source)
        except StoreError as exc:
            await self.alert("critical", "pause_failed", f"{self.name}: could not pause the venue",
                             f"{reason}; pausing failed: {exc}")
            raise
        await self.alert("critical", "venue_paused", f"{self.name} paused by the fill reconciler", reason)

    async def heartbeat(self, now_ms: int) -> None:
        store, _, _ = self.parts()
        try:
            await store.heartbeat(self.component, now_ms)
        except StoreError as exc:
            log.warning("%s: heartbeat failed: %s", self.component, exc)

    async def open_discrepancy_keys(self) -> list[str]:
        """The venue's open discrepancies: Redis remembers what this process may not (it may be a
        fresh incarnation). An ``unknown (...)`` key stands for a failed read."""
        _, control, _ = self.parts()
        try:
            return sorted(await control.discrepancies(self.name))
        except StoreError as exc:
            return [f"unknown ({exc})"]

    def fills_flowing_problems(self, open_keys: list[str]) -> list[str]:
        """Why the ``fills_flowing_ws`` probe fails now (empty: it passes)."""
        mono = self.clock.monotonic()
        return fills_flowing_problems(self.monitor.overdue_gaps(mono), self.monitor.ws_flow(mono), open_keys,
                                      health_checked=self.last_health_ok_ms is not None)
