"""The fill reconciler's poll, fill-health and drift loops: I/O around ``execution``'s decisions.

Each loop's ``run_once`` reads a snapshot through the shared
``ReconcilerContext``, asks its decisions and carries out what they return.
A loop catches the venue and Redis errors of its own cycle and reports them
in its outcome; ``FillReconciler`` runs each on its own timer, so one failing
never stops another.
"""

from __future__ import annotations

import asyncio
import logging

from tradetree.actors.reconciler_context import ReconcilerContext
from tradetree.core import (
    PAUSE_SOURCE_DRIFT,
    PAUSE_SOURCE_FILL_HEALTH,
    FillLayer,
    InvalidOrderTransition,
    Order,
    OrderNotFound,
    OrderState,
    RedisStore,
    StoreError,
    TradetreeError,
    VenueError,
    VenueProtocolError,
)
from tradetree.execution import (
    DRIFT,
    NEVER_REACHED_VENUE,
    WS_FLOW_KEY,
    DriftCheck,
    DriftOutcome,
    FillHealthAction,
    FillHealthActionKind,
    LookupKind,
    OrderLookup,
    OrderPlan,
    PollHealth,
    PollHealthAlert,
    PollOutcome,
    RedisSide,
    TrackedOrder,
    cursor_ms_of,
    cursor_to_write,
    dedup_anomalies,
    discrepancy_subject,
    drift_inputs,
    drift_key,
    drift_outcome,
    fetch_since_ms,
    gap_backdates,
    observations_of,
    plan_fills,
    plan_orders,
    poll_instruments,
    stale_drift_keys,
    stale_gap_keys,
    step_poll_health,
    targeted_fetch_since,
    unmatched_in_audit,
    untrack_now,
)

__all__ = ["PollLoop", "FillHealthLoop", "DriftLoop"]

log = logging.getLogger(__name__)

_LOOKUP_CONCURRENCY = 8  # parallel order-status requests per poll cycle
_AUDIT_SEED_ENTRIES = 500  # audit entries read once at start to recover the WS-flow evidence


