"""FillReconciler (plain, no Ray) against the simulator over loopback, real ccxt and a real Redis.

The incident replay: the WS keeps delivering order status but drops the fill
records; the REST poller must apply every fill (tagged ``poll``) so Redis
matches the venue, each trade once, and the fill-health layer must catch a gap
on its own when the poller is broken too.
"""

from __future__ import annotations

import collections
import contextlib
from decimal import Decimal

import pytest

from tests.adapters.sim_helpers import credentials, eventually, venue_config
from tradetree.actors.gateway import VenueGateway
from tradetree.actors.reconciler import FillReconciler
from tradetree.adapters.okx.rest import OkxRestClient
from tradetree.core.control_state import PAUSE_SOURCE_FILL_HEALTH, ControlState
from tradetree.core.errors import VenueUnavailable
from tradetree.core.lifecycle import ComponentState
from tradetree.core.store import RedisStore
from tradetree.core.types import Fill, FillLayer, Order, OrderIntent, OrderState, OrderType, Side, StrategyState
from tradetree.execution.reconciliation import NEVER_REACHED_VENUE, ReconcilerConfig

pytestmark = pytest.mark.integration

SWAP = "BTC-USDT-SWAP"
POLL_SECS = 0.3
FAST = ReconcilerConfig(
    poll_interval_secs=POLL_SECS, fill_health_interval_secs=0.1, fill_gap_alert_secs=1.0,
    drift_interval_secs=0.3, pending_grace_secs=0.5, gap_recurrence_count=2,
)


class AlertRecorder:
    def __init__(self) -> None:
        self.alerts: list[tuple[str, str, str, str]] = []

    async def __call__(self, severity: str, key: str, title: str, text: str) -> None:
        self.alerts.append((severity, key, title, text))

    def keys(self) -> list[str]:
        return [a[1] for a in self.alerts]


class PollFillsBroken:
    """The reconciler's REST client with the *poller's* fill fetch broken (a poller bug, a cursor
    problem...): fetches tagged ``poll`` fail, the rest works. Layers must not depend on each other."""

    def __init__(self, rest: OkxRestClient) -> None:
        self._rest = rest

    def __getattr__(self, name):
        return getattr(self._rest, name)

    async def fetch_fills(self, inst_id, since_ms=None, layer=FillLayer.POLL):
        if layer is FillLayer.POLL:
            raise VenueUnavailable("poller fill fetch broken for the test", venue="okx")
        return await self._rest.fetch_fills(inst_id, since_ms=since_ms, layer=layer)


@pytest.fixture
async def store(real_redis, namespace):
    return RedisStore(real_redis, namespace)


@pytest.fixture
async def control(real_redis, namespace):
    return ControlState(real_redis, namespace)


@pytest.fixture
async def gateway(sim, redis_url, namespace, real_redis, store):
    await store.set_strategy_state("s1", StrategyState.RUNNING)  # its orders go straight to the gateway's gate
    gw = VenueGateway(venue_config(sim), rest_url=sim.rest_url, ws_url=sim.ws_url, credentials=credentials(),
                      redis_url=redis_url, namespace=namespace, heartbeat_interval_secs=0.2)
    await gw.start()
    yield gw
    await gw.stop()


@contextlib.asynccontextmanager
async def running(sim, store, control, *, config=FAST, rest=None, alerts=None):
    reconciler = FillReconciler(
        venue_config(sim), rest_url=sim.rest_url, credentials=credentials(), store=store, control=control,
        config=config, alert_sink=alerts, rest=rest,
    )
    await reconciler.start()
    try:
        yield reconciler
    finally:
        await reconciler.stop()


def intent(size: str, side: Side = Side.BUY) -> OrderIntent:
    return OrderIntent(strategy_id="s1", venue="okx", inst_id=SWAP, side=side, type=OrderType.MARKET,
                       size=Decimal(size))


async def redis_positions(store: RedisStore) -> dict[str, Decimal]:
    total: dict[str, Decimal] = collections.defaultdict(Decimal)
    for p in await store.positions():
        if p.venue == "okx":
            total[p.inst_id] += p.qty
    return {k: v for k, v in total.items() if v != 0}


