"""The reconciler's canary round trip on fakeredis against a scripted venue (no Ray, no simulator).

The scripted venue fills market orders at once, keeps a net position per
instrument and lists its fills for the poller; ``ws_works`` decides whether a
stand-in for the gateway's WS path also applies each fill, tagged ``ws``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from decimal import Decimal

import pytest

from tests.adapters.sim_helpers import eventually
from tradetree.actors import reconciler_canary
from tradetree.actors.reconciler import FillReconciler
from tradetree.adapters.okx.reports import VenueOrderReport
from tradetree.core.clock import ManualClock
from tradetree.core.config import VenueConfig
from tradetree.core.control_state import PAUSE_SOURCE_DRIFT, PAUSE_SOURCE_FILL_HEALTH, ControlState
from tradetree.core.errors import (
    CanaryTimeout,
    DuplicateClientOrderId,
    OrderNotFound,
    OrderRejected,
    StoreError,
    VenueError,
    VenueReleaseRefused,
)
from tradetree.core.store import RedisStore
from tradetree.core.types import Fill, FillLayer, Instrument, InstrumentKind, Order, OrderIntent, OrderState, Side
from tradetree.execution.canary import CANARY_ORDER_PREFIX, CANARY_STRATEGY_ID, CanaryVerdict
from tradetree.execution.reconciliation import ReconcilerConfig

SWAP = Instrument(venue="okx", inst_id="BTC-USDT-SWAP", kind=InstrumentKind.SWAP, base="BTC", quote="USDT",
                  settle="USDT", contract_value=Decimal("0.01"), tick_size=Decimal("0.1"),
                  lot_size=Decimal("0.01"), min_size=Decimal("0.01"))
CONFIG = ReconcilerConfig(poll_interval_secs=0.05, fill_health_interval_secs=0.05, drift_interval_secs=60,
                          canary_enabled=True, canary_interval_secs=0.1, canary_max_interval_secs=0.4,
                          canary_deadline_secs=0.3, cursor_overlap_secs=0)
VENUE = VenueConfig(name="okx", instruments=(SWAP.inst_id,))


class FillingVenue:
    """Fills every market order at once; lists fills for the poller; net positions per instrument."""

    def __init__(self, store: RedisStore, clock: ManualClock) -> None:
        self.store = store
        self.clock = clock
        self.ws_works = True
        self.reject_reduce_only = False
        self.leave_working = False  # accept orders and never fill them (a book nobody takes)
        self.net: dict[str, Decimal] = {}
        self.fills: list[Fill] = []
        self.reports: dict[str, VenueOrderReport] = {}
        self.sent: list[Order] = []
        self._ids = itertools.count(1)

    async def load_instruments(self):
        return [SWAP]

    async def create_order(self, order: Order) -> str:
        self.sent.append(order)
        if order.reduce_only and self.reject_reduce_only:
            raise OrderRejected("51205 reduce-only order rejected", venue="okx", code="51205")
        vid = str(next(self._ids))
        if self.leave_working:
            self.reports[order.client_order_id] = VenueOrderReport(
                venue="okx", inst_id=order.inst_id, venue_order_id=vid, client_order_id=order.client_order_id,
                side=order.side, state=OrderState.LIVE, venue_state="live", size=order.size,
                filled_size=Decimal(0), avg_price=None, updated_ms=self.clock.now_ms())
            return vid
        fill = Fill(venue="okx", inst_id=order.inst_id, trade_id=f"t{vid}", client_order_id=order.client_order_id,
                    venue_order_id=vid, side=order.side, price=Decimal(60000), size=order.size,
                    ts_ms=self.clock.now_ms(), layer=FillLayer.POLL)
        self.fills.append(fill)
        self.net[order.inst_id] = self.net.get(order.inst_id, Decimal(0)) + order.side.sign * order.size
        self.reports[order.client_order_id] = VenueOrderReport(
            venue="okx", inst_id=order.inst_id, venue_order_id=vid, client_order_id=order.client_order_id,
            side=order.side, state=OrderState.FILLED, venue_state="filled", size=order.size,
            filled_size=order.size, avg_price=Decimal(60000), updated_ms=self.clock.now_ms())
        if self.ws_works:  # the gateway's WS path applying the pushed fill
            await self.store.apply_fill(fill.model_copy(update={"layer": FillLayer.WS}), SWAP)
        return vid

    async def fetch_order(self, order: Order) -> VenueOrderReport:
        if order.client_order_id not in self.reports:
            raise OrderNotFound("unknown", venue="okx")
        return self.reports[order.client_order_id]

    async def fetch_fills(self, inst_id, since_ms=None, layer=FillLayer.POLL):
        return [f.model_copy(update={"layer": layer}) for f in self.fills
                if f.inst_id == inst_id and (since_ms is None or f.ts_ms >= since_ms)]

    async def fetch_positions(self):
        return {k: v for k, v in self.net.items() if v != 0}

    async def close(self):
        pass


class Alerts:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str, str]] = []

    async def __call__(self, severity, key, title, text):
        self.sent.append((severity, key, title, text))

    def about(self, key: str) -> list[tuple[str, str, str, str]]:
        return [a for a in self.sent if a[1] == f"okx:{key}"]


@pytest.fixture
async def clock():
    """A manual clock that a background task moves on at about real speed (the canary's
    schedule runs on the injected clock; its waits for the venue run on the event loop)."""
    clock = ManualClock()

    async def tick():
        while True:
            await asyncio.sleep(0.01)
            clock.advance(0.01)

    task = asyncio.create_task(tick())
    yield clock
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.fixture
def store(fake_redis, namespace, clock):
    return RedisStore(fake_redis, namespace, clock=clock)


@pytest.fixture
def control(fake_redis, namespace):
    return ControlState(fake_redis, namespace)


@pytest.fixture
def venue(store, clock):
    return FillingVenue(store, clock)


@pytest.fixture
async def reconciler(venue, store, control, clock):
    alerts = Alerts()
    rec = FillReconciler(VENUE, store=store, control=control, rest=venue, clock=clock, config=CONFIG,
                         alert_sink=alerts)
    rec.alerts = alerts
    await rec.start()
    yield rec
    await rec.stop()


async def _canary_positions(store) -> dict[str, Decimal]:
    return {p.inst_id: p.qty for p in await store.positions(CANARY_STRATEGY_ID)}


async def _canary_orders(store) -> list[Order]:
    # Every order the canary recorded, tracked or not, from the order events stream.
    latest: dict[str, Order] = {}
    for _, order in await store.order_events():
        if order.strategy_id == CANARY_STRATEGY_ID:
            latest[order.client_order_id] = order
    return list(latest.values())


async def test_ws_delivering_the_canary_fills_lifts_the_fill_health_pause(reconciler, venue, store, control, clock):
    venue.net[SWAP.inst_id] = Decimal(-3)  # the account is net short: the first leg sells
    await control.pause_venue("okx", "fills are not arriving on the WS", clock.now_ms(), source=PAUSE_SOURCE_FILL_HEALTH)
    await eventually(lambda: reconciler.canary.history, what="a canary round trip")
    outcome = reconciler.canary.history[0]
    assert outcome.verdict is CanaryVerdict.WS and outcome.resumed
    assert outcome.first_side is Side.SELL and outcome.size == SWAP.min_size
    assert set(outcome.trade_layers.values()) == {FillLayer.WS}
    assert await control.venue_pause("okx") is None
    # Recorded before sent, as _canary, net zero; the way back was reduce-only.
    first, back = venue.sent
    assert first.client_order_id.startswith(CANARY_ORDER_PREFIX) and first.strategy_id == CANARY_STRATEGY_ID
    assert (first.side, first.reduce_only, back.side, back.reduce_only) == (Side.SELL, False, Side.BUY, True)
    assert {o.client_order_id for o in await _canary_orders(store)} == {first.client_order_id, back.client_order_id}
    assert await _canary_positions(store) == {SWAP.inst_id: Decimal(0)}
    assert venue.net[SWAP.inst_id] == Decimal(-3)
    assert [a[0] for a in reconciler.alerts.about("venue_resumed")] == ["info"]
    assert reconciler.ctx.counters["venue_resumes"] == 1 and reconciler.ctx.counters["canary_ws"] == 1
    # Not paused any more: no further canary.
    sent = len(venue.sent)
    await eventually(lambda: reconciler.ctx.counters["poll_cycles"] >= 10, what="more cycles")
    assert len(venue.sent) == sent


async def test_fills_arriving_by_poll_only_keep_the_venue_paused_and_back_off(reconciler, venue, store, control,
                                                                              clock):
    venue.ws_works = False
    await control.pause_venue("okx", "fills are not arriving on the WS", clock.now_ms(), source=PAUSE_SOURCE_FILL_HEALTH)
    await eventually(lambda: len(reconciler.canary.history) >= 2, timeout_secs=10, what="two canary round trips")
    first, second = list(reconciler.canary.history)[:2]
    for outcome in (first, second):
        assert outcome.verdict is CanaryVerdict.NOT_WS and not outcome.resumed
        assert outcome.trade_layers and set(outcome.trade_layers.values()) == {FillLayer.POLL}
    assert (await control.venue_pauses("okx")).keys() == {PAUSE_SOURCE_FILL_HEALTH}
    assert reconciler.canary.state.interval_secs > CONFIG.canary_interval_secs  # backed off
    failed_alerts = reconciler.alerts.about("canary_failed")
    assert len(failed_alerts) >= 2 and {a[0] for a in failed_alerts} == {"warning"}
    await eventually(lambda: _flat(store), what="the canary legs applied")
    # The WS comes back: the next round trip lifts the pause.
    venue.ws_works = True
    await eventually(lambda: _not_paused(control), timeout_secs=10, what="pause lifted")
    assert reconciler.canary.history[-1].verdict is CanaryVerdict.WS
    assert await _canary_positions(store) == {SWAP.inst_id: Decimal(0)}


async def _flat(store) -> bool:
    return all(q == 0 for q in (await _canary_positions(store)).values())


async def _not_paused(control) -> bool:
    return await control.venue_pause("okx") is None


async def test_no_canary_for_another_source_or_with_the_kill_flag(reconciler, venue, store, control, clock):
    await control.pause_venue("okx", "position drift", clock.now_ms(), source=PAUSE_SOURCE_DRIFT)
    await eventually(lambda: reconciler.ctx.counters["poll_cycles"] >= 10, what="cycles")
    assert venue.sent == [] and not reconciler.canary.state.is_armed
    await store.set_kill_flag("operator stop", clock.now_ms())
    await control.pause_venue("okx", "fills are not arriving on the WS", clock.now_ms(), source=PAUSE_SOURCE_FILL_HEALTH)
    await eventually(lambda: reconciler.canary.waiting.startswith("kill flag set"), what="canary held by the kill flag")
    assert venue.sent == []
    await store.clear_kill_flag()
    await eventually(lambda: reconciler.canary.history, what="a canary round trip")
    # Only its own pause is lifted: the drift pause stays.
    assert (await control.venue_pauses("okx")).keys() == {PAUSE_SOURCE_DRIFT}


async def test_a_leg_left_by_a_failed_round_trip_is_closed_before_the_next(reconciler, venue, store, control, clock):
    venue.reject_reduce_only = True  # the way back is refused: the first leg stays open
    await control.pause_venue("okx", "fills are not arriving on the WS", clock.now_ms(), source=PAUSE_SOURCE_FILL_HEALTH)
    await eventually(lambda: reconciler.canary.history, what="a canary round trip")
    assert reconciler.canary.history[0].verdict is CanaryVerdict.FAILED
    assert "OrderRejected" in reconciler.canary.history[0].detail
    await eventually(lambda: _canary_positions_are(store, Decimal("0.01")), what="the first leg applied")
    venue.reject_reduce_only = False
    await eventually(lambda: reconciler.ctx.counters["canary_leftovers_closed"] == 1, timeout_secs=10,
                     what="the leftover leg closed")
    await eventually(lambda: _not_paused(control), timeout_secs=10, what="pause lifted by the next round trip")
    assert await _canary_positions(store) == {SWAP.inst_id: Decimal(0)}
    assert venue.net.get(SWAP.inst_id, Decimal(0)) == 0
    rejected = [o for o in await _canary_orders(store) if o.state is OrderState.REJECTED]
    assert len(rejected) == 1 and "51205" in rejected[0].reject_reason


async def _canary_positions_are(store, qty: Decimal) -> bool:
    return await _canary_positions(store) == {SWAP.inst_id: qty}


async def test_release_venue_lifts_every_source_only_when_the_probes_pass(venue, store, control, clock):
    rec = FillReconciler(VENUE, store=store, control=control, rest=venue, clock=clock,
                         config=CONFIG.model_copy(update={"canary_enabled": False}))
    await rec.start()
    try:
        await eventually(lambda: _healthy(rec), what="healthy at first")
        await control.pause_venue("okx", "fill gap", clock.now_ms(), source=PAUSE_SOURCE_FILL_HEALTH)
        await control.pause_venue("okx", "drift", clock.now_ms(), source=PAUSE_SOURCE_DRIFT)
        await control.open_discrepancy("okx", f"drift:{SWAP.inst_id}", "venue 1, Redis 0", clock.now_ms())
        with pytest.raises(VenueReleaseRefused, match="no_drift") as refused:
            await rec.release_venue()
        assert any(r.startswith("no_drift: ") for r in refused.value.reasons), refused.value.reasons
        assert len(await control.venue_pauses("okx")) == 2
        await rec.check_drift()  # venue and Redis agree (both flat): the discrepancy closes
        assert await rec.release_venue() == [PAUSE_SOURCE_DRIFT, PAUSE_SOURCE_FILL_HEALTH]
        assert await control.venue_pause("okx") is None
        assert venue.sent == []  # disabled: no canary was ever sent
    finally:
        await rec.stop()


async def _healthy(rec) -> bool:
    return (await rec.check_health()).healthy


async def test_a_first_leg_that_never_fills_is_a_canary_timeout_not_a_venue_error(reconciler, venue, control, clock):
    venue.leave_working = True  # the venue answers every call; nothing fills
    await control.pause_venue("okx", "fills are not arriving on the WS", clock.now_ms(), source=PAUSE_SOURCE_FILL_HEALTH)
    await eventually(lambda: reconciler.canary.history, what="a canary round trip")
    outcome = reconciler.canary.history[0]
    assert outcome.verdict is CanaryVerdict.FAILED and not outcome.resumed
    assert outcome.detail.startswith("CanaryTimeout: the first leg") and "did not fill within" in outcome.detail
    assert len(venue.sent) == 1  # no way back for a leg that did not fill
    assert not issubclass(CanaryTimeout, VenueError)


async def test_a_canary_order_id_already_recorded_is_refused_before_sending(venue, store, control, clock,
                                                                           monkeypatch):
    rec = FillReconciler(VENUE, store=store, control=control, rest=venue, clock=clock, config=CONFIG)
    taken = Order.from_intent(
        OrderIntent(strategy_id="S1", venue="okx", inst_id=SWAP.inst_id, side=Side.BUY, size=Decimal(1)),
        now_ms=clock.now_ms(), client_order_id=f"{CANARY_ORDER_PREFIX}taken")
    assert await store.record_order(taken)
    monkeypatch.setattr(reconciler_canary, "new_client_order_id", lambda prefix: taken.client_order_id)
    with pytest.raises(DuplicateClientOrderId, match="already recorded") as err:
        await rec.canary._send(SWAP, Side.BUY, SWAP.min_size, reduce_only=False)
    assert not isinstance(err.value, StoreError)
    assert venue.sent == [] and rec.ctx.counters["canary_orders_sent"] == 0


async def test_a_crash_inside_a_round_trip_still_backs_off(venue, store, control, clock, monkeypatch):
    rec = FillReconciler(VENUE, store=store, control=control, rest=venue, clock=clock, config=CONFIG)
    await control.pause_venue("okx", "fills are not arriving on the WS", clock.now_ms(), source=PAUSE_SOURCE_FILL_HEALTH)
    assert await rec.check_canary() is None  # armed: the first round trip is due an interval later
    clock.advance(CONFIG.canary_interval_secs)
    await rec.poll_once()  # the canary judges fills by the poller: it must be healthy
    crashes = []

    async def crash():
        crashes.append(clock.monotonic())
        raise RuntimeError("a bug in the round trip")

    monkeypatch.setattr(rec.canary, "_round_trip", crash)
    with pytest.raises(RuntimeError, match="a bug"):
        await rec.check_canary()
    assert not rec.canary.in_flight and len(crashes) == 1
    state = rec.canary.state
    assert state.failures_in_row == 1 and state.interval_secs == 2 * CONFIG.canary_interval_secs
    assert await rec.check_canary() is None and len(crashes) == 1  # not due again at once