class PollLoop:
    """REST polling: fills since the cursor, the status of every tracked order, the untrack guard."""

    def __init__(self, ctx: ReconcilerContext) -> None:
        self.ctx = ctx
        self._lock = asyncio.Lock()
        self._alerted_anomalies: dict[str, str] = {}
        self._health = PollHealth()

    async def run_once(self) -> PollOutcome:
        """One poll cycle. Never raises for venue or Redis trouble: the outcome says what failed,
        and only a clean cycle marks the venue verified."""
        ctx = self.ctx
        async with self._lock:
            outcome = await self._cycle()
        ctx.last_poll = outcome
        ctx.counters["poll_cycles"] += 1
        if outcome.ok:
            ctx.counters["poll_cycles_ok"] += 1
            ctx.last_poll_ok_ms = outcome.started_ms
            ctx.last_errors.pop("poll", None)
        else:
            ctx.counters["poll_cycles_failed"] += 1
            ctx.last_errors["poll"] = "; ".join(outcome.errors)[:500]
        await self._alert_on_poll_health(outcome)
        return outcome

    async def _alert_on_poll_health(self, outcome: PollOutcome) -> None:
        ctx = self.ctx
        step = step_poll_health(self._health, outcome.ok, ctx.config.poll_failure_alert_cycles)
        self._health = step.state
        if step.alert is PollHealthAlert.RECOVERED:
            await ctx.alert("info", "poll_failing", f"{ctx.name}: REST polling recovered",
                            f"a clean poll cycle after {step.failures} failed ones; the venue is verified again")
        elif step.alert is PollHealthAlert.FAILING:
            ctx.counters["poll_failure_alerts"] += 1
            await ctx.alert(
                "critical", "poll_failing", f"{ctx.name}: REST polling failing",
                f"{step.failures} poll cycles in a row failed; positions are no longer verified "
                f"(new orders are refused once verification is stale). Last: {'; '.join(outcome.errors)}"[:1000],
            )

    async def _cycle(self) -> PollOutcome:
        ctx = self.ctx
        store, control, _ = ctx.parts()
        started = ctx.clock.now_ms()
        errors: list[str] = []
        counts = {"seen": 0, "applied": 0, "duplicate": 0}
        try:
            orders = await store.open_orders(venue=ctx.name)
            await ctx.ensure_instruments()
        except TradetreeError as exc:
            await ctx.heartbeat(started)
            return PollOutcome(started_ms=started, ok=False, errors=(f"start of cycle: {exc}",))
        tracked = [TrackedOrder(order=o) for o in orders]
        for inst_id in poll_instruments(ctx.venue.instruments, orders):
            try:
                await self._poll_fills(inst_id, tracked, started, counts)
            except TradetreeError as exc:
                errors.append(f"fills {inst_id}: {exc}")

        lookups = await self._lookup_orders(orders)
        errors.extend(f"status {c}: {lk.error}" for c, lk in lookups.items() if lk.kind is LookupKind.FAILED)

        updated: list[str] = []
        untracked: list[str] = []
        plan = OrderPlan()
        try:
            # Read again now, after the fills were applied and the venue answered: the WS path
            # may have moved an order forward meanwhile.
            fresh = await self._tracked_now(store, orders)
            plan = plan_orders(fresh, lookups, now_ms=ctx.clock.now_ms(),
                               pending_grace_ms=int(ctx.config.pending_grace_secs * 1000))
            snapshots: dict[str, Order] = {t.client_order_id: t.order for t in fresh}
            failed: set[str] = set()
            for update in plan.updates:
                try:
                    snapshots[update.client_order_id] = await store.update_order(update)
                except InvalidOrderTransition as exc:
                    # Another writer (the WS path) got there between our read and write; the
                    # next cycle plans from its snapshot.
                    failed.add(update.client_order_id)
                    log.info("%s: order %s: update lost a race: %s", ctx.component, update.client_order_id, exc)
                    continue
                except StoreError as exc:
                    failed.add(update.client_order_id)
                    errors.append(f"update {update.client_order_id}: {exc}")
                    continue
                updated.append(update.client_order_id)
                if update.state is OrderState.REJECTED and update.reject_reason == NEVER_REACHED_VENUE:
                    ctx.counters["orders_rejected_never_reached"] += 1
            for coid in untrack_now(plan.untrack, snapshots, failed):
                await store.untrack_order(coid)
                untracked.append(coid)
        except TradetreeError as exc:
            errors.append(f"orders: {exc}")

        decisions = {c: d.value for c, d in plan.decisions.items()}
        ctx.counters["fills_applied_poll"] += counts["applied"]
        ctx.counters["fills_duplicate_poll"] += counts["duplicate"]
        ctx.counters["orders_updated"] += len(updated)
        ctx.counters["orders_untracked"] += len(untracked)
        alerts = dedup_anomalies(self._alerted_anomalies, plan.anomalies, decisions)
        self._alerted_anomalies = alerts.remembered
        ctx.counters["anomalies"] += len(alerts.fresh)
        for coid, problem in alerts.fresh.items():
            await ctx.alert("warning", f"order_anomaly:{coid}", f"{ctx.name}: order {coid} needs attention", problem)

        ok = not errors
        if ok:
            try:
                await control.mark_verified(ctx.name, started)
            except StoreError as exc:
                ok = False
                errors.append(f"mark_verified: {exc}")
        await ctx.heartbeat(started)
        return PollOutcome(
            started_ms=started, ok=ok, fills_seen=counts["seen"], fills_applied=counts["applied"],
            fills_duplicate=counts["duplicate"], orders_checked=len(orders), orders_updated=tuple(updated),
            untracked=tuple(untracked), decisions=decisions, anomalies=dict(plan.anomalies), errors=tuple(errors),
        )

    async def _tracked_now(self, store: RedisStore, orders: list[Order]) -> list[TrackedOrder]:
        """``orders`` as Redis holds them now, with their applied sizes (one batched read)."""
        now = {o.client_order_id: (o, applied) for o, applied in await store.open_orders_with_applied(self.ctx.name)}
        fresh = []
        for o in orders:
            if o.client_order_id in now:
                current, applied = now[o.client_order_id]
            else:  # left the open set meanwhile (an operator): plan from its record all the same
                current = await store.get_order(o.client_order_id) or o
                applied = await store.applied_size(o.client_order_id)
            fresh.append(TrackedOrder(order=current, applied_size=applied))
        return fresh

    async def _poll_fills(self, inst_id: str, tracked: list[TrackedOrder], now_ms: int, counts: dict[str, int]) -> None:
        """Fetch the fills of ``inst_id`` since the cursor, apply them, move the cursor.

        Raises a TradetreeError when anything failed (fills stored before the
        failure stay stored; the cursor stops before the first one that was not).
        """
        ctx = self.ctx
        store, control, rest = ctx.parts()
        instrument = ctx.instruments.get(inst_id)
        if instrument is None:
            raise VenueProtocolError(f"instrument {inst_id} is not listed by the venue", venue=ctx.name)
        cursor_ms = cursor_ms_of(await control.get_cursor(ctx.name, inst_id))
        overlap_ms = int(ctx.config.cursor_overlap_secs * 1000)
        since = fetch_since_ms(cursor_ms, tracked, inst_id, now_ms=now_ms, overlap_ms=overlap_ms)
        planned = plan_fills(ctx.name, await rest.fetch_fills(inst_id, since_ms=since, layer=FillLayer.POLL))
        counts["seen"] += len(planned)
        stored: set[str] = set()
        first_error: TradetreeError | None = None
        try:
            # One round trip for the page; each fill still succeeds or fails on its own.
            results = await store.apply_fills([(fill, instrument) for fill in planned])
        except StoreError as exc:
            results = [exc] * len(planned)
        for fill, result in zip(planned, results, strict=True):
            if isinstance(result, Exception):
                first_error = first_error or StoreError(f"apply {fill.key}: {result}")
                continue
            stored.add(fill.key)
            counts["applied" if result.applied else "duplicate"] += 1
        new_cursor = cursor_to_write(cursor_ms, planned, stored, since_ms=since, overlap_ms=overlap_ms)
        if new_cursor is not None:
            await control.set_cursor(ctx.name, inst_id, {"ts_ms": new_cursor, "updated_ms": now_ms})
        if first_error is not None:
            raise first_error

    async def _lookup_orders(self, orders: list[Order]) -> dict[str, OrderLookup]:
        _, _, rest = self.ctx.parts()
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