def venue_positions(sim) -> dict[str, Decimal]:
    return {k: Decimal(v) for k, v in sim.account_truth()["positions"].items() if Decimal(v) != 0}


def venue_trade_ids(sim, coids: set[str]) -> list[str]:
    return [t["trade_id"] for t in sim.account_truth()["trades"] if t["cl_ord_id"] in coids]


async def submit_filled(gateway: VenueGateway, sizes_sides) -> list[Order]:
    orders = []
    for size, side in sizes_sides:
        order = await gateway.submit_order(intent(size, side))
        assert order.state is not OrderState.REJECTED, order.reject_reason
        orders.append(order)
    return orders


async def matches_venue(store, sim) -> bool:
    return await redis_positions(store) == venue_positions(sim)


# -- the incident ------------------------------------------------------------------------------------


# The incident replay tests the poller: the fill-health layer keeps its default threshold so
# it cannot beat a poll cycle that a loaded machine delays.
INCIDENT = FAST.model_copy(update={"poll_interval_secs": 0.5, "fill_gap_alert_secs": 5.0})


async def test_incident_replay_poller_applies_the_fills_the_ws_dropped(sim, gateway, store, control):
    sim.faults.set_drop_fill_records(True)
    async with running(sim, store, control, config=INCIDENT) as reconciler:
        await eventually(lambda: reconciler.ctx.last_poll is not None and reconciler.ctx.last_poll.ok, what="first poll")
        orders = await submit_filled(gateway, [("2", Side.BUY), ("1", Side.SELL), ("3", Side.BUY)])
        coids = {o.client_order_id for o in orders}
        await eventually(lambda: len(venue_trade_ids(sim, coids)) >= 3, what="venue fills")
        # The WS delivered the status (FILLED) but no fill: Redis knows "filled" and has applied nothing.
        await eventually(lambda: _all_filled_in_redis(store, coids), what="WS status updates")
        # Within one poll interval + 1 s the poller makes Redis equal the venue.
        await eventually(lambda: matches_venue(store, sim), timeout_secs=INCIDENT.poll_interval_secs + 1.0,
                         what="Redis positions equal the venue")
        assert venue_positions(sim) == {SWAP: Decimal(4)}

        trade_ids = venue_trade_ids(sim, coids)
        entries = [e for e in await store.audit_entries() if e.fill.venue == "okx"]
        assert collections.Counter(e.fill.trade_id for e in entries) == collections.Counter(trade_ids)
        assert {e.fill.layer for e in entries} == {FillLayer.POLL}
        assert (await store.fill_layer_counts("okx"))["ws"]["applied"] == 0

        # The poller untracks them itself: terminal at the venue and the fills add up.
        await eventually(lambda: _untracked(store, coids), what="untracked by the poller")
        for coid in coids:
            assert await store.applied_size(coid) == (await store.get_order(coid)).filled_size

        # The mechanism probe: fills happen and the WS does not carry them.
        await eventually(lambda: _probe(reconciler, "fills_flowing_ws", ok=False), timeout_secs=30,
                         what="WS flow probe fails")
        report = await reconciler.check_health()
        assert "not delivered by the WS" in next(p for p in report.probes if p.name == "fills_flowing_ws").detail

        # Fill health's own defense acts on it: the venue is paused (the gateway refuses new
        # orders; when the refusal lands depends only on how fast this machine runs the loop).
        await eventually(lambda: _venue_paused_by_fill_health(control), what="venue paused by fill health")

        # The WS fill path works again: the probe says so only once the WS delivers a fill. The
        # operator lifts the pause to send one (in a tree the canary's round trip does).
        sim.faults.clear_all()
        assert await control.resume_venue("okx", PAUSE_SOURCE_FILL_HEALTH) == [PAUSE_SOURCE_FILL_HEALTH]
        (again,) = await submit_filled(gateway, [("1", Side.SELL)])
        await eventually(lambda: _probe(reconciler, "fills_flowing_ws", ok=True), what="WS flow probe recovers")
        await eventually(lambda: matches_venue(store, sim), what="positions after recovery")
        assert reconciler.ctx.counters["fills_applied_poll"] >= 3


