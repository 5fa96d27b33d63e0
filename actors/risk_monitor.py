"""RiskMonitor: breakers from what Redis says, independent of the strategies.

It never asks a strategy how it is doing. On its own timer it reads

- the order events stream ``{namespace}:order_events`` (one entry per order
  write, field ``order`` = ``Order.model_dump_json()``), from a cursor kept
  in Redis: consecutive venue rejections per strategy;
- every position: unintended flips, daily loss, position and notional limits.

When a rule trips it opens the breaker in ``ControlState`` (the freshness
gate refuses orders while it is open), sets the strategy PAUSED in Redis
(only from RUNNING: a WINDING_DOWN or KILLED strategy keeps its state), asks
the strategy's actor to pause (tolerating it being dead), and sends **one**
alert: alerts go out only when a breaker is newly opened, so an event storm,
a re-trip or a restarted monitor does not repeat them.

Lose nothing: the event cursor is persisted together with the rule state
only once the trips from those events are applied; a monitor that dies in
between re-reads the same events from the same state and trips again
(opening an open breaker is a no-op). Alerts that cannot be delivered stay
in an outbox and are retried each loop.

An operator clears a breaker with ``clear_breaker``; that re-arms the rule,
it does not resume any strategy (resuming is a separate, deliberate act).

Each loop also looks at the root supervisor's heartbeat: when it goes stale
(or vanishes, once one was seen: ``risk.RootLatch``) one critical alert says
the tree is unsupervised, and one info alert says when a root heartbeats
again (``risk.root_alarm_step`` decides; the gates refuse the new risk by
themselves). Its age is in ``stats()`` and ``snapshot()``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from decimal import Decimal
from typing import Any, Protocol

import ray
import redis.asyncio as aioredis

from tradetree.actors.alerter import AlerterClient
from tradetree.actors.kill_switch import KillSwitch
from tradetree.actors.kill_switch_ray import RayVenuePort
from tradetree.core import (
    ALERTER_ID,
    ROOT_HEARTBEAT_KEY,
    Clock,
    ComponentState,
    ControlState,
    HealthReport,
    Order,
    Position,
    ProbeResult,
    RedisKeys,
    RedisStore,
    Refused,
    StoreError,
    StrategyState,
    TradetreeError,
    WallClock,
    as_text,
    marks_view,
    open_redis_client,
    read_book,
    redis_call,
    valued_positions,
)
from tradetree.risk import (
    ExposureMonitor,
    FlipDetector,
    KillState,
    KillSwitchConfig,
    LossMonitor,
    RejectionStreak,
    RiskConfig,
    RootAlarm,
    RootLatch,
    Trip,
    UnreadableOrderEvent,
    batch_caught_up,
    breaker_alert,
    candidate_baselines,
    daily_pnl_by_strategy,
    loop_fresh_probe,
    loss_limits_set,
    needs_strategy_states,
    parse_heartbeat_ms,
    parse_order_event,
    pause_reason,
    pause_targets,
    paused_summary,
    rejection_streak_of,
    root_alarm_step,
    root_heartbeat_age_secs,
    should_persist_cursor,
    unreadable_states,
    utc_day,
)
from tradetree.supervisor import ActorClient

__all__ = [
    "COMPONENT",
    "AlertSink",
    "StrategyPauser",
    "RayStrategyPauser",
    "RiskMonitor",
    "RiskMonitorActor",
]

log = logging.getLogger(__name__)

COMPONENT = "risk_monitor"
ALERT_SEVERITY = "critical"
_MAX_BATCHES_PER_LOOP = 20  # bounds one loop; the rest is read on the next tick
# The monitor's calls to the alerter and to strategies: short, because a loop waits on them.
_CALL_TIMEOUT_SECS = 5.0


class AlertSink(Protocol):
    """Where alerts go (the Alerter actor in production).

    Raises whatever it likes when the alert was not delivered: the monitor
    keeps it and tries again on the next loop.
    """

    async def alert(self, severity: str, key: str, title: str, text: str) -> None: ...


class StrategyPauser(Protocol):
    """Tells a running strategy to pause. True when it was told; never raises."""

    async def pause(self, strategy_id: str, reason: str) -> bool: ...



class RayStrategyPauser:
    """Calls ``pause(reason)`` on the strategy actor named after the strategy id, through ``ActorClient``."""

    def __init__(self, ray_namespace: str | None = None, timeout_secs: float = _CALL_TIMEOUT_SECS, *,
                 client: ActorClient | None = None) -> None:
        self.ray_namespace = ray_namespace
        self.timeout_secs = timeout_secs
        self._client = client or ActorClient(ray_namespace, timeout_secs=timeout_secs)

    async def pause(self, strategy_id: str, reason: str) -> bool:
        try:
            await self._client.call(strategy_id, "pause", reason)
            return True
        except TradetreeError as exc:
            # Dead, restarting or never started: the Redis state and the breaker
            # already stop it; its supervisor brings it back PAUSED.
            log.warning("could not pause strategy actor %s: %s", strategy_id, exc)
            return False


class RiskMonitor:
    """Plain logic of the risk monitor (testable without Ray).

    ``client`` may be given (tests, fakeredis); it then stays the caller's to
    close. Otherwise ``start()`` connects to ``redis_url``.
    """

    def __init__(
        self,
        cfg: RiskConfig,
        *,
        namespace: str,
        alerts: AlertSink,
        pauser: StrategyPauser | None = None,
        redis_url: str | None = None,
        client: aioredis.Redis | None = None,
        clock: Clock | None = None,
        socket_timeout_secs: float = 2.0,
    ) -> None:
        if client is None and redis_url is None:
            raise ValueError("RiskMonitor needs redis_url or client")
        self.cfg = cfg
        self.namespace = namespace
        self.keys = RedisKeys(namespace)
        self.alerts = alerts
        self.pauser = pauser
        self.redis_url = redis_url
        self.clock: Clock = clock or WallClock()
        self.socket_timeout_secs = socket_timeout_secs
        self._client = client
        self._owns_client = client is None
        self.store: RedisStore | None = None
        self.control: ControlState | None = None
        self._lifecycle = ComponentState.NEW
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()

        self.streak = RejectionStreak(cfg.rejection_streak_limit)
        self.flips = FlipDetector(int(cfg.flip_order_window_secs * 1000))
        self.losses = LossMonitor(cfg.max_daily_loss_per_strategy, cfg.max_daily_loss_global)
        self.exposure = ExposureMonitor(cfg)

        self._loaded = False
        self._cursor = "0-0"  # read position in the stream (in memory)
        self._persisted_cursor = "0-0"
        self._pending_trips: list[list] = []  # [trip, breaker newly opened by us]
        self._outbox: deque[tuple[str, str, str, str]] = deque()
        self._last_ok_mono: float | None = None
        # The root's heartbeat as last read (None: none, or not read yet) and the alarm on it.
        self._root_latch = RootLatch()
        self._root_alarm = RootAlarm()
        self._root_heartbeat_ms: int | None = None
        self._root_read_ms: int | None = None
        self._stats: dict[str, Any] = {
            "loops": 0, "loop_errors": 0, "events_read": 0, "bad_events": 0, "trips": 0,
            "breakers_opened": 0, "alerts_sent": 0, "alerts_dropped": 0, "pauses": 0,
            "last_error": "", "last_loop_ms": 0,
        }

    # -- keys ------------------------------------------------------------------

    @property
    def _cursor_key(self) -> str:
        return self.keys.risk_cursor

    @property
    def _streaks_key(self) -> str:
        return self.keys.risk_streaks

    # -- lifecycle ---------------------------------------------------------------

    async def _connect(self) -> None:
        """Open the client (unless one was given) and build the store and control views.

        Raises:
            StoreUnavailable: Redis does not answer.
        """
        if self._client is None:
            assert self.redis_url is not None
            client = open_redis_client(self.redis_url, socket_timeout_secs=self.socket_timeout_secs)
            try:
                await self._redis(client.ping())
            except StoreError:
                await client.aclose()
                raise
            self._client = client
        if self.store is None:
            self.store = RedisStore(self._client, self.namespace)
        if self.control is None:
            self.control = ControlState(self._client, self.namespace)

    async def _redis(self, coro):
        return await redis_call(coro)

    async def _load_state(self) -> None:
        """Take up the persisted cursor and rejection streaks (once)."""
        assert self._client is not None
        cursor, streaks = await self._redis(self._client.mget([self._cursor_key, self._streaks_key]))
        if cursor is not None:
            self._cursor = self._persisted_cursor = as_text(cursor)
        if streaks is not None:
            try:
                self.streak.restore(json.loads(as_text(streaks)))
            except (ValueError, TypeError, AttributeError) as exc:
                # Garbled: start the streaks over rather than never load (and never host the kill switch).
                self.streak.restore({})
                log.error("risk monitor: saved rejection streaks unreadable, reset: %s: %s", type(exc).__name__, exc)
                self._queue_alert(key="risk_monitor:streaks_reset", title="Rejection streaks reset",
                                  text=f"the saved rejection streaks were unreadable and were reset: {exc}")
        self._loaded = True

    async def start(self) -> None:
        """Connect, take up the persisted state and start the timer. No-op when running.

        Raises:
            StoreUnavailable: Redis does not answer.
            RuntimeError: the monitor was stopped (create a new one to start again).
        """
        if self._lifecycle is ComponentState.RUNNING:
            return
        if self._lifecycle is ComponentState.STOPPED:
            raise RuntimeError("a stopped RiskMonitor cannot be started again; create a new one")
        await self._connect()
        if not self._loaded:
            await self._load_state()
        self._lifecycle = ComponentState.RUNNING
        self._task = asyncio.create_task(self._timer(), name="risk-monitor-loop")

    async def stop(self) -> None:
        """Stop the timer and close the connection it opened. Idempotent."""
        if self._lifecycle is ComponentState.STOPPED:
            return
        self._lifecycle = ComponentState.STOPPED
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _timer(self) -> None:
        while True:
            await self.run_once()
            await asyncio.sleep(self.cfg.loop_interval_secs)

    # -- one loop ----------------------------------------------------------------

    async def run_once(self) -> list[Trip]:
        """One pass: order events, positions, trips, alerts, heartbeat. Returns the new trips.

        Never raises (cancellation aside): each stage has its own error
        handling, and a failed stage is retried on the next loop. A stopped
        monitor does nothing.
        """
        async with self._lock:
            if self._lifecycle is ComponentState.STOPPED:
                return []
            now_ms = self.clock.now_ms()
            self._stats["loops"] += 1
            errors: list[str] = []
            trips: list[Trip] = []

            async def guarded(name: str, coro):
                try:
                    return await coro
                except Exception as exc:
                    errors.append(f"{name}: {type(exc).__name__}: {exc}")
                    if not isinstance(exc, StoreError):
                        log.exception("risk monitor stage %s failed", name)
                    return None

            await guarded("load", self._stage_load())
            if self._loaded:  # without the cursor and streaks, reading events would double count
                # Positions first, events second: every order behind the positions read
                # was recorded (and its event written) before its fills were applied, so
                # the events read next include every order that can explain them.
                positions = await guarded("positions", self._read_positions())
                caught_up = await guarded("order events", self._stage_events(trips))
                if positions is not None:
                    await guarded("position rules",
                                  self._stage_positions(positions, trips, now_ms, flips=bool(caught_up)))
            self._stats["trips"] += len(trips)
            self._pending_trips.extend([t, False] for t in trips)
            try:
                await self._apply_pending(now_ms)
                await self._persist_cursor()
            except Exception as exc:
                errors.append(f"apply: {type(exc).__name__}: {exc}")
                if not isinstance(exc, StoreError):
                    log.exception("risk monitor could not apply trips")
            await guarded("root heartbeat", self._stage_root(now_ms))
            await self._flush_alerts()
            if self.store is not None:
                try:
                    await self.store.heartbeat(COMPONENT, now_ms)
                except StoreError as exc:
                    errors.append(f"heartbeat: {exc}")
            self._stats["last_loop_ms"] = now_ms
            if errors:
                self._stats["loop_errors"] += 1
                self._stats["last_error"] = "; ".join(errors)
                log.warning("risk monitor loop: %s", self._stats["last_error"])
            else:
                self._stats["last_error"] = ""
                self._last_ok_mono = self.clock.monotonic()
            return trips

    async def _stage_root(self, now_ms: int) -> None:
        """Read the root supervisor's heartbeat and alert (once) when the tree goes unsupervised or
        is supervised again. A failed read decides nothing: the loop's error says Redis is down."""
        if self.store is None:
            return
        raw = await self.store.heartbeat_text(ROOT_HEARTBEAT_KEY)
        self._root_heartbeat_ms, self._root_read_ms = parse_heartbeat_ms(raw), now_ms
        armed = self._root_latch.observe(raw is not None)
        self._root_alarm, alert = root_alarm_step(self._root_alarm, self._root_heartbeat_ms, now_ms, armed=armed)
        if alert is not None:
            (log.error if alert.severity == "critical" else log.warning)("risk monitor: %s", alert.text)
            self._queue_alert(key=alert.key, title=alert.title, text=alert.text, severity=alert.severity)

    def root_heartbeat_age_secs(self) -> float | None:
        """Age of the root's heartbeat at the last loop's read (None: none recorded, or not read)."""
        if self._root_read_ms is None:
            return None
        return root_heartbeat_age_secs(self._root_heartbeat_ms, self._root_read_ms)

    async def _stage_load(self) -> None:
        if self.control is None:
            await self._connect()
        if not self._loaded:
            await self._load_state()

    async def _stage_events(self, trips: list[Trip]) -> bool:
        """Read new order events into the rules, adding trips; True when the stream was read to its end."""
        assert self._client is not None
        stream = self.keys.order_events
        for _ in range(_MAX_BATCHES_PER_LOOP):
            reply = await self._redis(
                self._client.xread({stream: self._cursor}, count=self.cfg.order_events_batch)
            )
            entries = reply[0][1] if reply else []
            for entry_id, fields in entries:
                self._stats["events_read"] += 1
                order = self._parse_event(as_text(entry_id), fields)
                if order is not None:
                    trip = self.streak.on_order(order)
                    if trip is not None:
                        trips.append(trip)
                    self.flips.on_order(order)
                self._cursor = as_text(entry_id)
            if batch_caught_up(len(entries), self.cfg.order_events_batch):
                return True
        return False

    def _parse_event(self, entry_id: str, fields: dict[Any, Any]) -> Order | None:
        try:
            return parse_order_event(fields)
        except UnreadableOrderEvent as exc:
            self._stats["bad_events"] += 1
            log.error("order event %s unreadable, skipped: %s", entry_id, exc)
            return None

    async def _read_positions(self) -> list[Position]:
        assert self.store is not None
        return await self.store.positions()

    async def _stage_positions(self, positions: list[Position], trips: list[Trip], now_ms: int,
                               *, flips: bool) -> None:
        """Position rules, adding trips. ``flips=False`` (events not read up to date)
        defers flip detection to the next loop rather than judge without the orders."""
        if flips:
            # Orders are stamped on our clock, positions on the venue's: judge the window on ours.
            trips.extend(t for t in (self.flips.on_position(p, now_ms) for p in positions) if t is not None)
        trips.extend(self.exposure.update(positions))
        if loss_limits_set(self.cfg):
            baselines = await self._day_baselines(positions, now_ms)
            trips.extend(self.losses.update(daily_pnl_by_strategy(positions, baselines)))

    async def _day_baselines(self, positions: list[Position], now_ms: int) -> dict[str, Decimal]:
        """Each position's net P&L at its first observation today (UTC), kept in Redis
        (shared with the strategy hosts' pre-trade loss check: ``risk.day_pnl``)."""
        assert self.store is not None
        return await self.store.day_pnl_baselines(utc_day(now_ms), candidate_baselines(positions))

    # -- applying trips --------------------------------------------------------------

    async def _apply_pending(self, now_ms: int) -> None:
        """Apply every pending trip in order; a failure leaves it and the rest pending."""
        while self._pending_trips:
            assert self.control is not None  # trips only come from loops that reached Redis
            entry = self._pending_trips[0]
            trip: Trip = entry[0]
            # Remember that we opened it: if pausing fails now, the retry must still alert.
            entry[1] = await self.control.set_breaker(trip.breaker, trip.reason, now_ms) or entry[1]
            paused = await self._pause_for(trip)
            self._pending_trips.pop(0)
            if entry[1]:
                self._stats["breakers_opened"] += 1
                log.error("breaker %s opened: %s (paused: %s)", trip.breaker, trip.reason, paused_summary(paused))
                key, title, text = breaker_alert(trip, paused)
                self._queue_alert(key=key, title=title, text=text)

    async def _pause_for(self, trip: Trip) -> list[str]:
        """Set the trip's strategies PAUSED (if RUNNING) and tell their actors; returns those paused."""
        assert self.store is not None
        # The states are read only when a global trip needs them; leniently, so that one
        # garbled entry does not keep every other strategy running (it is alerted on instead).
        states = await self.store.strategy_states(strict=False) if needs_strategy_states(trip) else {}
        bad = unreadable_states(states)
        if bad:
            listed = ", ".join(f"{sid} {text!r}" for sid, text in sorted(bad.items()))
            log.error("unreadable strategy states (not paused by %s): %s", trip.breaker, listed)
            self._queue_alert(key=f"{trip.breaker}:unreadable_states", title="Unreadable strategy states",
                              text=f"{trip.breaker} could not pause strategies whose stored state is unreadable: "
                                   f"{listed}")
        paused = []
        targets = pause_targets(trip, states)
        for sid in targets:
            # Only from RUNNING: a kill switch's WINDING_DOWN written meanwhile is never overwritten.
            if await self.store.transition_strategy_state(sid, {StrategyState.RUNNING}, StrategyState.PAUSED):
                paused.append(sid)
                self._stats["pauses"] += 1
        if self.pauser is not None and targets:
            # Redis already stops them; telling the actors is best effort, all at once and bounded
            # as a whole, so hung strategy actors cannot hold this loop (and the kill switch's host).
            reason = pause_reason(trip)
            try:
                answers = await asyncio.wait_for(
                    asyncio.gather(*(self.pauser.pause(sid, reason) for sid in targets), return_exceptions=True),
                    timeout=_CALL_TIMEOUT_SECS)
                for sid, answer in zip(targets, answers, strict=True):
                    if isinstance(answer, Exception):
                        log.warning("could not pause strategy actor %s: %s: %s", sid, type(answer).__name__, answer)
            except TimeoutError:
                log.warning("strategy actors not all told to pause within %gs: %s", _CALL_TIMEOUT_SECS,
                            ", ".join(targets))
        return paused

    async def _persist_cursor(self) -> None:
        """Persist cursor and streaks together, once nothing read before the cursor is pending."""
        if not should_persist_cursor(pending_trips=len(self._pending_trips), cursor=self._cursor,
                                     persisted_cursor=self._persisted_cursor):
            return
        assert self._client is not None
        pipe = self._client.pipeline(transaction=True)
        pipe.set(self._cursor_key, self._cursor)
        pipe.set(self._streaks_key, json.dumps(self.streak.snapshot(), sort_keys=True))
        await self._redis(pipe.execute())
        self._persisted_cursor = self._cursor

    # -- alerts ----------------------------------------------------------------------

    def _queue_alert(self, *, key: str, title: str, text: str, severity: str = ALERT_SEVERITY) -> None:
        if len(self._outbox) >= self.cfg.alert_outbox_max:
            dropped = self._outbox.popleft()
            self._stats["alerts_dropped"] += 1
            log.error("alert outbox full, dropped: %s: %s", dropped[2], dropped[3])
        self._outbox.append((severity, key, title, text))

    async def _flush_alerts(self) -> None:
        while self._outbox:
            severity, key, title, text = self._outbox[0]
            try:
                await self.alerts.alert(severity, key, title, text)
            except Exception as exc:
                log.warning("alert %s not delivered (will retry): %s: %s", key, type(exc).__name__, exc)
                return
            self._outbox.popleft()
            self._stats["alerts_sent"] += 1

    # -- operator and supervisor API ---------------------------------------------------

    async def breakers(self) -> dict[str, dict[str, Any]]:
        """Open breakers: name -> {reason, since_ms}.

        Raises:
            StoreUnavailable: Redis does not answer.
        """
        if self.control is None:
            await self._connect()
        assert self.control is not None
        return await self.control.breakers()

    async def clear_breaker(self, name: str) -> bool:
        """Operator action: close breaker ``name`` and re-arm the rule that opened it.

        Strategies it paused stay PAUSED. Returns True if it was open. If the
        condition still holds, the rule trips again on the next loop.

        Raises:
            StoreUnavailable: Redis does not answer.
        """
        if self.control is None:
            await self._connect()
        assert self.control is not None
        async with self._lock:
            was_open = await self.control.clear_breaker(name)
            streak_of = rejection_streak_of(name)
            if streak_of is not None:
                self.streak.rearm(streak_of)
            self.losses.rearm(name)
            self.exposure.rearm(name)
            log.warning("breaker %s cleared by operator (was open: %s)", name, was_open)
            return was_open

    async def check_health(self) -> HealthReport:
        """Probes: ``store`` (Redis answers) and ``loop_fresh`` (a full loop completed recently)."""
        probes = []
        try:
            if self._client is None:
                raise StoreError("not started")
            await self._redis(self._client.ping())
            probes.append(ProbeResult(name="store", ok=True))
        except StoreError as exc:
            probes.append(ProbeResult(name="store", ok=False, detail=str(exc)))
        age = None if self._last_ok_mono is None else self.clock.monotonic() - self._last_ok_mono
        probes.append(loop_fresh_probe(age, self.cfg, self._stats["last_error"]))
        return HealthReport(component=COMPONENT, ts_ms=self.clock.now_ms(), probes=tuple(probes))

    def stats(self) -> dict[str, Any]:
        return {
            **self._stats,
            "lifecycle": self._lifecycle.value,
            "cursor": self._cursor,
            "persisted_cursor": self._persisted_cursor,
            "pending_trips": len(self._pending_trips),
            "alerts_pending": len(self._outbox),
            "rejection_streaks": self.streak.snapshot(),
            "root_heartbeat_age_secs": self.root_heartbeat_age_secs(),
            "tree_unsupervised_since_ms": self._root_alarm.since_ms,
        }