class FillHealthLoop:
    """Order status vs applied fills; targeted fetches, alerts, discrepancies, pauses; WS flow."""

    def __init__(self, ctx: ReconcilerContext) -> None:
        self.ctx = ctx
        self._lock = asyncio.Lock()
        self._ws_flow_seeded = False

    async def run_once(self) -> list[FillHealthAction]:
        """One check; returns the actions taken. Raises nothing for venue or Redis trouble
        (a failed read is counted and skipped: no evaluation on partial data)."""
        ctx = self.ctx
        async with self._lock:
            store, control, _ = ctx.parts()
            monitor = ctx.monitor
            ctx.counters["health_checks"] += 1
            try:
                pairs = await store.open_orders_with_applied(ctx.name)
                layer_counts = await store.fill_layer_counts(ctx.name)
                open_discrepancies = await control.discrepancies(ctx.name)
                audit = None if self._ws_flow_seeded else await store.audit_entries(count=_AUDIT_SEED_ENTRIES)
            except StoreError as exc:
                ctx.counters["health_checks_failed"] += 1
                ctx.last_errors["fill_health"] = str(exc)
                return []
            observations = observations_of(pairs)
            now, now_ms = ctx.clock.monotonic(), ctx.clock.now_ms()
            monitor.observe_layer_counts(layer_counts, now)
            if audit is not None:
                monitor.seed_unmatched(unmatched_in_audit(ctx.name, audit, now, now_ms), now)
                self._ws_flow_seeded = True
            actions = monitor.evaluate(observations, now) + monitor.check_ws_flow(now)
            for coid, since in gap_backdates(open_discrepancies, now, now_ms).items():
                monitor.backdate_gap(coid, since)
            by_coid = {o.client_order_id: o for o, _ in pairs}
            for action in actions:
                try:
                    await self._carry_out(action, by_coid)
                except TradetreeError as exc:
                    ctx.last_errors["fill_health"] = f"{action.kind.value} {action.key}: {exc}"
                    log.error("%s: fill-health action %s failed: %s", ctx.component, action.kind.value, exc)
            try:
                # The discrepancies read at the start: one opened since is a gap, never stale.
                for key in stale_gap_keys(open_discrepancies, observations):
                    if await control.close_discrepancy(ctx.name, key):
                        await ctx.alert("info", key, f"{ctx.name}: fill gap closed", f"{key}: no gap any more")
            except StoreError as exc:
                ctx.last_errors["fill_health"] = f"closing stale discrepancies: {exc}"
                return actions
            ctx.last_health_ok_ms = ctx.clock.now_ms()
            ctx.last_errors.pop("fill_health", None)
            return actions

    async def _carry_out(self, action: FillHealthAction, orders: dict[str, Order]) -> None:
        ctx = self.ctx
        _, control, _ = ctx.parts()
        kind = action.kind
        if kind is FillHealthActionKind.TARGETED_FETCH:
            order = orders.get(action.client_order_id or "")
            if order is not None:
                await self._targeted_fetch(order)
        elif kind is FillHealthActionKind.ALERT:
            if action.opens_discrepancy:
                await control.open_discrepancy(ctx.name, action.key, action.detail, ctx.clock.now_ms())
            await ctx.alert("warning", action.key, f"{ctx.name}: fill health", action.detail)
        elif kind is FillHealthActionKind.PAUSE_VENUE:
            await ctx.pause_venue(f"fill health: {action.detail}", PAUSE_SOURCE_FILL_HEALTH)
        elif kind is FillHealthActionKind.RESOLVED:
            if action.key == WS_FLOW_KEY:
                # Not a lift of the pause: only a canary round trip (or an operator) does that.
                await ctx.alert("info", action.key, f"{ctx.name}: no fill waits for the WS any more", action.detail)
            elif await control.close_discrepancy(ctx.name, action.key):
                await ctx.alert("info", action.key, f"{ctx.name}: fill gap closed", action.detail)

    async def _targeted_fetch(self, order: Order) -> None:
        """Fetch the fills of one order over REST and apply them tagged ``health``."""
        ctx = self.ctx
        store, _, rest = ctx.parts()
        coid = order.client_order_id
        ctx.counters["targeted_fetches"] += 1
        try:
            await ctx.ensure_instruments()
            instrument = ctx.instruments.get(order.inst_id)
            if instrument is None:
                raise VenueProtocolError(f"instrument {order.inst_id} is not listed", venue=ctx.name)
            since = targeted_fetch_since(order, int(ctx.config.cursor_overlap_secs * 1000))
            fetched = await rest.fetch_fills(order.inst_id, since_ms=since, layer=FillLayer.HEALTH)
            mine = plan_fills(ctx.name, fetched, layer=FillLayer.HEALTH, order=order)
            # One round trip; each fill succeeds or fails on its own, so one bad fill does not
            # keep the order's other fills out.
            results = await store.apply_fills([(fill, instrument) for fill in mine])
        except (TradetreeError, ValueError) as exc:
            ctx.counters["targeted_fetch_failures"] += 1
            ctx.monitor.record_fetch_result(coid, ok=False, detail=f"targeted fetch failed: {exc}")
            log.warning("%s: targeted fetch of %s failed: %s", ctx.component, coid, exc)
            return
        failed = [f"{fill.key}: {r}" for fill, r in zip(mine, results, strict=True) if isinstance(r, Exception)]
        applied = sum(1 for r in results if not isinstance(r, Exception) and r.applied)
        ctx.counters["fills_applied_health"] += applied
        ctx.counters["fills_duplicate_health"] += len(results) - applied - len(failed)
        found = f"targeted fetch found {len(mine)} fill(s), applied {applied}"
        if failed:
            ctx.counters["targeted_fetch_failures"] += 1
            detail = f"{found}, {len(failed)} failed: {'; '.join(failed)}"[:1000]
            ctx.monitor.record_fetch_result(coid, ok=False, detail=detail)
            log.warning("%s: targeted fetch of %s: %s", ctx.component, coid, detail)
            return
        ctx.monitor.record_fetch_result(coid, ok=True, detail=found)