async def _venue_paused_by_fill_health(control) -> bool:
    return PAUSE_SOURCE_FILL_HEALTH in await control.venue_pauses("okx")


async def _all_filled_in_redis(store, coids) -> bool:
    for coid in coids:
        order = await store.get_order(coid)
        if order is None or order.state is not OrderState.FILLED:
            return False
    return True


async def _untracked(store, coids) -> bool:
    tracked = {o.client_order_id for o in await store.open_orders(venue="okx")}
    return not (tracked & coids)


async def _probe(reconciler, name: str, *, ok: bool) -> bool:
    report = await reconciler.check_health()
    return next(p for p in report.probes if p.name == name).ok is ok


async def test_same_fill_via_ws_and_poll_counts_once(sim, gateway, store, control):
    async with running(sim, store, control) as reconciler:
        orders = await submit_filled(gateway, [("2", Side.BUY), ("2", Side.SELL), ("1", Side.SELL)])
        coids = {o.client_order_id for o in orders}
        trade_ids = venue_trade_ids(sim, coids)
        await eventually(lambda: _untracked(store, coids), what="untracked")
        # one more full cycle after untracking: the poller has re-read every fill since its cursor
        cycles = reconciler.ctx.counters["poll_cycles_ok"]
        await eventually(lambda: reconciler.ctx.counters["poll_cycles_ok"] >= cycles + 2, what="more poll cycles")
        counts = await store.fill_layer_counts("okx")
        assert counts["ws"]["delivered"] >= len(trade_ids)
        assert counts["poll"]["delivered"] >= len(trade_ids)  # the poller saw every one of them too
        assert counts["ws"]["applied"] + counts["poll"]["applied"] == len(trade_ids)
        entries = [e for e in await store.audit_entries() if e.fill.venue == "okx"]
        assert collections.Counter(e.fill.trade_id for e in entries) == collections.Counter(trade_ids)
        assert await redis_positions(store) == venue_positions(sim) == {SWAP: Decimal(-1)}
        assert await _probe(reconciler, "fills_flowing_ws", ok=True)


# -- fill health ---------------------------------------------------------------------------------------


async def test_fill_health_catches_the_gap_when_the_poller_is_broken_too(sim, gateway, store, control):
    sim.faults.set_drop_fill_records(True)
    rest = OkxRestClient(venue_config(sim), credentials(), rest_url=sim.rest_url)
    alerts = AlertRecorder()
    try:
        async with running(sim, store, control, rest=PollFillsBroken(rest), alerts=alerts) as reconciler:
            (order,) = await submit_filled(gateway, [("3", Side.BUY)])
            coid = order.client_order_id
            # the gap: the WS said FILLED 3, nothing applied; the poller cannot fetch fills
            await eventually(lambda: _all_filled_in_redis(store, {coid}), what="status via WS")
            assert await store.applied_size(coid) == 0
            await eventually(lambda: reconciler.ctx.monitor.gaps_detected >= 1, what="gap detected")
            await eventually(lambda: matches_venue(store, sim), what="targeted fetch fixed the positions")
            entries = [e for e in await store.audit_entries() if e.fill.venue == "okx"]
            assert {e.fill.layer for e in entries} == {FillLayer.HEALTH}
            assert sorted(e.fill.trade_id for e in entries) == sorted(venue_trade_ids(sim, {coid}))
            assert f"okx:fill_gap:{coid}" in alerts.keys()
            # the discrepancy opened for the gap is closed again, nothing paused (one gap only)
            await eventually(lambda: _no_discrepancy(control), what="discrepancy closed")
            assert await control.venue_pause("okx") is None
            # the poller still works on order status: it untracks once the health layer applied the fills
            await eventually(lambda: _untracked(store, {coid}), what="untracked")
            # ...but its own cycles fail, so the venue is never marked verified
            assert reconciler.ctx.counters["poll_cycles_ok"] == 0
            assert await control.verified_at("okx") is None
            assert not (await reconciler.check_health()).healthy
    finally:
        await rest.close()


async def _no_discrepancy(control) -> bool:
    return await control.discrepancies("okx") == {}


