"""FillReconciler: one venue's REST polling, fill-health monitor and drift check.

``FillReconciler`` is plain async Python (testable without Ray);
``FillReconcilerActor`` is its one-line-per-method Ray shell (the supervisor
gives name, namespace, lifetime and ``max_restarts=0`` via ``.options``).

The decisions live in ``execution`` (pure); this module only does the I/O
around them. Three independent timers, each its own asyncio task with its own
error handling, so one failing never stops the others:

- **poll** (``poll_interval_secs``): fetch the fills since the cursor of every
  instrument (configured ones and those of tracked orders) and apply them
  tagged ``poll``; fetch the status of every order Redis tracks for the venue;
  write the newer snapshots; untrack the orders the poller saw terminal whose
  applied fills add up; heartbeat ``reconciler:{venue}``; and, only after a
  cycle in which every fetch and every write succeeded,
  ``ControlState.mark_verified(venue, cycle start)``.
- **fill health** (``fill_health_interval_secs``): order status vs applied
  fills; targeted fetches (fills applied tagged ``health``), alerts,
  discrepancies and venue pauses; samples the per-layer fill counters to tell
  whether fills flow on the WS.
- **drift** (``drift_interval_secs``): venue net positions vs the sum of
  Redis positions; a drift confirmed by two consecutive checks is alerted,
  opened as a discrepancy and pauses the venue.

The reconciler owns its own ``OkxRestClient``: it never goes through the
gateway, so a hung or restarting gateway cannot starve it.

Its memory that matters survives a restart in Redis: the fill cursors, the
discrepancies it opened (with their ``since_ms``), the audit stream (which
layer applied which fill). A fresh incarnation dates open gaps from them and
recovers the WS-flow evidence, so its probes do not turn green by forgetting.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import logging
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, Protocol

import ray
import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field

from adapters.okx.reports import VenueOrderReport
from adapters.okx.rest import OkxRestClient
from core.clock import Clock, WallClock
from core.config import VenueConfig, VenueCredentials
from core.control_state import ControlState
from core.errors import (
    InvalidOrderTransition,
    OrderNotFound,
    StoreError,
    TradetreeError,
    VenueAuthError,
    VenueError,
    VenueProtocolError,
)
from core.store import AuditEntry, RedisStore
from core.types import Fill, FillLayer, HealthReport, Instrument, InstrumentKind, Order, OrderState, ProbeResult
from execution.drift import DriftCheck, DriftDetector, expected_positions, in_flight_fills
from execution.fill_health import (
    FillHealthAction,
    FillHealthActionKind,
    FillHealthMonitor,
    OrderFillObservation,
)
from execution.reconciliation import (
    NEVER_REACHED_VENUE,
    LookupKind,
    OrderLookup,
    ReconcilerConfig,
    TrackedOrder,
    advance_cursor,
    fetch_since_ms,
    plan_orders,
    plan_poll_fills,
)

__all__ = [
    "ReconcilerConfig",
    "ReconcilerState",
    "AlertSink",
    "PollOutcome",
    "DriftOutcome",
    "ReconcileReport",
    "FillReconciler",
    "FillReconcilerActor",
    "RayAlerterSink",
]

log = logging.getLogger(__name__)

# An alert sink: ``alert(severity, key, title, text)``, sync or async (AlerterActor.alert's shape).
AlertSink = Callable[[str, str, str, str], "Awaitable[None] | None"]

_LOOKUP_CONCURRENCY = 8  # parallel order-status requests per poll cycle
_AUDIT_SEED_ENTRIES = 500  # audit entries read once at start to recover the WS-flow evidence


class RestApi(Protocol):
    """The part of ``OkxRestClient`` the reconciler uses (a test can wrap it)."""

    async def load_instruments(self) -> list[Instrument]: ...
    async def fetch_order(self, order: Order) -> VenueOrderReport: ...
    async def fetch_fills(self, inst_id: str, since_ms: int | None = None,
                          layer: FillLayer = FillLayer.POLL) -> list[Fill]: ...
    async def fetch_positions(self) -> dict[str, Decimal]: ...
    async def close(self) -> None: ...


class ReconcilerState(str, enum.Enum):
    UNOPENED = "unopened"
    RUNNING = "running"
    STOPPED = "stopped"


_FROZEN = ConfigDict(frozen=True, extra="forbid")


class PollOutcome(BaseModel):
    """What one poll cycle did. ``ok``: every fetch and write succeeded (the venue was verified)."""

    model_config = _FROZEN

    started_ms: int
    ok: bool
    fills_seen: int = 0
    fills_applied: int = 0
    fills_duplicate: int = 0
    orders_checked: int = 0
    orders_updated: tuple[str, ...] = ()
    untracked: tuple[str, ...] = ()
    decisions: dict[str, str] = Field(default_factory=dict)
    anomalies: dict[str, str] = Field(default_factory=dict)
    errors: tuple[str, ...] = ()


class DriftOutcome(BaseModel):
    """What one drift check found. ``ok``: both sides were read."""

    model_config = _FROZEN

    started_ms: int
    ok: bool
    instruments: dict[str, dict[str, str]] = Field(default_factory=dict)  # inst -> venue/redis/in_flight/drift
    suspected: tuple[str, ...] = ()
    confirmed: tuple[str, ...] = ()
    drifting: tuple[str, ...] = ()
    resolved: tuple[str, ...] = ()
    error: str = ""


class ReconcileReport(BaseModel):
    """``reconcile_now()``: one full poll cycle and one drift check, run on demand."""

    model_config = _FROZEN

    venue: str
    poll: PollOutcome
    drift: DriftOutcome

    @property
    def ok(self) -> bool:
        return self.poll.ok and self.drift.ok


class FillReconciler:
    """The fill reconciler of one venue. ``start()`` first, ``stop()`` at the end.

    ``store``, ``control`` and ``rest`` may be passed in (tests); otherwise
    they are opened from ``redis_url``/``namespace`` and ``rest_url``/
    ``credentials`` at ``start()``, and closed at ``stop()``. ``alert_sink``
    receives ``(severity, key, title, text)``; without one, alerts are logged
    only.
    """

    def __init__(
        self,
        venue: VenueConfig,
        *,
        redis_url: str = "",
        namespace: str = "",
        rest_url: str = "",
        credentials: VenueCredentials | None = None,
        config: ReconcilerConfig | None = None,
        clock: Clock | None = None,
        alert_sink: AlertSink | None = None,
        store: RedisStore | None = None,
        control: ControlState | None = None,
        rest: RestApi | None = None,
        redis_socket_timeout_secs: float = 2.0,
    ) -> None:
        if (store is None or control is None) and not (redis_url and namespace):
            raise ValueError("FillReconciler needs a store and a control state, or redis_url and namespace")
        if rest is None and not (rest_url and credentials is not None):
            raise ValueError("FillReconciler needs a rest client or rest_url and credentials")
        self.venue = venue
        self.name = venue.name
        self.component = f"reconciler:{venue.name}"
        self.config = config or ReconcilerConfig()
        self._redis_url = redis_url
        self._namespace = namespace
        self._rest_url = rest_url
        self._credentials = credentials
        self._clock = clock or WallClock()
        self._alert_sink = alert_sink
        self._redis_timeout = redis_socket_timeout_secs
        self._store = store
        self._control = control
        self._rest = rest
        self._owns_store = store is None
        self._owns_control = control is None
        self._owns_rest = rest is None
        self._control_client: aioredis.Redis | None = None
        self.state = ReconcilerState.UNOPENED
        self._instruments: dict[str, Instrument] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._poll_lock = asyncio.Lock()
        self._drift_lock = asyncio.Lock()
        self._health_lock = asyncio.Lock()
        cfg = self.config
        self.monitor = FillHealthMonitor(
            venue.name, gap_alert_secs=cfg.fill_gap_alert_secs, recurrence_count=cfg.gap_recurrence_count,
            recurrence_window_secs=cfg.gap_recurrence_window_secs, ws_flow_window_secs=cfg.ws_flow_window_secs,
        )
        self.detector = DriftDetector(venue.name, tolerance=cfg.drift_tolerance)
        self.last_poll: PollOutcome | None = None
        self.last_poll_ok_ms: int | None = None
        self.last_drift: DriftOutcome | None = None
        self.last_drift_ok_ms: int | None = None
        self.last_health_ok_ms: int | None = None
        self.last_errors: dict[str, str] = {}
        self._alerted_anomalies: dict[str, str] = {}
        self._ws_flow_seeded = False
        self.counters: dict[str, int] = {
            "poll_cycles": 0, "poll_cycles_ok": 0, "poll_cycles_failed": 0,
            "fills_applied_poll": 0, "fills_duplicate_poll": 0,
            "fills_applied_health": 0, "fills_duplicate_health": 0,
            "orders_updated": 0, "orders_untracked": 0, "orders_rejected_never_reached": 0,
            "anomalies": 0, "health_checks": 0, "health_checks_failed": 0, "targeted_fetches": 0,
            "targeted_fetch_failures": 0, "venue_pauses": 0, "drift_checks": 0, "drift_checks_failed": 0,
            "drift_confirmed": 0, "alerts": 0, "alert_failures": 0, "loop_crashes": 0,
        }

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open Redis and REST, load the venue's instruments if it answers, start the three timers.

        A venue that does not answer is not fatal here (the poll loop keeps
        trying and the health probes say so); Redis is.

        Raises:
            StoreUnavailable: Redis does not answer.
            VenueAuthError: the venue rejected the credentials.
            RuntimeError: already started.
        """
        if self.state is not ReconcilerState.UNOPENED:
            raise RuntimeError(f"{self.component}: start() is allowed once, state is {self.state.value}")
        try:
            await self._open()
            try:
                await self._ensure_instruments()
            except VenueAuthError:
                raise
            except VenueError as exc:
                log.warning("%s: venue not answering at start (%s); the poll loop keeps trying", self.component, exc)
            cfg = self.config
            self._tasks = [
                asyncio.create_task(self._every("poll", cfg.poll_interval_secs, self.poll_once),
                                    name=f"{self.component} poll"),
                asyncio.create_task(self._every("fill_health", cfg.fill_health_interval_secs, self.check_fill_health),
                                    name=f"{self.component} fill health"),
                asyncio.create_task(self._every("drift", cfg.drift_interval_secs, self.check_drift),
                                    name=f"{self.component} drift"),
            ]
        except BaseException:
            await self._close()
            self.state = ReconcilerState.STOPPED
            raise
        self.state = ReconcilerState.RUNNING
        log.info("%s: running (poll %.1fs, fill health %.1fs, drift %.1fs)", self.component,
                 cfg.poll_interval_secs, cfg.fill_health_interval_secs, cfg.drift_interval_secs)

    async def stop(self) -> None:
        """Stop the timers and close what ``start()`` opened. Idempotent."""
        if self.state is ReconcilerState.STOPPED:
            return
        self.state = ReconcilerState.STOPPED
        await self._close()

    async def _open(self) -> None:
        if self._store is None:
            self._store = await RedisStore.connect(
                self._redis_url, self._namespace, socket_timeout_secs=self._redis_timeout, clock=self._clock
            )
        if self._control is None:
            self._control_client = aioredis.Redis.from_url(
                self._redis_url, socket_timeout=self._redis_timeout, socket_connect_timeout=self._redis_timeout
            )
            self._control = ControlState(self._control_client, self._store.namespace)
        if self._rest is None:
            assert self._credentials is not None
            self._rest = OkxRestClient(self.venue, self._credentials, rest_url=self._rest_url, clock=self._clock)

    async def _close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._rest is not None and self._owns_rest:
            await self._rest.close()
        if self._control_client is not None:
            with contextlib.suppress(Exception):
                await self._control_client.aclose()
        if self._store is not None and self._owns_store:
            with contextlib.suppress(Exception):
                await self._store.close()

    async def _every(self, name: str, interval_secs: float, check: Callable[[], Awaitable[Any]]) -> None:
        """Run ``check`` now and then every ``interval_secs``; no failure ends the loop."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await check()
            except Exception as exc:  # a check must never take its timer (or another) down
                self.counters["loop_crashes"] += 1
                self.last_errors[name] = f"{type(exc).__name__}: {exc}"
                log.exception("%s: %s check crashed", self.component, name)
            await asyncio.sleep(max(0.0, interval_secs - (loop.time() - started)))

    def _parts(self) -> tuple[RedisStore, ControlState, RestApi]:
        if self._store is None or self._control is None or self._rest is None:
            raise RuntimeError(f"{self.component}: not started")
        return self._store, self._control, self._rest

    async def _ensure_instruments(self) -> None:
        if self._instruments:
            return
        _, _, rest = self._parts()
        self._instruments = {i.inst_id: i for i in await rest.load_instruments()}

    # -- alerts -----------------------------------------------------------------------------------

    async def _alert(self, severity: str, key: str, title: str, text: str) -> None:
        """Send an alert; never raises (a broken alerter must not stop a check)."""
        self.counters["alerts"] += 1
        full_key = f"{self.name}:{key}"
        logger = log.error if severity == "critical" else log.warning if severity == "warning" else log.info
        logger("%s: ALERT [%s] %s: %s", self.component, severity, title, text)
        if self._alert_sink is None:
            return
        try:
            result = self._alert_sink(severity, full_key, title, text)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            self.counters["alert_failures"] += 1
            log.warning("%s: alert sink failed: %s", self.component, exc)

    async def _pause_venue(self, reason: str) -> None:
        _, control, _ = self._parts()
        self.counters["venue_pauses"] += 1
        try:
            await control.pause_venue(self.name, reason, self._clock.now_ms())
        except StoreError as exc:
            await self._alert("critical", "pause_failed", f"{self.name}: could not pause the venue",
                              f"{reason}; pausing failed: {exc}")
            raise
        await self._alert("critical", "venue_paused", f"{self.name} paused by the fill reconciler", reason)

    # -- poll ----------------------------------------------------------------------------------------

    async def poll_once(self) -> PollOutcome:
        """One poll cycle (see the module docstring). Never raises for venue or Redis trouble:
        the outcome says what failed, and only a clean cycle marks the venue verified."""
        async with self._poll_lock:
            outcome = await self._poll_cycle()
        self.last_poll = outcome
        self.counters["poll_cycles"] += 1
        if outcome.ok:
            self.counters["poll_cycles_ok"] += 1
            self.last_poll_ok_ms = outcome.started_ms
            self.last_errors.pop("poll", None)
        else:
            self.counters["poll_cycles_failed"] += 1
            self.last_errors["poll"] = "; ".join(outcome.errors)[:500]
        return outcome

    async def _poll_cycle(self) -> PollOutcome:
        store, control, rest = self._parts()
        started = self._clock.now_ms()
        errors: list[str] = []
        counts = {"seen": 0, "applied": 0, "duplicate": 0}
        try:
            orders = await store.open_orders(venue=self.name)
            await self._ensure_instruments()
        except TradetreeError as exc:
            await self._heartbeat(started)
            return PollOutcome(started_ms=started, ok=False, errors=(f"start of cycle: {exc}",))
        tracked = [TrackedOrder(order=o) for o in orders]

        inst_ids = sorted(set(self.venue.instruments) | {o.inst_id for o in orders})
        for inst_id in inst_ids:
            try:
                await self._poll_fills(inst_id, tracked, started, counts)
            except TradetreeError as exc:
                errors.append(f"fills {inst_id}: {exc}")

        lookups = await self._lookup_orders(orders)
        errors.extend(f"status {c}: {lk.error}" for c, lk in lookups.items() if lk.kind is LookupKind.FAILED)

        updated: list[str] = []
        untracked: list[str] = []
        decisions: dict[str, str] = {}
        anomalies: dict[str, str] = {}
        try:
            # Snapshots and applied sizes are read again now, after the fills were applied and the
            # venue answered: the WS path may have moved an order forward meanwhile.
            fresh = []
            for o in orders:
                current = await store.get_order(o.client_order_id) or o
                fresh.append(TrackedOrder(order=current, applied_size=await store.applied_size(o.client_order_id)))
            plan = plan_orders(fresh, lookups, now_ms=self._clock.now_ms(),
                               pending_grace_ms=int(self.config.pending_grace_secs * 1000))
            decisions = {c: d.value for c, d in plan.decisions.items()}
            anomalies = dict(plan.anomalies)
            written: dict[str, Order] = {t.client_order_id: t.order for t in fresh}
            failed: set[str] = set()
            for update in plan.updates:
                try:
                    stored = await store.update_order(update)
                except InvalidOrderTransition as exc:
                    # Another writer (the WS path) got there between our read and write; the
                    # next cycle plans from its snapshot. Not untracked this cycle.
                    failed.add(update.client_order_id)
                    log.info("%s: order %s: update lost a race: %s", self.component, update.client_order_id, exc)
                    continue
                except StoreError as exc:
                    failed.add(update.client_order_id)
                    errors.append(f"update {update.client_order_id}: {exc}")
                    continue
                written[update.client_order_id] = stored
                updated.append(update.client_order_id)
                if update.state is OrderState.REJECTED and update.reject_reason == NEVER_REACHED_VENUE:
                    self.counters["orders_rejected_never_reached"] += 1
            for coid in plan.untrack:
                snapshot = written.get(coid)
                # The stored snapshot must be final before the order leaves the polling set.
                if coid in failed or snapshot is None or not snapshot.state.is_terminal:
                    continue
                await store.untrack_order(coid)
                untracked.append(coid)
        except TradetreeError as exc:
            errors.append(f"orders: {exc}")

        self.counters["fills_applied_poll"] += counts["applied"]
        self.counters["fills_duplicate_poll"] += counts["duplicate"]
        self.counters["orders_updated"] += len(updated)
        self.counters["orders_untracked"] += len(untracked)
        # An anomaly is alerted when it appears or changes, not at every cycle it persists.
        fresh_anomalies = {c: p for c, p in anomalies.items() if self._alerted_anomalies.get(c) != p}
        unseen = {c: p for c, p in self._alerted_anomalies.items() if decisions.get(c) == "lookup_failed"}
        self._alerted_anomalies = {**unseen, **anomalies}  # a failed lookup is no all-clear
        self.counters["anomalies"] += len(fresh_anomalies)
        for coid, problem in fresh_anomalies.items():
            await self._alert("warning", f"order_anomaly:{coid}", f"{self.name}: order {coid} needs attention",
                              problem)

        ok = not errors
        if ok:
            try:
                await control.mark_verified(self.name, started)
            except StoreError as exc:
                ok = False
                errors.append(f"mark_verified: {exc}")
        await self._heartbeat(started)
        return PollOutcome(
            started_ms=started, ok=ok, fills_seen=counts["seen"], fills_applied=counts["applied"],
            fills_duplicate=counts["duplicate"], orders_checked=len(orders), orders_updated=tuple(updated),
            untracked=tuple(untracked), decisions=decisions, anomalies=anomalies, errors=tuple(errors),
        )

    async def _heartbeat(self, now_ms: int) -> None:
        store, _, _ = self._parts()
        try:
            await store.heartbeat(self.component, now_ms)
        except StoreError as exc:
            log.warning("%s: heartbeat failed: %s", self.component, exc)

    async def _poll_fills(self, inst_id: str, tracked: list[TrackedOrder], now_ms: int, counts: dict[str, int]) -> None:
        """Fetch the fills of ``inst_id`` since the cursor, apply them, move the cursor.

        Raises a TradetreeError when anything failed (fills stored before the
        failure stay stored; the cursor stops before the first one that was not).
        """
        store, control, rest = self._parts()
        instrument = self._instruments.get(inst_id)
        if instrument is None:
            raise VenueProtocolError(f"instrument {inst_id} is not listed by the venue", venue=self.name)
        raw_cursor = await control.get_cursor(self.name, inst_id)
        cursor_ms = int(raw_cursor["ts_ms"]) if raw_cursor and "ts_ms" in raw_cursor else None
        since = fetch_since_ms(cursor_ms, tracked, inst_id, now_ms=now_ms,
                               overlap_ms=int(self.config.cursor_overlap_secs * 1000))
        planned = plan_poll_fills(self.name, await rest.fetch_fills(inst_id, since_ms=since, layer=FillLayer.POLL))
        counts["seen"] += len(planned)
        stored: set[str] = set()
        first_error: TradetreeError | None = None
        for fill in planned:
            try:
                result = await store.apply_fill(fill, instrument)
            except (StoreError, ValueError) as exc:
                first_error = first_error or StoreError(f"apply {fill.key}: {exc}")
                continue
            stored.add(fill.key)
            counts["applied" if result.applied else "duplicate"] += 1
        new_cursor = advance_cursor(cursor_ms, planned, stored)
        if new_cursor is None and cursor_ms is None:
            # First cycle without fills: start the cursor where this fetch started, so a
            # restart later never re-reads history older than the first cycle.
            new_cursor = since + int(self.config.cursor_overlap_secs * 1000)
        if new_cursor is not None and new_cursor != cursor_ms:
            await control.set_cursor(self.name, inst_id, {"ts_ms": new_cursor, "updated_ms": now_ms})
        if first_error is not None:
            raise first_error

    async def _lookup_orders(self, orders: list[Order]) -> dict[str, OrderLookup]:
        _, _, rest = self._parts()
        gate = asyncio.Semaphore(_LOOKUP_CONCURRENCY)

        async def lookup(order: Order) -> OrderLookup:
            async with gate:
                try:
                    return OrderLookup.found(await rest.fetch_order(order), order.client_order_id)
                except OrderNotFound:
                    return OrderLookup.unknown(order.client_order_id)
                except VenueError as exc:
                    return OrderLookup.failed(order.client_order_id, str(exc))

        results = await asyncio.gather(*(lookup(o) for o in orders))
        return {r.client_order_id: r for r in results}

    # -- fill health ---------------------------------------------------------------------------------

    async def check_fill_health(self) -> list[FillHealthAction]:
        """One fill-health check: evaluate gaps, carry out the actions, sample the WS flow.

        Returns the actions taken. Raises nothing for venue or Redis trouble
        (a failed read is counted and skipped: no evaluation on partial data).
        """
        async with self._health_lock:
            store, control, rest = self._parts()
            self.counters["health_checks"] += 1
            try:
                orders = await store.open_orders(venue=self.name)
                observations = [
                    OrderFillObservation(
                        client_order_id=o.client_order_id, inst_id=o.inst_id, venue_filled=o.filled_size,
                        applied=await store.applied_size(o.client_order_id),
                    )
                    for o in orders
                ]
                layer_counts = await store.fill_layer_counts(self.name)
                open_discrepancies = await control.discrepancies(self.name)
                audit = None if self._ws_flow_seeded else await store.audit_entries(count=_AUDIT_SEED_ENTRIES)
            except StoreError as exc:
                self.counters["health_checks_failed"] += 1
                self.last_errors["fill_health"] = str(exc)
                return []
            now, now_ms = self._clock.monotonic(), self._clock.now_ms()
            self.monitor.observe_layer_counts(layer_counts, now)
            if audit is not None:
                self.monitor.seed_unmatched(self._unmatched_in_audit(audit, now, now_ms), now)
                self._ws_flow_seeded = True
            actions = self.monitor.evaluate(observations, now)
            # A gap this process has not watched from its start may be older (a restart):
            # its discrepancy in Redis says since when.
            for key, info in open_discrepancies.items():
                if key.startswith("fill_gap:") and isinstance(info.get("since_ms"), int):
                    self.monitor.backdate_gap(key.removeprefix("fill_gap:"), now - (now_ms - info["since_ms"]) / 1000)
            by_coid = {o.client_order_id: o for o in orders}
            for action in actions:
                try:
                    await self._carry_out(action, by_coid)
                except TradetreeError as exc:
                    self.last_errors["fill_health"] = f"{action.kind.value} {action.key}: {exc}"
                    log.error("%s: fill-health action %s failed: %s", self.component, action.kind.value, exc)
            try:
                await self._close_stale_gap_discrepancies(observations)
            except StoreError as exc:
                self.last_errors["fill_health"] = f"closing stale discrepancies: {exc}"
                return actions
            self.last_health_ok_ms = self._clock.now_ms()
            self.last_errors.pop("fill_health", None)
            return actions

    def _unmatched_in_audit(self, entries: list[AuditEntry], now: float, now_ms: int) -> list[float]:
        """Monotonic times of this venue's fills applied by poll/health after the last fill the
        WS applied, from the audit stream: the WS-flow evidence a previous incarnation saw."""
        mine = [e for e in entries if e.fill.venue == self.name]
        last_ws = max((e.applied_ms for e in mine if e.fill.layer is FillLayer.WS), default=None)
        return [
            now - (now_ms - e.applied_ms) / 1000
            for e in mine
            if e.fill.layer is not FillLayer.WS and (last_ws is None or e.applied_ms > last_ws)
        ]

    async def _close_stale_gap_discrepancies(self, observations: list[OrderFillObservation]) -> None:
        """Close ``fill_gap:*`` discrepancies whose order has no gap any more.

        The monitor forgets its episodes on a restart, Redis does not: a gap
        that closed while no reconciler ran would otherwise block the venue forever.
        """
        _, control, _ = self._parts()
        gapped = {o.client_order_id for o in observations if o.applied < o.venue_filled}
        for key in await control.discrepancies(self.name):
            if key.startswith("fill_gap:") and key.removeprefix("fill_gap:") not in gapped:
                if await control.close_discrepancy(self.name, key):
                    await self._alert("info", key, f"{self.name}: fill gap closed", f"{key}: no gap any more")

    async def _carry_out(self, action: FillHealthAction, orders: dict[str, Order]) -> None:
        _, control, _ = self._parts()
        now_ms = self._clock.now_ms()
        kind = action.kind
        if kind is FillHealthActionKind.TARGETED_FETCH:
            order = orders.get(action.client_order_id or "")
            if order is not None:
                await self._targeted_fetch(order)
        elif kind is FillHealthActionKind.ALERT:
            if action.key.startswith("fill_gap:"):
                await control.open_discrepancy(self.name, action.key, action.detail, now_ms)
            await self._alert("warning", action.key, f"{self.name}: fill health", action.detail)
        elif kind is FillHealthActionKind.PAUSE_VENUE:
            await self._pause_venue(f"fill health: {action.detail}")
        elif kind is FillHealthActionKind.RESOLVED:
            if await control.close_discrepancy(self.name, action.key):
                await self._alert("info", action.key, f"{self.name}: fill gap closed", action.detail)

    async def _targeted_fetch(self, order: Order) -> None:
        """Fetch the fills of one order over REST and apply them tagged ``health``."""
        store, _, rest = self._parts()
        coid = order.client_order_id
        self.counters["targeted_fetches"] += 1
        try:
            await self._ensure_instruments()
            instrument = self._instruments.get(order.inst_id)
            if instrument is None:
                raise VenueProtocolError(f"instrument {order.inst_id} is not listed", venue=self.name)
            since = max(order.created_ms - int(self.config.cursor_overlap_secs * 1000), 0)
            fills = await rest.fetch_fills(order.inst_id, since_ms=since, layer=FillLayer.HEALTH)
            mine = [
                f.model_copy(update={"layer": FillLayer.HEALTH}) if f.layer is not FillLayer.HEALTH else f
                for f in fills
                if f.venue == self.name and (
                    f.client_order_id == coid
                    or (order.venue_order_id is not None and f.venue_order_id == order.venue_order_id)
                )
            ]
            applied = duplicate = 0
            for fill in sorted(mine, key=lambda f: (f.ts_ms, f.trade_id)):
                result = await store.apply_fill(fill, instrument)
                applied += result.applied
                duplicate += not result.applied
        except (TradetreeError, ValueError) as exc:
            self.counters["targeted_fetch_failures"] += 1
            self.monitor.record_fetch_result(coid, ok=False, detail=f"targeted fetch failed: {exc}")
            log.warning("%s: targeted fetch of %s failed: %s", self.component, coid, exc)
            return
        self.counters["fills_applied_health"] += applied
        self.counters["fills_duplicate_health"] += duplicate
        self.monitor.record_fetch_result(
            coid, ok=True, detail=f"targeted fetch found {len(mine)} fill(s), applied {applied}"
        )

    # -- drift --------------------------------------------------------------------------------------

    async def check_drift(self) -> DriftOutcome:
        """One drift check: venue positions vs Redis; alerts, discrepancy and pause on confirmed drift."""
        async with self._drift_lock:
            outcome = await self._drift_check()
        self.last_drift = outcome
        self.counters["drift_checks"] += 1
        if outcome.ok:
            self.last_drift_ok_ms = outcome.started_ms
            self.last_errors.pop("drift", None)
        else:
            self.counters["drift_checks_failed"] += 1
            self.last_errors["drift"] = outcome.error
        return outcome

    def _reports_positions(self, inst_id: str, venue_positions: dict[str, Decimal]) -> bool:
        instrument = self._instruments.get(inst_id)
        if instrument is not None:
            return instrument.kind is InstrumentKind.SWAP
        return inst_id in venue_positions

    async def _drift_check(self) -> DriftOutcome:
        store, control, rest = self._parts()
        started = self._clock.now_ms()
        try:
            await self._ensure_instruments()
            positions = await store.positions()
            orders = await store.open_orders(venue=self.name)
            flight_rows = [
                (o.inst_id, o.side.sign, o.filled_size, await store.applied_size(o.client_order_id)) for o in orders
            ]
            venue_positions = await rest.fetch_positions()
        except TradetreeError as exc:
            return DriftOutcome(started_ms=started, ok=False, error=str(exc))

        def include(inst_id: str) -> bool:
            return self._reports_positions(inst_id, venue_positions)

        expected = expected_positions(positions, self.name, include=include)
        flight = {k: v for k, v in in_flight_fills(flight_rows).items() if include(k)}
        check = self.detector.check(venue_positions, expected, in_flight=flight)
        error = ""
        try:
            await self._act_on_drift(check)
        except TradetreeError as exc:
            error = f"acting on drift: {exc}"
        self.counters["drift_confirmed"] += len(check.confirmed)
        return DriftOutcome(
            started_ms=started, ok=not error, error=error,
            instruments={
                row.inst_id: {"venue": str(row.venue_qty), "redis": str(row.redis_qty),
                              "in_flight": str(row.in_flight_qty), "drift": str(row.drift)}
                for row in check.instruments
            },
            suspected=check.suspected, confirmed=tuple(r.inst_id for r in check.confirmed),
            drifting=check.drifting, resolved=check.resolved,
        )

    async def _act_on_drift(self, check: DriftCheck) -> None:
        _, control, _ = self._parts()
        now_ms = self._clock.now_ms()
        for row in check.confirmed:
            detail = f"position drift on {self.name} beyond {self.detector.tolerance}: {row.describe()}"
            await control.open_discrepancy(self.name, f"drift:{row.inst_id}", detail, now_ms)
            await self._alert("critical", f"drift:{row.inst_id}", f"{self.name}: position drift", detail)
            await self._pause_venue(detail)
        # Every drift discrepancy of an instrument within tolerance now is closed, including
        # ones opened before a restart (the detector's memory is in-process, Redis's is not).
        beyond = set(check.suspected) | set(check.drifting)
        for key in await control.discrepancies(self.name):
            inst_id = key.removeprefix("drift:")
            if key.startswith("drift:") and inst_id not in beyond:
                if await control.close_discrepancy(self.name, key):
                    await self._alert("info", key, f"{self.name}: position drift resolved",
                                      f"{inst_id}: venue and Redis agree again")

    # -- control API ----------------------------------------------------------------------------------

    async def reconcile_now(self) -> ReconcileReport:
        """One full poll cycle and one drift check, now; report what they changed.

        A single drift check can only *suspect* drift (confirmation takes two
        consecutive checks); the report lists the per-instrument numbers.
        """
        self._parts()
        poll = await self.poll_once()
        drift = await self.check_drift()
        return ReconcileReport(venue=self.name, poll=poll, drift=drift)

    async def check_health(self) -> HealthReport:
        """Probes of the mechanism, not only of this process. Never raises.

        - ``store``: Redis answers.
        - ``rest``: the last poll cycle succeeded and started within 3 poll intervals.
        - ``poll_fresh``: Redis says the venue was verified within 3 poll intervals.
        - ``fills_flowing_ws``: no fill gap older than ``fill_gap_alert_secs`` (nor a
          ``fill_gap:*`` discrepancy open in Redis), and fills applied by poll/health
          recently were also delivered by the WS.
        - ``no_drift``: no confirmed drift (nor a ``drift:*`` discrepancy open in Redis)
          and a drift check completed within 3 drift intervals.

        The Redis parts make a fresh incarnation (after a restart) report what
        its predecessor saw: a restart alone never turns these probes green.
        """
        now_ms = self._clock.now_ms()
        if self.state is not ReconcilerState.RUNNING or self._store is None or self._control is None:
            probe = ProbeResult(name="running", ok=False, detail=f"state {self.state.value}")
            return HealthReport(component=self.component, ts_ms=now_ms, probes=(probe,))
        fresh_ms = int(3 * self.config.poll_interval_secs * 1000)
        probes = []
        try:
            await self._store.ping()
            probes.append(ProbeResult(name="store", ok=True))
        except StoreError as exc:
            probes.append(ProbeResult(name="store", ok=False, detail=str(exc)))

        # Liveness: the timers themselves run. A crashed or stuck poll loop is ours to fix by a
        # restart; a venue that answers badly is not (that is the readiness probes below).
        dead = [t.get_name() for t in self._tasks if t.done()]
        last = self.last_poll
        stuck_ms = int((3 * self.config.poll_interval_secs + 2 * self.venue.http_timeout_secs) * 1000)
        if dead:
            probes.append(ProbeResult(name="timers", ok=False, detail=f"stopped: {', '.join(dead)}"))
        elif last is not None and now_ms - last.started_ms > stuck_ms:
            probes.append(ProbeResult(name="timers", ok=False,
                                      detail=f"no poll cycle started for {now_ms - last.started_ms} ms"))
        else:
            probes.append(ProbeResult(name="timers", ok=True))
        if last is None:
            probes.append(ProbeResult(name="rest", liveness=False, ok=False, detail="no poll cycle yet"))
        elif not last.ok:
            probes.append(ProbeResult(name="rest", liveness=False, ok=False, detail=f"last poll failed: {'; '.join(last.errors)}"[:500]))
        elif now_ms - last.started_ms > fresh_ms:
            probes.append(ProbeResult(name="rest", liveness=False, ok=False,
                                      detail=f"last poll cycle {now_ms - last.started_ms} ms ago"))
        else:
            probes.append(ProbeResult(name="rest", liveness=False, ok=True))

        try:
            verified = await self._control.verified_at(self.name)
            if verified is None:
                probes.append(ProbeResult(name="poll_fresh", liveness=False, ok=False, detail="never verified"))
            else:
                age = now_ms - verified
                probes.append(ProbeResult(name="poll_fresh", liveness=False, ok=age <= fresh_ms,
                                          detail="" if age <= fresh_ms else f"verified {age} ms ago"))
        except StoreError as exc:
            probes.append(ProbeResult(name="poll_fresh", liveness=False, ok=False, detail=str(exc)))

        # Redis remembers what this process may not (it may be a fresh incarnation).
        try:
            open_keys = sorted(await self._control.discrepancies(self.name))
        except StoreError as exc:
            open_keys = [f"unknown ({exc})"]
        mono = self._clock.monotonic()
        overdue = self.monitor.overdue_gaps(mono)
        flow = self.monitor.ws_flow(mono)
        problems = [f"{g.client_order_id}: applied {g.applied} of {g.venue_filled} for {g.age_secs:.0f}s"
                    for g in overdue[:5]]
        watched = {f"fill_gap:{g.client_order_id}" for g in overdue}
        problems += [f"open discrepancy {k}" for k in open_keys
                     if (k.startswith("fill_gap:") and k not in watched) or k.startswith("unknown")]
        if not flow.flowing:
            problems.append(flow.detail)
        if self.last_health_ok_ms is None:
            problems.append("no fill-health check yet")
        probes.append(ProbeResult(name="fills_flowing_ws", liveness=False, ok=not problems, detail="; ".join(problems)))

        drift_fresh_ms = int(3 * self.config.drift_interval_secs * 1000)
        drift_keys = [k for k in open_keys if k.startswith(("drift:", "unknown"))]
        if self.detector.drifting or drift_keys:
            names = sorted(set(self.detector.drifting) | {k.removeprefix("drift:") for k in drift_keys})
            probes.append(ProbeResult(name="no_drift", liveness=False, ok=False, detail=f"drift on {', '.join(names)}"))
        elif self.last_drift_ok_ms is None:
            probes.append(ProbeResult(name="no_drift", liveness=False, ok=False, detail="no drift check yet"))
        elif now_ms - self.last_drift_ok_ms > drift_fresh_ms:
            probes.append(ProbeResult(name="no_drift", liveness=False, ok=False,
                                      detail=f"last drift check {now_ms - self.last_drift_ok_ms} ms ago"))
        else:
            probes.append(ProbeResult(name="no_drift", liveness=False, ok=True))
        return HealthReport(component=self.component, ts_ms=now_ms, probes=tuple(probes))

    def stats(self) -> dict[str, Any]:
        """Counters and the latest outcomes, for the control API and metrics."""
        mono = self._clock.monotonic()
        return {
            "venue": self.name,
            "state": self.state.value,
            "counters": dict(self.counters),
            "gaps": {
                "detected": self.monitor.gaps_detected,
                "open": [g.model_dump(mode="json") for g in self.monitor.gaps(mono)],
                "ws_flow": self.monitor.ws_flow(mono).model_dump(mode="json"),
            },
            "drift": {
                "drifting": list(self.detector.drifting),
                "confirmed_total": self.detector.confirmed_total,
                "last": self.last_drift.model_dump(mode="json") if self.last_drift else None,
            },
            "last_poll": self.last_poll.model_dump(mode="json") if self.last_poll else None,
            "last_poll_ok_ms": self.last_poll_ok_ms,
            "last_errors": dict(self.last_errors),
        }


class RayAlerterSink:
    """Alert sink that calls the named Ray actor's ``alert`` (default ``Alerter``); logs when it is absent."""

    def __init__(self, actor_name: str = "Alerter", *, namespace: str | None = None, timeout_secs: float = 5.0) -> None:
        self.actor_name = actor_name
        self.namespace = namespace
        self.timeout_secs = timeout_secs
        self._handle: Any = None

    async def __call__(self, severity: str, key: str, title: str, text: str) -> None:
        if self._handle is None:
            try:
                self._handle = ray.get_actor(self.actor_name, namespace=self.namespace)
            except ValueError:
                log.info("no %s actor; alert %s logged only", self.actor_name, key)
                return
        try:
            await asyncio.wait_for(self._handle.alert.remote(severity, key, title, text), self.timeout_secs)
        except Exception:
            self._handle = None  # look it up again next time (it may have been restarted)
            raise


class _FillReconcilerShell:
    """Ray shell: builds a ``FillReconciler`` and delegates to it, one line per method.

    ``alerter_name`` (default ``Alerter``; None = log only) is looked up in
    ``ray_namespace`` when an alert is sent.
    """

    def __init__(self, venue: VenueConfig, *, alerter_name: str | None = "Alerter",
                 ray_namespace: str | None = None, **kwargs: Any) -> None:
        sink = RayAlerterSink(alerter_name, namespace=ray_namespace) if alerter_name else None
        self._reconciler = FillReconciler(venue, alert_sink=sink, **kwargs)

    async def start(self) -> None:
        await self._reconciler.start()

    async def stop(self) -> None:
        await self._reconciler.stop()

    async def check_health(self) -> HealthReport:
        return await self._reconciler.check_health()

    async def reconcile_now(self) -> ReconcileReport:
        return await self._reconciler.reconcile_now()

    async def stats(self) -> dict[str, Any]:
        return self._reconciler.stats()


FillReconcilerActor = ray.remote(num_cpus=0, max_restarts=0)(_FillReconcilerShell)