class DriftLoop:
    """Venue net positions vs the sum of Redis positions, bracketed by two Redis reads."""

    def __init__(self, ctx: ReconcilerContext) -> None:
        self.ctx = ctx
        self._lock = asyncio.Lock()

    async def run_once(self) -> DriftOutcome:
        """One check: alerts, a discrepancy and a pause on confirmed drift."""
        ctx = self.ctx
        async with self._lock:
            outcome = await self._check()
        ctx.last_drift = outcome
        ctx.counters["drift_checks"] += 1
        if outcome.ok:
            ctx.last_drift_ok_ms = outcome.started_ms
            ctx.last_errors.pop("drift", None)
        else:
            ctx.counters["drift_checks_failed"] += 1
            ctx.last_errors["drift"] = outcome.error
        return outcome

    async def _check(self) -> DriftOutcome:
        ctx = self.ctx
        store, _, rest = ctx.parts()
        started = ctx.clock.now_ms()
        try:
            await ctx.ensure_instruments()
            before = await self._redis_side(store)
            venue_positions = await rest.fetch_positions()
            # Read again: a fill the venue made while we read it shows up here (see execution.drift).
            after = await self._redis_side(store)
        except TradetreeError as exc:
            return DriftOutcome(started_ms=started, ok=False, error=str(exc))
        inputs = drift_inputs(ctx.name, before, after, ctx.instruments, venue_positions)
        check = ctx.detector.check(venue_positions, inputs.expected, in_flight=inputs.in_flight,
                                   expected_after=inputs.expected_after)
        error = ""
        try:
            await self._act(check)
        except TradetreeError as exc:
            error = f"acting on drift: {exc}"
        ctx.counters["drift_confirmed"] += len(check.confirmed)
        return drift_outcome(started, check, error)

    async def _redis_side(self, store: RedisStore) -> RedisSide:
        positions = await store.positions()
        return RedisSide(tuple(positions), tuple(await store.open_orders_with_applied(self.ctx.name)))

    async def _act(self, check: DriftCheck) -> None:
        ctx = self.ctx
        _, control, _ = ctx.parts()
        now_ms = ctx.clock.now_ms()
        for row in check.confirmed:
            detail = f"position drift on {ctx.name} beyond {ctx.detector.tolerance}: {row.describe()}"
            await control.open_discrepancy(ctx.name, drift_key(row.inst_id), detail, now_ms)
            await ctx.alert("critical", drift_key(row.inst_id), f"{ctx.name}: position drift", detail)
            await ctx.pause_venue(detail, PAUSE_SOURCE_DRIFT)
        for key in stale_drift_keys(await control.discrepancies(ctx.name), check):
            if await control.close_discrepancy(ctx.name, key):
                await ctx.alert("info", key, f"{ctx.name}: position drift resolved",
                                f"{discrepancy_subject(key, DRIFT)}: venue and Redis agree again")