async def test_gap_surviving_its_targeted_fetch_pauses_the_venue(sim, gateway, store, control):
    sim.faults.set_drop_fill_records(True)
    alerts = AlertRecorder()
    async with running(sim, store, control, alerts=alerts) as reconciler:
        await eventually(lambda: reconciler.ctx.last_poll is not None, what="first poll")
        # every fill query at the venue fails: poll and targeted fetch alike
        sim.faults.set_rest_errors(1.0, "5xx", paths=("/api/v5/trade/fills",))
        (order,) = await submit_filled(gateway, [("2", Side.SELL)])
        await eventually(lambda: _paused(control), what="venue paused")
        assert "fill gap persists" in await control.venue_pause("okx")
        assert f"fill_gap:{order.client_order_id}" in await control.discrepancies("okx")
        assert any(severity == "critical" and key == "okx:venue_paused" for severity, key, *_ in alerts.alerts)
        report = await reconciler.check_health()
        failing = {p.name for p in report.failing()}
        assert {"rest", "fills_flowing_ws"} <= failing
        # the venue heals: the fills land (either layer), the gap closes; the pause stays for an operator
        sim.faults.clear_all()
        await eventually(lambda: matches_venue(store, sim), what="positions after the venue heals")
        await eventually(lambda: _no_discrepancy(control), what="discrepancy closed")
        assert await control.venue_pause("okx") is not None


async def _paused(control) -> bool:
    return await control.venue_pause("okx") is not None


# -- REST polling failing ------------------------------------------------------------------------------


async def test_rest_polling_failing_reports_unhealthy_and_stops_verifying(sim, store, control):
    async with running(sim, store, control) as reconciler:
        await eventually(lambda: _healthy(reconciler), what="healthy at first")
        sim.faults.set_rest_errors(1.0, "5xx")
        await eventually(lambda: _probe(reconciler, "rest", ok=False), what="rest probe fails")
        frozen = await control.verified_at("okx")
        failed = reconciler.ctx.counters["poll_cycles_failed"]
        await eventually(lambda: reconciler.ctx.counters["poll_cycles_failed"] >= failed + 3, what="failing cycles")
        assert await control.verified_at("okx") == frozen
        await eventually(lambda: _probe(reconciler, "poll_fresh", ok=False), what="poll_fresh fails")
        assert "ExchangeNotAvailable" in reconciler.ctx.last_errors["poll"] or "503" in reconciler.ctx.last_errors["poll"]
        sim.faults.clear_all()
        await eventually(lambda: _healthy(reconciler), what="healthy again")
        assert await control.verified_at("okx") > frozen


async def _healthy(reconciler) -> bool:
    report = await reconciler.check_health()
    names = {p.name for p in report.probes}
    return report.healthy and names >= {"store", "timers", "rest", "poll_fresh", "fills_flowing_ws", "no_drift"}


# -- orders whose submit outcome was unknown -----------------------------------------------------------


async def test_pending_order_the_venue_never_saw_is_rejected_after_the_grace(sim, store, control):
    order = Order(client_order_id="ttneversent0001", strategy_id="s1", venue="okx", inst_id=SWAP, side=Side.BUY,
                  type=OrderType.MARKET, size=Decimal(1), created_ms=store._clock.now_ms(),
                  updated_ms=store._clock.now_ms())
    assert await store.record_order(order)
    async with running(sim, store, control) as reconciler:
        await eventually(lambda: _untracked(store, {order.client_order_id}), what="untracked")
        stored = await store.get_order(order.client_order_id)
        assert stored.state is OrderState.REJECTED and stored.reject_reason == NEVER_REACHED_VENUE
        assert reconciler.ctx.counters["orders_rejected_never_reached"] == 1


