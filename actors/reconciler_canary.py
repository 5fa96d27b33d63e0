"""The fill reconciler's canary loop: the I/O of a round trip, decided by ``execution.canary``.

While the venue holds a ``fill_health`` pause, ``plan_canary_tick`` says when
a net-zero market round trip runs; this loop sends its legs through the
reconciler's own REST client, watches which layer applies their fills, and
lifts the fill-health pause only when the WS delivered them and the
``fills_flowing_ws`` probe passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from decimal import Decimal

from tradetree.actors.gateway import record_ack
from tradetree.actors.reconciler_context import ReconcilerContext
from tradetree.actors.reconciler_loops import FillHealthLoop
from tradetree.core import (
    PAUSE_SOURCE_FILL_HEALTH,
    CanaryTimeout,
    DuplicateClientOrderId,
    FillLayer,
    Instrument,
    Order,
    OrderIntent,
    OrderRejected,
    OrderState,
    OrderType,
    Side,
    StoreError,
    TradetreeError,
    VenueError,
    new_client_order_id,
)
from tradetree.execution import (
    CANARY_ORDER_PREFIX,
    CANARY_STRATEGY_ID,
    CanaryOutcome,
    CanaryState,
    CanaryStepKind,
    CanaryVerdict,
    canary_instrument,
    canary_size,
    describe_fills,
    first_leg_side,
    judge,
    leftover_close,
    leftover_positions,
    legs_complete,
    plan_canary_tick,
    poll_recent,
    unsettled_canary,
)

__all__ = ["CanaryLoop"]

log = logging.getLogger(__name__)

_CANARY_STEP_SECS = 0.05  # how often a round trip re-reads the venue and Redis while it waits
_CANARY_HISTORY = 20  # outcomes kept for stats


class CanaryLoop:
    """One venue's canary. ``waiting``: why a due round trip did not run (empty: nothing waits)."""

    def __init__(self, ctx: ReconcilerContext, fill_health: FillHealthLoop) -> None:
        self.ctx = ctx
        self.fill_health = fill_health
        cfg = ctx.config
        self.state = CanaryState.initial(cfg.canary_interval_secs, cfg.canary_max_interval_secs)
        self.history: deque[CanaryOutcome] = deque(maxlen=_CANARY_HISTORY)
        self.in_flight = False
        self.waiting = ""
        self._lock = asyncio.Lock()

    async def run_once(self) -> CanaryOutcome | None:
        """One tick; returns the outcome of a round trip run now, or None. Raises nothing for
        venue or Redis trouble (the outcome, ``waiting`` and the alerts say it)."""
        ctx = self.ctx
        async with self._lock:
            store, control, _ = ctx.parts()
            try:
                pauses = await control.venue_pauses(ctx.name)
                kill = await store.kill_flag()
            except StoreError as exc:
                ctx.last_errors["canary"] = f"reading the venue pause: {exc}"
                return None
            step = plan_canary_tick(
                self.state, now=ctx.clock.monotonic(), fill_health_paused=PAUSE_SOURCE_FILL_HEALTH in pauses,
                kill_flag=kill, poll_healthy=poll_recent(ctx.last_poll, ctx.clock.now_ms(), ctx.config),
            )
            self.state = step.state
            if step.kind is CanaryStepKind.IDLE:
                self.waiting = ""
            if step.kind is not CanaryStepKind.PROCEED:
                if step.kind is CanaryStepKind.BLOCKED:
                    self.waiting = step.reason
                return None
            try:
                self.waiting = await self._settle_earlier_canaries()
            except TradetreeError as exc:
                # Backs off like a failed round trip: a venue refusing the close is not retried every tick.
                self.waiting = f"closing a leftover canary position failed: {exc}"
                self.state = self.state.after(ctx.clock.monotonic(), CanaryVerdict.FAILED)
                await ctx.alert("warning", "canary_failed", f"{ctx.name}: leftover canary position not closed",
                                f"{exc}; next attempt in {self.state.interval_secs:g}s")
            if self.waiting:
                return None
            ctx.last_errors.pop("canary", None)
            self.in_flight = True
            outcome: CanaryOutcome | None = None
            try:
                outcome = await self._round_trip()
                self.state = self.state.after(ctx.clock.monotonic(), outcome.verdict)
                outcome = await self._after(outcome)
            finally:
                self.in_flight = False
                if outcome is None:
                    # A crash (a bug, not a venue error) still backs off: without it the canary
                    # would send a round trip of real orders every tick.
                    self.state = self.state.after(ctx.clock.monotonic(), CanaryVerdict.FAILED)
            self.history.append(outcome)
            return outcome

    async def _settle_earlier_canaries(self) -> str:
        """Why a round trip must wait for earlier canary orders (empty: it need not); closes a
        ``_canary`` position left by an interrupted round trip (the round trip runs on a later tick)."""
        ctx = self.ctx
        store, _, rest = ctx.parts()
        unsettled = unsettled_canary(await store.open_orders_with_applied(ctx.name, strategy_id=CANARY_STRATEGY_ID))
        if unsettled:
            return unsettled
        leftovers = leftover_positions(await store.positions(CANARY_STRATEGY_ID), ctx.name)
        if not leftovers:
            return ""
        await ctx.ensure_instruments()
        venue_net = await rest.fetch_positions()
        for position in leftovers:
            instrument = ctx.instruments.get(position.inst_id)
            close = leftover_close(position.qty, venue_net.get(position.inst_id, Decimal(0)))
            if instrument is None or close is None:
                continue
            log.warning("%s: closing a leftover canary position of %s %s", ctx.component, position.qty,
                        position.inst_id)
            await self._send(instrument, close.side, close.size, reduce_only=close.reduce_only)
            ctx.counters["canary_leftovers_closed"] += 1
        return "closing a leftover canary position"

    async def _round_trip(self) -> CanaryOutcome:
        """Send the two legs and watch which layer delivers their fills (never raises)."""
        ctx = self.ctx
        store, _, rest = ctx.parts()
        loop = asyncio.get_running_loop()
        deadline_secs = ctx.config.canary_deadline_secs
        started = ctx.clock.now_ms()
        ctx.counters["canary_runs"] += 1
        legs: list[Order] = []
        filled: list[Decimal] = []
        layers: dict[str, FillLayer] = {}
        ws_delivered = 0
        try:
            await ctx.ensure_instruments()
            instrument = canary_instrument(ctx.config, ctx.venue, ctx.instruments)
            size = canary_size(ctx.config, instrument)
        except (TradetreeError, ValueError) as exc:
            return CanaryOutcome(started_ms=started, finished_ms=ctx.clock.now_ms(),
                                 verdict=CanaryVerdict.FAILED, detail=f"no canary instrument: {exc}")
        side = Side.BUY
        try:
            side = first_leg_side((await rest.fetch_positions()).get(instrument.inst_id, Decimal(0)))
            ws_before = await self._ws_delivered()
            legs.append(await self._send(instrument, side, size, reduce_only=False))
            filled.append(await self._wait_filled(legs[0], loop.time() + deadline_secs))
            if filled[0] == 0:
                raise CanaryTimeout(f"the first leg {legs[0].client_order_id} did not fill within {deadline_secs:g}s")
            legs.append(await self._send(instrument, side.opposite, filled[0], reduce_only=True))
            watch_until = loop.time() + deadline_secs
            filled.append(await self._wait_filled(legs[1], watch_until))
            while True:
                layers, applied = {}, []
                for order in legs:
                    for fill in await store.fills_for_order(order.client_order_id):
                        layers[fill.trade_id] = fill.layer
                    applied.append(await store.applied_size(order.client_order_id))
                ws_delivered = await self._ws_delivered() - ws_before
                verdict = judge(len(layers), layers, ws_delivered, all_applied=legs_complete(applied, filled))
                if verdict is CanaryVerdict.WS or loop.time() >= watch_until:
                    break
                await asyncio.sleep(_CANARY_STEP_SECS)
            detail = describe_fills(layers, ws_delivered)
        except TradetreeError as exc:
            verdict, detail = CanaryVerdict.FAILED, f"{type(exc).__name__}: {exc}"
        return CanaryOutcome(
            started_ms=started, finished_ms=ctx.clock.now_ms(), inst_id=instrument.inst_id, size=size,
            first_side=side, client_order_ids=tuple(o.client_order_id for o in legs), venue_filled=tuple(filled),
            trade_layers=layers, ws_delivered=ws_delivered, verdict=verdict, detail=detail,
        )

    async def _ws_delivered(self) -> int:
        store, _, _ = self.ctx.parts()
        return (await store.fill_layer_counts(self.ctx.name))[FillLayer.WS.value]["delivered"]

    async def _send(self, instrument: Instrument, side: Side, size: Decimal, *, reduce_only: bool) -> Order:
        """Record a ``_canary`` market order in Redis, then send it through our own REST client.

        Raises:
            DuplicateClientOrderId: the minted id is already recorded (nothing was sent).
            StoreError: it could not be recorded (nothing was sent).
            OrderRejected: the venue refused it (recorded REJECTED).
            VenueError: the outcome is unknown (it stays tracked; the poller settles it).
        """
        ctx = self.ctx
        store, _, rest = ctx.parts()
        intent = OrderIntent(strategy_id=CANARY_STRATEGY_ID, venue=ctx.name, inst_id=instrument.inst_id, side=side,
                             type=OrderType.MARKET, size=size, reduce_only=reduce_only, reason="canary round trip")
        order = Order.from_intent(intent, now_ms=ctx.clock.now_ms(),
                                  client_order_id=new_client_order_id(CANARY_ORDER_PREFIX))
        if not await store.record_order(order):
            raise DuplicateClientOrderId(f"canary order id {order.client_order_id} is already recorded")
        ctx.counters["canary_orders_sent"] += 1
        try:
            venue_order_id = await rest.create_order(order)
        except OrderRejected as exc:
            with contextlib.suppress(TradetreeError):
                await store.update_order(order.transition(
                    OrderState.REJECTED, now_ms=max(ctx.clock.now_ms(), order.updated_ms), reject_reason=str(exc)))
            raise
        acked, _ = await record_ack(store, order, venue_order_id, ctx.clock.now_ms())
        return acked

    async def _wait_filled(self, order: Order, until: float) -> Decimal:
        """The venue's filled size of ``order`` once it is final, or what it is at ``until`` (loop time)."""
        _, _, rest = self.ctx.parts()
        loop = asyncio.get_running_loop()
        filled = Decimal(0)
        while True:
            try:
                report = await rest.fetch_order(order)
                filled = report.filled_size
                if report.state.is_terminal:
                    return filled
            except VenueError as exc:  # not known yet, or a hiccup: ask again until the deadline
                log.info("%s: canary order %s: %s", self.ctx.component, order.client_order_id, exc)
            if loop.time() >= until:
                return filled
            await asyncio.sleep(_CANARY_STEP_SECS)

    async def _after(self, outcome: CanaryOutcome) -> CanaryOutcome:
        """Count, alert, and lift the fill-health pause when the WS delivered and the probe passes."""
        ctx = self.ctx
        _, control, _ = ctx.parts()
        ctx.counters[f"canary_{outcome.verdict.value}"] += 1
        ids = ", ".join(outcome.client_order_ids) or "none sent"
        if outcome.verdict is CanaryVerdict.WS:
            await self.fill_health.run_once()  # let the monitor see the WS deliveries now
            problems = ctx.fills_flowing_problems(await ctx.open_discrepancy_keys())
            if not problems:
                try:
                    lifted = await control.resume_venue(ctx.name, PAUSE_SOURCE_FILL_HEALTH)
                except StoreError as exc:
                    problems = [f"lifting the pause failed: {exc}"]
                else:
                    ctx.counters["venue_resumes"] += bool(lifted)
                    await ctx.alert("info", "venue_resumed", f"{ctx.name}: fill-health pause lifted",
                                    f"canary round trip ({ids}): {outcome.detail}; fills arrive on the WS again")
                    return outcome.model_copy(update={"resumed": True})
            await ctx.alert("warning", "canary_failed", f"{ctx.name}: canary fills arrived on the WS, venue stays paused",
                            f"canary round trip ({ids}): {outcome.detail}; fills_flowing_ws still failing: "
                            f"{'; '.join(problems)}"[:1000])
            return outcome
        # A key of its own, apart from the lift's: the alerter de-duplicates by key.
        await ctx.alert("warning", "canary_failed",
                        f"{ctx.name}: canary round trip {outcome.verdict.value}, venue stays paused",
                        f"canary round trip ({ids}): {outcome.detail}; next one in {self.state.interval_secs:g}s")
        return outcome