@ray.remote(num_cpus=0)
class RiskMonitorActor:
    """Ray shell around ``RiskMonitor`` and the ``KillSwitch`` it hosts.

    Name, namespace and max_restarts come from the caller. Alerts go to the
    actor named ``alerter_name``; strategies are paused through their actors,
    named after their ids, in ``ray_namespace``; wind-down orders go to the
    gateways named in ``gateways`` (venue -> actor name). At start, and then
    every ``kill_resume_interval_secs``, an unfinished kill recorded in Redis
    is resumed, so a kill survives this actor's restart.
    """

    def __init__(self, cfg: RiskConfig, *, redis_url: str, namespace: str,
                 ray_namespace: str | None = None, alerter_name: str = ALERTER_ID,
                 kill_switch: KillSwitchConfig | None = None, gateways: dict[str, str] | None = None,
                 kill_resume_interval_secs: float = 5.0) -> None:
        self._namespace = namespace
        self._ray_namespace = ray_namespace
        self._pauser = RayStrategyPauser(ray_namespace)
        self._monitor = RiskMonitor(
            cfg, namespace=namespace, redis_url=redis_url,
            alerts=AlerterClient(alerter_name, ray_namespace, timeout_secs=_CALL_TIMEOUT_SECS),
            pauser=self._pauser,
        )
        self._kill_cfg = kill_switch
        self._gateways = dict(gateways or {})
        self._kill_resume_interval_secs = kill_resume_interval_secs
        self._kill_switch: KillSwitch | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        try:
            await self._monitor.start()
        finally:
            # The kill switch does not depend on the monitor's rules: it runs once Redis is reached,
            # even when the monitor's own start failed.
            self._start_kill_switch()

    def _start_kill_switch(self) -> None:
        if self._kill_cfg is not None and self._kill_switch is None and self._monitor.store is not None:
            self._kill_switch = KillSwitch(
                self._monitor.store, self._monitor.store,
                RayVenuePort(self._gateways, ray_namespace=self._ray_namespace), self._kill_cfg,
                strategies=self._pauser,
            )
            self._spawn(self._resume_kills_loop())

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._kill_switch is not None:
            await self._kill_switch.aclose()
        await self._monitor.stop()

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _resume_kills_loop(self) -> None:
        assert self._kill_switch is not None
        while True:
            try:
                await self._kill_switch.resume_pending()  # each run is bounded
            except Exception:  # resume_pending does not raise; a bug must not end resuming for good
                log.exception("kill switch: resuming pending kills failed; trying again")
            await asyncio.sleep(self._kill_resume_interval_secs)

    async def kill(self, reason: str, strategy_id: str | None = None, wait: bool = False) -> dict[str, Any]:
        """Start a kill (global when ``strategy_id`` is None) and return its recorded progress.

        Returns once the kill flag (or the strategy's WINDING_DOWN state) is
        recorded; with ``wait=True``, once the kill is DONE or STALLED.

        Raises:
            RuntimeError: this monitor was configured without a kill switch.
        """
        if self._kill_switch is None:
            raise RuntimeError("the risk monitor was started without a kill switch configuration")
        task = self._spawn(self._kill_switch.kill(reason, strategy_id))
        if wait:
            return (await task).model_dump(mode="json")
        for _ in range(100):
            progress = await self._kill_switch.progress(strategy_id)
            if progress is not None and progress.started_ms and (task.done() or progress.reason == reason):
                return progress.model_dump(mode="json")
            await asyncio.sleep(0.05)
        progress = await self._kill_switch.progress(strategy_id)
        return progress.model_dump(mode="json") if progress is not None else {}

    async def kill_progress(self, strategy_id: str | None = None) -> dict[str, Any] | None:
        if self._kill_switch is None:
            return None
        progress = await self._kill_switch.progress(strategy_id)
        return progress.model_dump(mode="json") if progress is not None else None

    async def kill_steps(self, strategy_id: str | None = None, count: int = 50) -> list[dict[str, Any]]:
        if self._kill_switch is None:
            return []
        return [s.model_dump(mode="json") for s in await self._kill_switch.steps(strategy_id, count)]

    async def run_once(self) -> list[Trip]:
        return await self._monitor.run_once()

    async def positions(self) -> list[dict[str, Any]]:
        """Positions in Redis (for the control API), JSON-friendly, valued at the gateways' marks
        as the notional limits value them (``core.read_book``: every ``Position`` key, plus mark,
        notional, unrealized and total P&L; None where unknown)."""
        assert self._monitor.store is not None, "start() first"
        return await valued_positions(self._monitor.store, self._monitor.cfg)

    async def snapshot(self) -> dict[str, Any]:
        """Strategy states, kill flag, venue control state and the valued book (for the control API):
        ``positions``, ``strategy_pnl`` and ``marks`` as in ``core.collect_snapshot``; and
        ``root_heartbeat_age_secs`` at the monitor's last loop (None: none recorded, or not read)."""
        store, control = self._monitor.store, self._monitor.control
        assert store is not None and control is not None, "start() first"
        venues = {v: (await control.snapshot(v)).model_dump(mode="json") for v in self._gateways}
        rows, sums, marks = await read_book(store, self._monitor.cfg)
        return {"strategies": await store.strategy_states(), "kill_flag": await store.kill_flag(),
                "venues": venues, "fills_by_layer": await store.fill_layer_counts(),
                "positions": [r.model_dump(mode="json") for r in rows],
                "strategy_pnl": {sid: s.model_dump(mode="json") for sid, s in sums.items()},
                "marks": marks_view(marks), "root_heartbeat_age_secs": self._monitor.root_heartbeat_age_secs()}

    async def check_health(self) -> HealthReport:
        """The monitor's probes; while a kill runs, a stale loop is reported but restarts nothing
        (``liveness=False``): a restart would cancel the kill."""
        report = await self._monitor.check_health()
        if self._kill_switch is None or not self._kill_switch.running():
            return report
        probes = tuple(p.model_copy(update={"liveness": False}) if p.name == "loop_fresh" else p
                       for p in report.probes)
        return report.model_copy(update={"probes": probes})

    async def breakers(self) -> dict[str, dict[str, Any]]:
        return await self._monitor.breakers()

    async def clear_breaker(self, name: str) -> bool:
        return await self._monitor.clear_breaker(name)

    # -- operator verbs: each one refuses with its reason, is audited and alerted --------

    async def record_operator_action(self, action: str, target: str, who: str, why: str, outcome: str,
                                     detail: str = "") -> str:
        """Write an operator action to ``{ns}:ctl:operator_log`` and alert it; returns the entry id.

        Raises:
            StoreUnavailable: Redis does not answer (the action itself was then not taken
                by a verb of this actor: they record before they return).
        """
        control = await self._control()
        entry = {"ts_ms": str(WallClock().now_ms()), "action": action, "target": target, "who": who,
                 "why": why, "outcome": outcome, "detail": detail}
        entry_id = await control.append_operator_action(entry)
        severity = "warning" if outcome == "done" else "info"
        try:
            await self._monitor.alerts.alert(severity, f"operator:{action}:{target}",
                                             f"operator {action} {target}: {outcome}",
                                             f"by {who}: {why}" + (f" ({detail})" if detail else ""))
        except Exception as exc:  # the audit is in Redis: a lost alert must not undo the action
            log.warning("operator action %s %s not alerted: %s: %s", action, target, type(exc).__name__, exc)
        return entry_id

    async def operator_actions(self, count: int = 50) -> list[dict[str, Any]]:
        return await (await self._control()).operator_actions(count)

    async def _control(self):
        if self._monitor.control is None:
            await self._monitor._connect()
        assert self._monitor.control is not None
        return self._monitor.control

    async def clear_kill(self, who: str, why: str) -> dict[str, Any]:
        """Clear the global kill flag; strategies the kill left KILLED become PAUSED (resume each to trade).

        Refused (``Refused``, naming why; nothing changed) while a kill runs in
        this host or any recorded kill is RUNNING or STALLED: its wind-down is
        not over, positions may still be open. Returns what was done.
        """
        if self._kill_switch is None:
            raise Refused("clear-kill refused: this risk monitor has no kill switch", reasons=("no kill switch",))
        store = self._monitor.store
        assert store is not None, "start() first"
        unfinished = [f"{p.scope} {p.state.value}" + (f" ({p.stalled_reason})" if p.stalled_reason else "")
                      + (f", not flat: {'; '.join(p.remaining)}" if p.remaining else "")
                      for p in await self._kill_switch.recorded()
                      if p.state in (KillState.RUNNING, KillState.STALLED)]
        unfinished += [f"{scope} running here" for scope in self._kill_switch.running()
                       if not any(u.startswith(scope + " ") for u in unfinished)]
        if unfinished:
            reasons = tuple(unfinished)
            await self.record_operator_action("clear-kill", "global", who, why, "refused", "; ".join(reasons))
            raise Refused("clear-kill refused: a wind-down is not finished: " + "; ".join(reasons), reasons=reasons)
        flag = await store.kill_flag()
        await store.clear_kill_flag()
        states = await store.strategy_states(strict=False)
        reopened = sorted(sid for sid, state in states.items() if state == StrategyState.KILLED)
        control = await self._control()
        now = WallClock().now_ms()
        for sid in reopened:
            await control.set_strategy_pause(sid, "operator", "kill cleared: resume to trade again", now)
            await store.set_strategy_state(sid, StrategyState.PAUSED)
        done = {"kill_flag_was": flag, "paused": reopened}
        await self.record_operator_action("clear-kill", "global", who, why, "done",
                                          f"flag was {flag!r}; KILLED -> PAUSED: {', '.join(reopened) or 'none'}")
        return done

    async def reset_breaker(self, name: str, who: str, why: str) -> bool:
        """Close breaker ``name`` (strategies it paused stay PAUSED); audited and alerted. True if it was open."""
        was_open = await self._monitor.clear_breaker(name)
        await self.record_operator_action("reset-breaker", name, who, why, "done" if was_open else "noop",
                                          "" if was_open else "it was not open")
        return was_open

    def stats(self) -> dict[str, Any]:
        return self._monitor.stats()
