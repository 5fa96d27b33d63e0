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
- **canary** (when ``execution.canary.canary_active``; checked every
  ``fill_health_interval_secs``): while the venue is paused by the fill-health
  layer, the REST poll is healthy and the kill flag is not set, a net-zero
  market round trip (strategy ``_canary``) every ``canary_interval_secs``
  (doubling while it fails); the fill-health pause is lifted only when the WS
  delivered its fills and the ``fills_flowing_ws`` probe passes.

Venue pauses are held per source in ``ControlState``: the fill-health layer
pauses as ``fill_health``, the drift check as ``drift``; the canary lifts only
``fill_health``. ``release_venue`` (the operator's resume, through the control
API) lifts every source once this reconciler's readiness probes pass.

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
from collections import deque
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, Protocol

import ray
import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field

from tradetree.adapters.okx.reports import VenueOrderReport
from tradetree.adapters.okx.rest import OkxRestClient
from tradetree.core.clock import Clock, WallClock
from tradetree.core.config import VenueConfig, VenueCredentials
from tradetree.core.control_state import PAUSE_SOURCE_DRIFT, PAUSE_SOURCE_FILL_HEALTH, ControlState
from tradetree.core.errors import (
    InvalidOrderTransition,
    OrderNotFound,
    OrderRejected,
    StoreError,
    TradetreeError,
    VenueAuthError,
    VenueError,
    VenueProtocolError,
)
from tradetree.core.store import AuditEntry, RedisStore
from tradetree.core.tasks import cancel_and_wait
from tradetree.core.types import (
    Fill,
    FillLayer,
    HealthReport,
    Instrument,
    InstrumentKind,
    Order,
    OrderIntent,
    OrderState,
    OrderType,
    Position,
    ProbeResult,
    Side,
    new_client_order_id,
)
from tradetree.execution.canary import (
    CANARY_ORDER_PREFIX,
    CANARY_STRATEGY_ID,
    CanaryOutcome,
    CanarySchedule,
    CanaryVerdict,
    canary_active,
    canary_instrument,
    canary_size,
    first_leg_side,
    judge,
    leftover_close,
)
from tradetree.execution.drift import DriftCheck, DriftDetector, expected_positions, in_flight_fills
from tradetree.execution.fill_health import (
    WS_FLOW_KEY,
    FillHealthAction,
    FillHealthActionKind,
    FillHealthMonitor,
    OrderFillObservation,
)
from tradetree.execution.reconciliation import (
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
    "VenueReleaseRefused",
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
_CANARY_STEP_SECS = 0.05  # how often a canary round trip re-reads the venue and Redis while it waits
_CANARY_HISTORY = 20  # canary outcomes kept for stats
_STOP_TIMEOUT_SECS = 5.0  # how long stop() waits for the timers to end


class RestApi(Protocol):
    """The part of ``OkxRestClient`` the reconciler uses (a test can wrap it)."""

    async def load_instruments(self) -> list[Instrument]: ...
    async def create_order(self, order: Order) -> str: ...
    async def fetch_order(self, order: Order) -> VenueOrderReport: ...
    async def fetch_fills(self, inst_id: str, since_ms: int | None = None,
                          layer: FillLayer = FillLayer.POLL) -> list[Fill]: ...
    async def fetch_positions(self) -> dict[str, Decimal]: ...
    async def close(self) -> None: ...


class VenueReleaseRefused(TradetreeError):
    """``release_venue`` refused: a readiness probe of the reconciler fails (named in the message)."""


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
        self._closing = False
        self._poll_lock = asyncio.Lock()
        self._drift_lock = asyncio.Lock()
        self._health_lock = asyncio.Lock()
        self._canary_lock = asyncio.Lock()
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
        self._poll_failures_in_row = 0
        self._poll_failure_alerted = False
        self.canary_enabled = canary_active(cfg, venue)
        self.canary_schedule = CanarySchedule(cfg.canary_interval_secs, cfg.canary_max_interval_secs)
        self.canary_history: deque[CanaryOutcome] = deque(maxlen=_CANARY_HISTORY)
        self.canary_in_flight = False
        self.canary_waiting = ""  # why a due canary did not run (empty: nothing is waiting)
        self.counters: dict[str, int] = {
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
            if self.canary_enabled:
                self._tasks.append(asyncio.create_task(
                    self._every("canary", cfg.fill_health_interval_secs, self.check_canary),
                    name=f"{self.component} canary"))
        except BaseException:
            await self._close()
            self.state = ReconcilerState.STOPPED
            raise
        self.state = ReconcilerState.RUNNING
        log.info("%s: running (poll %.1fs, fill health %.1fs, drift %.1fs, canary %s)", self.component,
                 cfg.poll_interval_secs, cfg.fill_health_interval_secs, cfg.drift_interval_secs,
                 f"every {cfg.canary_interval_secs:g}s while paused" if self.canary_enabled else "off")

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
        self._closing = True
        await cancel_and_wait(self._tasks, timeout_secs=_STOP_TIMEOUT_SECS, owner=self.component)
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
        """Run ``check`` now and then every ``interval_secs``; no failure ends the loop, ``stop()`` does."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        while not self._closing:
            started = loop.time()
            try:
                await check()
            except Exception as exc:  # a check must never take its timer (or another) down
                if self._closing or (task is not None and task.cancelling()):
                    return  # our cancellation, surfacing as a library's error
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

    async def _pause_venue(self, reason: str, source: str) -> None:
        _, control, _ = self._parts()
        self.counters["venue_pauses"] += 1
        try:
            await control.pause_venue(self.name, reason, self._clock.now_ms(), source=source)
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
        await self._alert_on_poll_health(outcome)
        return outcome

    async def _alert_on_poll_health(self, outcome: PollOutcome) -> None:
        """Alert once when ``poll_failure_alert_cycles`` cycles in a row failed, and once when
        a clean cycle follows (the freshness gate refuses orders meanwhile, on its own)."""
        if outcome.ok:
            failed, self._poll_failures_in_row = self._poll_failures_in_row, 0
            if self._poll_failure_alerted:
                self._poll_failure_alerted = False
                await self._alert("info", "poll_failing", f"{self.name}: REST polling recovered",
                                  f"a clean poll cycle after {failed} failed ones; the venue is verified again")
            return
        self._poll_failures_in_row += 1
        if not self._poll_failure_alerted and self._poll_failures_in_row >= self.config.poll_failure_alert_cycles:
            self._poll_failure_alerted = True
            self.counters["poll_failure_alerts"] += 1
            await self._alert(
                "critical", "poll_failing", f"{self.name}: REST polling failing",
                f"{self._poll_failures_in_row} poll cycles in a row failed; positions are no longer verified "
                f"(new orders are refused once verification is stale). Last: {'; '.join(outcome.errors)}"[:1000],
            )

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
            actions = self.monitor.evaluate(observations, now) + self.monitor.check_ws_flow(now)
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
            await self._pause_venue(f"fill health: {action.detail}", PAUSE_SOURCE_FILL_HEALTH)
        elif kind is FillHealthActionKind.RESOLVED:
            if action.key == WS_FLOW_KEY:
                # Not a lift of the pause: only a canary round trip (or an operator) does that.
                await self._alert("info", action.key, f"{self.name}: no fill waits for the WS any more",
                                  action.detail)
            elif await control.close_discrepancy(self.name, action.key):
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
            positions, flight_rows = await self._redis_side(store)
            venue_positions = await rest.fetch_positions()
            # Read again: a fill the venue made while we read it shows up here (see execution.drift).
            positions_after, flight_rows_after = await self._redis_side(store)
        except TradetreeError as exc:
            return DriftOutcome(started_ms=started, ok=False, error=str(exc))

        def include(inst_id: str) -> bool:
            return self._reports_positions(inst_id, venue_positions)

        expected = expected_positions(positions, self.name, include=include)
        flight = {k: v for k, v in in_flight_fills(flight_rows).items() if include(k)}
        after = expected_positions(positions_after, self.name, include=include)
        for inst_id, qty in in_flight_fills(flight_rows_after).items():
            if include(inst_id):
                after[inst_id] = after.get(inst_id, Decimal(0)) + qty
        check = self.detector.check(venue_positions, expected, in_flight=flight, expected_after=after)
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
                              "in_flight": str(row.in_flight_qty), "drift": str(row.unexplained)}
                for row in check.instruments
            },
            suspected=check.suspected, confirmed=tuple(r.inst_id for r in check.confirmed),
            drifting=check.drifting, resolved=check.resolved,
        )

    async def _redis_side(self, store: RedisStore) -> tuple[list[Position], list[tuple[str, int, Decimal, Decimal]]]:
        """Positions, and per tracked order of this venue (inst_id, side sign, venue filled, applied)."""
        positions = await store.positions()
        orders = await store.open_orders(venue=self.name)
        flight_rows = [
            (o.inst_id, o.side.sign, o.filled_size, await store.applied_size(o.client_order_id)) for o in orders
        ]
        return positions, flight_rows

    async def _act_on_drift(self, check: DriftCheck) -> None:
        _, control, _ = self._parts()
        now_ms = self._clock.now_ms()
        for row in check.confirmed:
            detail = f"position drift on {self.name} beyond {self.detector.tolerance}: {row.describe()}"
            await control.open_discrepancy(self.name, f"drift:{row.inst_id}", detail, now_ms)
            await self._alert("critical", f"drift:{row.inst_id}", f"{self.name}: position drift", detail)
            await self._pause_venue(detail, PAUSE_SOURCE_DRIFT)
        # Every drift discrepancy of an instrument within tolerance now is closed, including
        # ones opened before a restart (the detector's memory is in-process, Redis's is not).
        beyond = set(check.suspected) | set(check.drifting)
        for key in await control.discrepancies(self.name):
            inst_id = key.removeprefix("drift:")
            if key.startswith("drift:") and inst_id not in beyond:
                if await control.close_discrepancy(self.name, key):
                    await self._alert("info", key, f"{self.name}: position drift resolved",
                                      f"{inst_id}: venue and Redis agree again")

    # -- canary -----------------------------------------------------------------------------------------

    async def check_canary(self) -> CanaryOutcome | None:
        """One canary tick; returns the outcome of a round trip run now, or None.

        Nothing happens unless the venue holds a ``fill_health`` pause. Then a
        round trip runs once the schedule says it is due, the last poll cycle
        is clean and recent, the kill flag is not set, and no earlier canary
        order is still settling (a ``_canary`` position left by an interrupted
        round trip is closed first, on its own tick). Raises nothing for venue
        or Redis trouble (the outcome, ``canary_waiting`` and the alerts say it).
        """
        async with self._canary_lock:
            store, control, _ = self._parts()
            try:
                pauses = await control.venue_pauses(self.name)
                kill = await store.kill_flag()
            except StoreError as exc:
                self.last_errors["canary"] = f"reading the venue pause: {exc}"
                return None
            now = self._clock.monotonic()
            if PAUSE_SOURCE_FILL_HEALTH not in pauses:
                self.canary_schedule.disarm()
                self.canary_waiting = ""
                return None
            self.canary_schedule.arm(now)
            if not self.canary_schedule.due(now):
                return None
            self.canary_waiting = self._canary_blocker(kill)
            if self.canary_waiting:
                return None
            try:
                self.canary_waiting = await self._settle_earlier_canaries()
            except TradetreeError as exc:
                # Backs off like a failed round trip: a venue refusing the close is not retried every tick.
                self.canary_waiting = f"closing a leftover canary position failed: {exc}"
                self.canary_schedule.record(self._clock.monotonic(), CanaryVerdict.FAILED)
                await self._alert("warning", "canary_failed", f"{self.name}: leftover canary position not closed",
                                  f"{exc}; next attempt in {self.canary_schedule.interval_secs:g}s")
            if self.canary_waiting:
                return None
            self.last_errors.pop("canary", None)
            self.canary_in_flight = True
            try:
                outcome = await self._canary_round_trip()
                outcome = await self._after_canary(outcome)
            finally:
                self.canary_in_flight = False
            self.canary_schedule.record(self._clock.monotonic(), outcome.verdict)
            self.canary_history.append(outcome)
            return outcome

    def _canary_blocker(self, kill_flag: str | None) -> str:
        if kill_flag is not None:
            return f"kill flag set: {kill_flag}"
        last = self.last_poll
        fresh_ms = int(3 * self.config.poll_interval_secs * 1000)
        if last is None or not last.ok or self._clock.now_ms() - last.started_ms > fresh_ms:
            return "the REST poll is not healthy: the canary's fills could not be judged"
        return ""

    async def _settle_earlier_canaries(self) -> str:
        """Why a round trip must wait for earlier canary orders (empty: it need not).

        Every tracked ``_canary`` order must be final with its fills applied;
        then a non-zero ``_canary`` position is a leg left by an interrupted
        round trip, and it is closed now (the round trip runs on a later tick).
        """
        store, _, rest = self._parts()
        for order in await store.open_orders(venue=self.name, strategy_id=CANARY_STRATEGY_ID):
            applied = await store.applied_size(order.client_order_id)
            if not order.state.is_terminal or applied != order.filled_size:
                return f"earlier canary order {order.client_order_id} still settling ({order.state.value})"
        leftovers = [p for p in await store.positions(CANARY_STRATEGY_ID) if p.venue == self.name and p.qty != 0]
        if not leftovers:
            return ""
        await self._ensure_instruments()
        venue_net = await rest.fetch_positions()
        for position in leftovers:
            instrument = self._instruments.get(position.inst_id)
            close = leftover_close(position.qty, venue_net.get(position.inst_id, Decimal(0)))
            if instrument is None or close is None:
                continue
            log.warning("%s: closing a leftover canary position of %s %s", self.component, position.qty,
                        position.inst_id)
            await self._canary_send(instrument, close.side, close.size, reduce_only=close.reduce_only)
            self.counters["canary_leftovers_closed"] += 1
        return "closing a leftover canary position"

    async def _canary_round_trip(self) -> CanaryOutcome:
        """Send the two legs and watch which layer delivers their fills (never raises)."""
        store, _, rest = self._parts()
        loop = asyncio.get_running_loop()
        started = self._clock.now_ms()
        self.counters["canary_runs"] += 1
        legs: list[Order] = []
        filled: list[Decimal] = []
        layers: dict[str, FillLayer] = {}
        ws_delivered = 0
        try:
            await self._ensure_instruments()
            instrument = canary_instrument(self.config, self.venue, self._instruments)
            size = canary_size(self.config, instrument)
        except (TradetreeError, ValueError) as exc:
            return CanaryOutcome(started_ms=started, finished_ms=self._clock.now_ms(),
                                 verdict=CanaryVerdict.FAILED, detail=f"no canary instrument: {exc}")
        side = Side.BUY
        try:
            side = first_leg_side((await rest.fetch_positions()).get(instrument.inst_id, Decimal(0)))
            ws_before = (await store.fill_layer_counts(self.name))[FillLayer.WS.value]["delivered"]
            legs.append(await self._canary_send(instrument, side, size, reduce_only=False))
            filled.append(await self._canary_wait_filled(legs[0], loop.time() + self.config.canary_deadline_secs))
            if filled[0] == 0:
                raise VenueError(f"the first leg {legs[0].client_order_id} did not fill within "
                                 f"{self.config.canary_deadline_secs:g}s", venue=self.name)
            legs.append(await self._canary_send(instrument, side.opposite, filled[0], reduce_only=True))
            watch_until = loop.time() + self.config.canary_deadline_secs
            filled.append(await self._canary_wait_filled(legs[1], watch_until))
            while True:
                layers, all_applied = await self._canary_fills(legs, filled)
                ws_delivered = (await store.fill_layer_counts(self.name))[FillLayer.WS.value]["delivered"] - ws_before
                verdict = judge(len(layers), layers, ws_delivered, all_applied=all_applied)
                if verdict is CanaryVerdict.WS or loop.time() >= watch_until:
                    break
                await asyncio.sleep(_CANARY_STEP_SECS)
            detail = (f"{len(layers)} canary fill(s) applied by "
                      f"{', '.join(sorted({layer.value for layer in layers.values()})) or 'no layer'}; "
                      f"the WS delivered {ws_delivered} fill(s) meanwhile")
        except TradetreeError as exc:
            verdict, detail = CanaryVerdict.FAILED, f"{type(exc).__name__}: {exc}"
        return CanaryOutcome(
            started_ms=started, finished_ms=self._clock.now_ms(), inst_id=instrument.inst_id, size=size,
            first_side=side, client_order_ids=tuple(o.client_order_id for o in legs), venue_filled=tuple(filled),
            trade_layers=layers, ws_delivered=ws_delivered, verdict=verdict, detail=detail,
        )

    async def _canary_send(self, instrument: Instrument, side: Side, size: Decimal, *, reduce_only: bool) -> Order:
        """Record a ``_canary`` market order in Redis, then send it through our own REST client.

        Raises:
            StoreError: it could not be recorded (nothing was sent).
            OrderRejected: the venue refused it (recorded REJECTED).
            VenueError: the outcome is unknown (it stays tracked; the poller settles it).
        """
        store, _, rest = self._parts()
        intent = OrderIntent(strategy_id=CANARY_STRATEGY_ID, venue=self.name, inst_id=instrument.inst_id, side=side,
                             type=OrderType.MARKET, size=size, reduce_only=reduce_only, reason="canary round trip")
        order = Order.from_intent(intent, now_ms=self._clock.now_ms(),
                                  client_order_id=new_client_order_id(CANARY_ORDER_PREFIX))
        if not await store.record_order(order):
            raise StoreError(f"canary order id {order.client_order_id} is already recorded")
        self.counters["canary_orders_sent"] += 1
        try:
            venue_order_id = await rest.create_order(order)
        except OrderRejected as exc:
            with contextlib.suppress(TradetreeError):
                await store.update_order(order.transition(
                    OrderState.REJECTED, now_ms=max(self._clock.now_ms(), order.updated_ms), reject_reason=str(exc)))
            raise
        current = await store.get_order(order.client_order_id) or order
        stamp = max(self._clock.now_ms(), current.updated_ms)
        if current.state is OrderState.PENDING_NEW:
            acked = current.transition(OrderState.LIVE, now_ms=stamp, venue_order_id=venue_order_id)
        elif current.venue_order_id is None:  # the WS got there first, without the id
            acked = current.model_copy(update={"venue_order_id": venue_order_id, "updated_ms": stamp})
        else:
            return current
        try:
            return await store.update_order(acked)
        except InvalidOrderTransition:  # the WS moved it on meanwhile
            return await store.get_order(order.client_order_id) or current

    async def _canary_wait_filled(self, order: Order, until: float) -> Decimal:
        """The venue's filled size of ``order`` once it is final, or what it is at ``until`` (loop time)."""
        _, _, rest = self._parts()
        loop = asyncio.get_running_loop()
        filled = Decimal(0)
        while True:
            try:
                report = await rest.fetch_order(order)
                filled = report.filled_size
                if report.state.is_terminal:
                    return filled
            except VenueError as exc:  # not known yet, or a hiccup: ask again until the deadline
                log.info("%s: canary order %s: %s", self.component, order.client_order_id, exc)
            if loop.time() >= until:
                return filled
            await asyncio.sleep(_CANARY_STEP_SECS)

    async def _canary_fills(self, legs: list[Order], filled: list[Decimal]) -> tuple[dict[str, FillLayer], bool]:
        """The layer that applied each canary trade, and whether every leg's fills add up."""
        store, _, _ = self._parts()
        layers: dict[str, FillLayer] = {}
        complete = True
        for order, venue_filled in zip(legs, filled):
            for fill in await store.fills_for_order(order.client_order_id):
                layers[fill.trade_id] = fill.layer
            complete = complete and await store.applied_size(order.client_order_id) == venue_filled
        return layers, complete

    async def _after_canary(self, outcome: CanaryOutcome) -> CanaryOutcome:
        """Count, alert, and lift the fill-health pause when the WS delivered and the probe passes."""
        _, control, _ = self._parts()
        self.counters[f"canary_{outcome.verdict.value}"] += 1
        ids = ", ".join(outcome.client_order_ids) or "none sent"
        if outcome.verdict is CanaryVerdict.WS:
            await self.check_fill_health()  # let the monitor see the WS deliveries now
            problems = self._fills_flowing_problems(await self._open_discrepancy_keys())
            if not problems:
                try:
                    lifted = await control.resume_venue(self.name, PAUSE_SOURCE_FILL_HEALTH)
                except StoreError as exc:
                    problems = [f"lifting the pause failed: {exc}"]
                else:
                    self.counters["venue_resumes"] += bool(lifted)
                    await self._alert("info", "venue_resumed", f"{self.name}: fill-health pause lifted",
                                      f"canary round trip ({ids}): {outcome.detail}; fills arrive on the WS again")
                    return outcome.model_copy(update={"resumed": True})
            await self._alert("warning", "canary_failed",
                              f"{self.name}: canary fills arrived on the WS, venue stays paused",
                              f"canary round trip ({ids}): {outcome.detail}; fills_flowing_ws still failing: "
                              f"{'; '.join(problems)}"[:1000])
            return outcome
        next_secs = min(self.canary_schedule.interval_secs * 2, self.canary_schedule.max_interval_secs)
        # A key of its own, apart from the lift's: the alerter de-duplicates by key.
        await self._alert("warning", "canary_failed",
                          f"{self.name}: canary round trip {outcome.verdict.value}, venue stays paused",
                          f"canary round trip ({ids}): {outcome.detail}; next one in {next_secs:g}s")
        return outcome

    async def release_venue(self) -> list[str]:
        """The operator's resume of the venue: lift every pause source, once this reconciler's
        own probes pass. Returns the sources lifted (empty: it was not paused).

        Raises:
            VenueReleaseRefused: a probe fails (named in the message); nothing was lifted.
            StoreError: Redis failed.
        """
        _, control, _ = self._parts()
        failing = (await self.check_health()).failing()
        if failing:
            raise VenueReleaseRefused(
                f"{self.component}: venue pause kept, probes failing: "
                + "; ".join(f"{p.name}: {p.detail}" for p in failing)
            )
        lifted = await control.resume_venue(self.name)
        self.canary_schedule.disarm()
        if lifted:
            self.counters["venue_resumes"] += 1
            await self._alert("info", "venue_released", f"{self.name}: venue pause lifted by an operator",
                              f"sources lifted: {', '.join(lifted)}")
        return lifted

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

        open_keys = await self._open_discrepancy_keys()
        problems = self._fills_flowing_problems(open_keys)
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

    async def _open_discrepancy_keys(self) -> list[str]:
        """Redis remembers what this process may not (it may be a fresh incarnation)."""
        assert self._control is not None
        try:
            return sorted(await self._control.discrepancies(self.name))
        except StoreError as exc:
            return [f"unknown ({exc})"]

    def _fills_flowing_problems(self, open_keys: list[str]) -> list[str]:
        """Why the ``fills_flowing_ws`` probe fails (empty: it passes)."""
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
        return problems

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
            "canary": {
                "enabled": self.canary_enabled,
                "in_flight": self.canary_in_flight,
                "waiting": self.canary_waiting,
                "armed": self.canary_schedule.armed,
                "interval_secs": self.canary_schedule.interval_secs,
                "failures_in_row": self.canary_schedule.failures_in_row,
                "due_in_secs": (None if self.canary_schedule.next_at is None
                                else max(0.0, self.canary_schedule.next_at - mono)),
                "history": [o.model_dump(mode="json") for o in self.canary_history],
            },
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

    async def release_venue(self) -> list[str]:
        return await self._reconciler.release_venue()

    async def stats(self) -> dict[str, Any]:
        return self._reconciler.stats()


FillReconcilerActor = ray.remote(num_cpus=0, max_restarts=0)(_FillReconcilerShell)
