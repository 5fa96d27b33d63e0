"""FillReconciler: one venue's REST polling, fill-health monitor, drift check and canary.

``FillReconciler`` is plain async Python (testable without Ray);
``FillReconcilerActor`` is its one-line-per-method Ray shell (the supervisor
gives name, namespace, lifetime and ``max_restarts=0`` via ``.options``).

Every decision is a pure function in ``execution``; this module runs the loops
that carry them out, each on its own timer and asyncio task, so one failing
never stops another (the independence of the defense layers is the product):

| loop (timer) | module | decisions (``execution.``) |
|---|---|---|
| poll (``poll_interval_secs``) | ``reconciler_loops.PollLoop`` | ``reconciliation``, ``poll_plan``, ``anomalies`` |
| fill health (``fill_health_interval_secs``) | ``reconciler_loops.FillHealthLoop`` | ``fill_health`` |
| drift (``drift_interval_secs``) | ``reconciler_loops.DriftLoop`` | ``drift`` |
| canary (``fill_health_interval_secs``, when ``canary_active``) | ``reconciler_canary.CanaryLoop`` | ``canary`` |

They share one ``ReconcilerContext`` (connections, counters, the monitor and
detector, the latest outcomes). ``check_health`` assembles the probes of
``execution.probes``. Only a poll cycle in which every fetch and write
succeeded marks the venue verified; an order leaves the polling set only when
the poller itself saw it terminal and its applied fills add up.

Venue pauses are held per source in ``ControlState``: the fill-health layer
pauses as ``fill_health``, the drift check as ``drift``; the canary lifts only
``fill_health``. ``release_venue`` (the operator's resume, through the control
API) lifts every source once this reconciler's readiness probes pass.

The reconciler owns its own ``OkxRestClient``: it never goes through the
gateway, so a hung or restarting gateway cannot starve it. Its memory that
matters survives a restart in Redis (fill cursors, open discrepancies with
their ``since_ms``, the audit stream), so a fresh incarnation's probes do not
turn green by forgetting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import ray
import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict

from tradetree.actors.alerter import AlerterClient
from tradetree.actors.reconciler_canary import CanaryLoop
from tradetree.actors.reconciler_context import AlertSink, ReconcilerContext, RestApi
from tradetree.actors.reconciler_loops import DriftLoop, FillHealthLoop, PollLoop
from tradetree.adapters.okx import OkxRestClient
from tradetree.core import (
    ALERTER_ID,
    Clock,
    ComponentState,
    ControlState,
    HealthReport,
    ProbeResult,
    RedisStore,
    StoreError,
    VenueAuthError,
    VenueConfig,
    VenueCredentials,
    VenueError,
    VenueReleaseRefused,
    WallClock,
    cancel_and_wait,
    open_redis_client,
)
from tradetree.execution import (
    CanaryOutcome,
    DriftOutcome,
    FillHealthAction,
    PollOutcome,
    ReconcilerConfig,
    canary_active,
    fills_flowing_probe,
    no_drift_probe,
    poll_fresh_probe,
    rest_probe,
    store_probe,
    timers_probe,
)

__all__ = [
    "ReconcilerConfig",
    "AlertSink",
    "PollOutcome",
    "DriftOutcome",
    "ReconcileReport",
    "FillReconciler",
    "FillReconcilerActor",
]

log = logging.getLogger(__name__)

_STOP_TIMEOUT_SECS = 5.0  # how long stop() waits for the timers to end


class ReconcileReport(BaseModel):
    """``reconcile_now()``: one full poll cycle and one drift check, run on demand."""

    model_config = ConfigDict(frozen=True, extra="forbid")

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
    ``credentials`` (None: the venue's own secret sources, read here) at ``start()``, and closed at ``stop()``. ``alert_sink``
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
        if rest is None and not rest_url:
            raise ValueError("FillReconciler needs a rest client or rest_url")
        self.venue = venue
        self.name = venue.name
        self.component = f"reconciler:{venue.name}"
        self.config = config or ReconcilerConfig()
        self._redis_url = redis_url
        self._namespace = namespace
        self._rest_url = rest_url
        self._credentials = credentials
        self._redis_timeout = redis_socket_timeout_secs
        self._given = (store, control, rest)
        self._control_client: aioredis.Redis | None = None
        self.state = ComponentState.NEW
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self.ctx = ReconcilerContext(venue, self.config, clock or WallClock(), alert_sink)
        self.ctx.store, self.ctx.control, self.ctx.rest = store, control, rest  # usable before start()
        self.poll = PollLoop(self.ctx)
        self.fill_health = FillHealthLoop(self.ctx)
        self.drift = DriftLoop(self.ctx)
        self.canary = CanaryLoop(self.ctx, self.fill_health)
        self.canary_enabled = canary_active(self.config, venue)

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open Redis and REST, load the venue's instruments if it answers, start the timers.

        A venue that does not answer is not fatal here (the poll loop keeps
        trying and the health probes say so); Redis is.

        Raises:
            StoreUnavailable: Redis does not answer.
            VenueAuthError: the venue rejected the credentials.
            RuntimeError: already started.
        """
        if self.state is not ComponentState.NEW:
            raise RuntimeError(f"{self.component}: start() is allowed once, state is {self.state.value}")
        cfg = self.config
        # STARTING at once: a second start() while this one awaits Redis or the venue is refused too.
        self.state = ComponentState.STARTING
        try:
            await self._open()
            try:
                await self.ctx.ensure_instruments()
            except VenueAuthError:
                raise
            except VenueError as exc:
                log.warning("%s: venue not answering at start (%s); the poll loop keeps trying", self.component, exc)
            timers: list[tuple[str, str, float, Callable[[], Awaitable[Any]]]] = [
                ("poll", "poll", cfg.poll_interval_secs, self.poll_once),
                ("fill_health", "fill health", cfg.fill_health_interval_secs, self.check_fill_health),
                ("drift", "drift", cfg.drift_interval_secs, self.check_drift),
            ]
            if self.canary_enabled:
                timers.append(("canary", "canary", cfg.fill_health_interval_secs, self.check_canary))
            self._tasks = [asyncio.create_task(self._every(key, secs, check), name=f"{self.component} {label}")
                           for key, label, secs, check in timers]
        except BaseException:
            await self._close()
            self.state = ComponentState.STOPPED
            raise
        self.state = ComponentState.RUNNING
        log.info("%s: running (poll %.1fs, fill health %.1fs, drift %.1fs, canary %s)", self.component,
                 cfg.poll_interval_secs, cfg.fill_health_interval_secs, cfg.drift_interval_secs,
                 f"every {cfg.canary_interval_secs:g}s while paused" if self.canary_enabled else "off")

    async def stop(self) -> None:
        """Stop the timers and close what ``start()`` opened. Idempotent."""
        if self.state is ComponentState.STOPPED:
            return
        self.state = ComponentState.STOPPED
        await self._close()

    async def _open(self) -> None:
        ctx = self.ctx
        store, control, rest = self._given
        if store is None:
            store = await RedisStore.connect(
                self._redis_url, self._namespace, socket_timeout_secs=self._redis_timeout, clock=ctx.clock
            )
        ctx.store = store
        if control is None:
            self._control_client = open_redis_client(self._redis_url, socket_timeout_secs=self._redis_timeout)
            control = ControlState(self._control_client, store.namespace)
        ctx.control = control
        if rest is None:
            if self._credentials is None:
                # Read in this actor's process from the sources the venue's config names.
                self._credentials = self.venue.resolve_credentials()
            rest = OkxRestClient(self.venue, self._credentials, rest_url=self._rest_url, clock=ctx.clock)
        ctx.rest = rest

    async def _close(self) -> None:
        self._closing = True
        await cancel_and_wait(self._tasks, timeout_secs=_STOP_TIMEOUT_SECS, owner=self.component)
        self._tasks.clear()
        store, _, rest = self._given
        if self.ctx.rest is not None and rest is None:
            await self.ctx.rest.close()
        if self._control_client is not None:
            with contextlib.suppress(Exception):
                await self._control_client.aclose()
        if self.ctx.store is not None and store is None:
            with contextlib.suppress(Exception):
                await self.ctx.store.close()

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
                self.ctx.counters["loop_crashes"] += 1
                self.ctx.last_errors[name] = f"{type(exc).__name__}: {exc}"
                log.exception("%s: %s check crashed", self.component, name)
            await asyncio.sleep(max(0.0, interval_secs - (loop.time() - started)))

    # -- the loops, one cycle each ----------------------------------------------------------------

    async def poll_once(self) -> PollOutcome:
        """One poll cycle (see the module docstring); never raises for venue or Redis trouble."""
        return await self.poll.run_once()

    async def check_fill_health(self) -> list[FillHealthAction]:
        """One fill-health check; returns the actions taken."""
        return await self.fill_health.run_once()

    async def check_drift(self) -> DriftOutcome:
        """One drift check: venue positions vs Redis; alerts, discrepancy and pause on confirmed drift."""
        return await self.drift.run_once()

    async def check_canary(self) -> CanaryOutcome | None:
        """One canary tick; returns the outcome of a round trip run now, or None.

        Nothing happens unless the venue holds a ``fill_health`` pause. Then a
        round trip runs once the schedule says it is due, the last poll cycle
        is clean and recent, the kill flag is not set, and no earlier canary
        order is still settling (a ``_canary`` position left by an interrupted
        round trip is closed first, on its own tick).
        """
        return await self.canary.run_once()

    # -- control API ------------------------------------------------------------------------------

    async def release_venue(self) -> list[str]:
        """The operator's resume of the venue: lift every pause source, once this reconciler's
        own probes pass. Returns the sources lifted (empty: it was not paused).

        Raises:
            VenueReleaseRefused: a probe fails (named in the message); nothing was lifted.
            StoreError: Redis failed.
        """
        _, control, _ = self.ctx.parts()
        failing = (await self.check_health()).failing()
        if failing:
            reasons = [f"{p.name}: {p.detail}" for p in failing]
            raise VenueReleaseRefused(
                f"{self.component}: venue pause kept, probes failing: " + "; ".join(reasons), reasons=reasons
            )
        lifted = await control.resume_venue(self.name)
        self.canary.state = self.canary.state.disarmed()
        if lifted:
            self.ctx.counters["venue_resumes"] += 1
            await self.ctx.alert("info", "venue_released", f"{self.name}: venue pause lifted by an operator",
                                 f"sources lifted: {', '.join(lifted)}")
        return lifted

    async def reconcile_now(self) -> ReconcileReport:
        """One full poll cycle and one drift check, now; report what they changed.

        A single drift check can only *suspect* drift (confirmation takes two
        consecutive checks); the report lists the per-instrument numbers.
        """
        self.ctx.parts()
        poll = await self.poll_once()
        drift = await self.check_drift()
        return ReconcileReport(venue=self.name, poll=poll, drift=drift)

    async def check_health(self) -> HealthReport:
        """Probes of the mechanism, not only of this process (``execution.probes``). Never raises.

        ``store``, ``timers`` (liveness); ``rest``, ``poll_fresh``,
        ``fills_flowing_ws``, ``no_drift`` (readiness). The Redis parts make a
        fresh incarnation (after a restart) report what its predecessor saw: a
        restart alone never turns these probes green.
        """
        ctx = self.ctx
        now_ms = ctx.clock.now_ms()
        if self.state is not ComponentState.RUNNING or ctx.store is None or ctx.control is None:
            probe = ProbeResult(name="running", ok=False, detail=f"state {self.state.value}")
            return HealthReport(component=self.component, ts_ms=now_ms, probes=(probe,))
        cfg = self.config
        try:
            await ctx.store.ping()
            ping_error = None
        except StoreError as exc:
            ping_error = str(exc)
        try:
            verified, verified_error = await ctx.control.verified_at(self.name), None
        except StoreError as exc:
            verified, verified_error = None, str(exc)
        open_keys = await ctx.open_discrepancy_keys()
        probes = (
            store_probe(ping_error),
            # A crashed or stuck loop is ours to fix by a restart; a venue answering badly is not.
            timers_probe([t.get_name() for t in self._tasks if t.done()], ctx.last_poll, now_ms, cfg,
                         self.venue.http_timeout_secs),
            rest_probe(ctx.last_poll, now_ms, cfg),
            poll_fresh_probe(verified, now_ms, cfg, error=verified_error),
            fills_flowing_probe(ctx.fills_flowing_problems(open_keys)),
            no_drift_probe(ctx.detector.drifting, open_keys, ctx.last_drift_ok_ms, now_ms, cfg),
        )
        return HealthReport(component=self.component, ts_ms=now_ms, probes=probes)

    def stats(self) -> dict[str, Any]:
        """Counters and the latest outcomes, for the control API and metrics."""
        ctx = self.ctx
        mono = ctx.clock.monotonic()
        schedule = self.canary.state
        return {
            "venue": self.name,
            "state": self.state.value,
            "counters": dict(ctx.counters),
            "gaps": {
                "detected": ctx.monitor.gaps_detected,
                "open": [g.model_dump(mode="json") for g in ctx.monitor.gaps(mono)],
                "ws_flow": ctx.monitor.ws_flow(mono).model_dump(mode="json"),
            },
            "drift": {
                "drifting": list(ctx.detector.drifting),
                "confirmed_total": ctx.detector.confirmed_total,
                "last": ctx.last_drift.model_dump(mode="json") if ctx.last_drift else None,
            },
            "last_poll": ctx.last_poll.model_dump(mode="json") if ctx.last_poll else None,
            "last_poll_ok_ms": ctx.last_poll_ok_ms,
            "last_errors": dict(ctx.last_errors),
            "canary": {
                "enabled": self.canary_enabled,
                "in_flight": self.canary.in_flight,
                "waiting": self.canary.waiting,
                "armed": schedule.is_armed,
                "interval_secs": schedule.interval_secs,
                "failures_in_row": schedule.failures_in_row,
                "due_in_secs": None if schedule.next_at is None else max(0.0, schedule.next_at - mono),
                "history": [o.model_dump(mode="json") for o in self.canary.history],
            },
        }



class _FillReconcilerShell:
    """Ray shell: builds a ``FillReconciler`` and delegates to it, one line per method.

    ``alerter_name`` (default ``ALERTER_ID``; None = log only) is looked up in
    ``ray_namespace`` when an alert is sent.
    """

    def __init__(self, venue: VenueConfig, *, alerter_name: str | None = ALERTER_ID,
                 ray_namespace: str | None = None, **kwargs: Any) -> None:
        sink = AlerterClient(alerter_name, ray_namespace).alert if alerter_name else None
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