async def test_pending_order_that_did_reach_the_venue_takes_its_state(sim, store, control):
    rest = OkxRestClient(venue_config(sim), credentials(), rest_url=sim.rest_url)
    try:
        await rest.load_instruments()
        now = store._clock.now_ms()
        order = Order(client_order_id="ttsentbutunknown01", strategy_id="s1", venue="okx", inst_id=SWAP,
                      side=Side.BUY, type=OrderType.MARKET, size=Decimal(2), created_ms=now, updated_ms=now)
        assert await store.record_order(order)
        await rest.create_order(order)  # the ack is "lost": Redis still says PENDING_NEW
        async with running(sim, store, control):
            await eventually(lambda: _untracked(store, {order.client_order_id}), what="untracked")
            stored = await store.get_order(order.client_order_id)
            assert stored.state is OrderState.FILLED and stored.venue_order_id
            assert await store.applied_size(order.client_order_id) == Decimal(2)
            assert await redis_positions(store) == venue_positions(sim) == {SWAP: Decimal(2)}
    finally:
        await rest.close()


# -- drift -----------------------------------------------------------------------------------------------


async def test_position_drift_is_confirmed_alerted_and_pauses_the_venue(sim, store, control):
    alerts = AlertRecorder()
    async with running(sim, store, control, alerts=alerts) as reconciler:
        await eventually(lambda: _probe(reconciler, "no_drift", ok=True), what="no drift at first")
        # Redis believes in a position the venue does not have (a fill that never happened there).
        phantom = Fill(venue="okx", inst_id=SWAP, trade_id="phantom-1", side=Side.BUY, price=Decimal(60000),
                       size=Decimal(1), ts_ms=store._clock.now_ms(), layer=FillLayer.WS)
        instrument = reconciler.ctx.instruments[SWAP]
        await store.apply_fill(phantom, instrument)
        await eventually(lambda: _paused(control), what="venue paused on drift")
        assert f"drift:{SWAP}" in await control.discrepancies("okx")
        assert f"okx:drift:{SWAP}" in alerts.keys()
        assert reconciler.ctx.detector.drifting == (SWAP,)
        report = await reconciler.check_health()
        assert [p.name for p in report.failing()] == ["no_drift"]


# -- reconcile_now and lifecycle ---------------------------------------------------------------------------


async def test_reconcile_now_applies_and_untracks_and_reports(sim, store, control):
    slow = FAST.model_copy(update={"poll_interval_secs": 600.0, "drift_interval_secs": 600.0})
    rest = OkxRestClient(venue_config(sim), credentials(), rest_url=sim.rest_url)
    try:
        await rest.load_instruments()
        async with running(sim, store, control, config=slow) as reconciler:
            await eventually(lambda: reconciler.ctx.last_poll is not None and reconciler.ctx.last_drift is not None,
                             what="first cycles")
            now = store._clock.now_ms()
            order = Order(client_order_id="ttreconcilenow0001", strategy_id="s1", venue="okx", inst_id=SWAP,
                          side=Side.SELL, type=OrderType.MARKET, size=Decimal(2), created_ms=now, updated_ms=now)
            assert await store.record_order(order)
            await rest.create_order(order)
            report = await reconciler.reconcile_now()
            assert report.ok and report.venue == "okx"
            assert report.poll.fills_applied == len(venue_trade_ids(sim, {order.client_order_id})) >= 1
            assert report.poll.untracked == (order.client_order_id,)
            assert report.drift.instruments[SWAP]["venue"] == report.drift.instruments[SWAP]["redis"] == "-2"
            assert await redis_positions(store) == {SWAP: Decimal(-2)}
            again = await reconciler.reconcile_now()
            assert again.poll.fills_applied == 0 and again.poll.untracked == ()
            stats = reconciler.stats()
            assert stats["counters"]["poll_cycles_ok"] >= 3 and stats["last_poll"]["ok"]
    finally:
        await rest.close()


async def test_heartbeat_and_stop(sim, store, control):
    async with running(sim, store, control) as reconciler:
        assert reconciler.state is ComponentState.RUNNING
        await eventually(lambda: _has_heartbeat(store), what="heartbeat")
        with pytest.raises(RuntimeError):
            await reconciler.start()
    assert reconciler.state is ComponentState.STOPPED
    report = await reconciler.check_health()
    assert not report.healthy and report.probes[0].name == "running"
    await reconciler.stop()  # idempotent


async def _has_heartbeat(store) -> bool:
    return "reconciler:okx" in await store.heartbeats()
